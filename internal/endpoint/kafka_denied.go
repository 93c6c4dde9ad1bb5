package endpoint

import (
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
)

// DeniedError is Kafka's authorizer refusing an operation: which one, on
// what, for whom, and the kafka-acls.sh line that grants it.
type DeniedError struct {
	// Operation is the ACL operation as kafka-acls.sh names it: Read,
	// Write, Describe, Create, DescribeConfigs, IdempotentWrite.
	Operation string
	// Resource is one of the ACL* resources; Name its name ("" for the
	// cluster).
	Resource, Name string
	Principal      string
	// PrincipalNote, when set, says the principal is a guess (see
	// Kafka.PrincipalNote).
	PrincipalNote string
	// Secured says the brokers take TLS or SASL, so kafka-acls.sh needs an
	// admin's client settings too.
	Secured bool
	Brokers string
	Err     error
}

func (e *DeniedError) Error() string {
	what := e.Resource
	if e.Name != "" {
		what += fmt.Sprintf(" %q", e.Name)
	}
	who := e.Principal
	if e.PrincipalNote != "" {
		who += " (" + e.PrincipalNote + ")"
	}
	return fmt.Sprintf("%s may not %s on %s (%v); grant it: %s", who, e.Operation, what, e.Err, e.Grant())
}

func (e *DeniedError) Unwrap() error { return e.Err }

// Grant is the kafka-acls.sh command that allows the operation.
func (e *DeniedError) Grant() string {
	return GrantCommand(e.Brokers, e.Secured, e.Principal, e.Operation, e.Resource, e.Name)
}

// GrantCommand is the kafka-acls.sh command that allows principal
// (User:...) operation on resource (a Kafka* resource) name; with secured
// brokers it takes an admin's client settings (--command-config).
func GrantCommand(brokers string, secured bool, principal, operation, resource, name string) string {
	target := "--cluster"
	if resource != KafkaCluster {
		target = "--" + resource + " " + shellQuote(name)
	}
	admin := ""
	if secured {
		admin = " --command-config <admin.properties>"
	}
	return fmt.Sprintf("kafka-acls.sh --bootstrap-server %s%s --add --allow-principal %s --operation %s %s",
		brokers, admin, shellQuote(principal), operation, target)
}

// IsDenied says whether err is a refusal by Kafka's authorizer.
func IsDenied(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed)
}

// Denied is err as a *DeniedError naming operation on resource name when
// err is a refusal by Kafka's authorizer (and not one already), else err
// itself.
func (k Kafka) Denied(err error, operation, resource, name string) error {
	if err == nil || !IsDenied(err) || errors.As(err, new(*DeniedError)) {
		return err
	}
	return &DeniedError{Operation: operation, Resource: resource, Name: name, Principal: k.Principal(), PrincipalNote: k.PrincipalNote(),
		Secured: k.TLS() || k.sasl != nil, Brokers: k.String(), Err: err}
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/=,@+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
