package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// KafkaSecure is the secured Kafka broker that scripts/services.sh up
// --secure starts (or an external one named by KAFKA_SASL_BROKERS,
// KAFKA_MTLS_BROKERS, KAFKA_OAUTH_BROKERS, KAFKA_SECURE_ADMIN_BROKERS and
// KAFKA_SECURE_DIR, a directory laid out as the script's). Its listeners
// verify the server certificate against CA(); the principal of each is
// User:<user>.
type KafkaSecure struct {
	SASLBrokers  string // SASL_SSL: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
	MTLSBrokers  string // SSL with a required client certificate (CN=<user>)
	OAuthBrokers string // SASL_SSL: OAUTHBEARER only, unsecured JWTs (sub=<user>)
	AdminBrokers string // PLAINTEXT; its principal, ANONYMOUS, is a super user
	Dir          string // certificates, keys, passwords and tokens
}

// The users of the secured broker, as scripts/services.sh makes them.
const (
	KafkaAdmin   = "xmirror-admin" // a super user
	KafkaUserR2K = "xmirror-r2k"   // exactly what redis-to-kafka needs, on topics SecureTopicPrefix*
	KafkaUserK2R = "xmirror-k2r"   // exactly what kafka-to-redis needs, on topics SecureTopicPrefix*
)

// SecureTopicPrefix starts the names of the topics the least-privilege
// users' ACLs cover (see KafkaSecure.Topic).
const SecureTopicPrefix = "sec-"

// A Mechanism is how a client of the secured broker authenticates, and so
// which listener it talks to.
type Mechanism string

const (
	MechPlain       Mechanism = "PLAIN"         // SASLBrokers, the user's password
	MechScramSHA256 Mechanism = "SCRAM-SHA-256" // SASLBrokers, the user's password
	MechScramSHA512 Mechanism = "SCRAM-SHA-512" // SASLBrokers, the user's password
	MechOAuthBearer Mechanism = "OAUTHBEARER"   // OAuthBrokers, the user's token
	MechMTLS        Mechanism = "MTLS"          // MTLSBrokers, the user's client certificate
)

// Mechanisms lists every Mechanism, for tests that run through each.
var Mechanisms = []Mechanism{MechPlain, MechScramSHA256, MechScramSHA512, MechOAuthBearer, MechMTLS}

// SecureKafka returns the secured broker, having checked that its
// PLAINTEXT admin listener answers; a missing broker skips the test, or
// fails it under CI=true.
func SecureKafka(tb testing.TB) KafkaSecure {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped with -short")
	}
	k := KafkaSecure{
		SASLBrokers:  envOr("KAFKA_SASL_BROKERS", "127.0.0.1:9094"),
		MTLSBrokers:  envOr("KAFKA_MTLS_BROKERS", "127.0.0.1:9095"),
		OAuthBrokers: envOr("KAFKA_OAUTH_BROKERS", "127.0.0.1:9096"),
		AdminBrokers: envOr("KAFKA_SECURE_ADMIN_BROKERS", "127.0.0.1:9097"),
		Dir:          os.Getenv("KAFKA_SECURE_DIR"),
	}
	if k.Dir == "" {
		k.Dir = defaultSecureKafkaDir()
	}
	err := k.ping()
	if err == nil {
		_, err = os.Stat(k.CA())
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("the secured Kafka at %s is required under CI=true but unreachable: %v (start it with scripts/services.sh up --secure)", k.AdminBrokers, err)
		}
		tb.Skipf("the secured Kafka at %s is unreachable (%v); start it with scripts/services.sh up --secure", k.AdminBrokers, err)
	}
	return k
}

func (k KafkaSecure) ping() error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(k.AdminBrokers, ",")...), kgo.DialTimeout(3*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

// defaultSecureKafkaDir is where scripts/services.sh keeps the secured
// broker's material for this checkout.
func defaultSecureKafkaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", ".local", "services", "kafka-secure")
}

// CA is the PEM file of the CA of the server's and the users' certificates.
func (k KafkaSecure) CA() string { return filepath.Join(k.Dir, "ca.crt") }

// OtherCA is a CA that signed neither the server's certificate nor the
// users': a client that trusts only it meets an unknown authority.
func (k KafkaSecure) OtherCA() string { return filepath.Join(k.Dir, "other-ca.crt") }

// Cert and Key are the PEM files of user's client certificate (subject
// CN=<user>) and key.
func (k KafkaSecure) Cert(user string) string { return filepath.Join(k.Dir, user+".crt") }
func (k KafkaSecure) Key(user string) string  { return filepath.Join(k.Dir, user+".key") }

// ExpiredCert and ExpiredKey are a client certificate of KafkaUserR2K
// signed by CA() that has expired.
func (k KafkaSecure) ExpiredCert() string { return filepath.Join(k.Dir, "expired.crt") }
func (k KafkaSecure) ExpiredKey() string  { return filepath.Join(k.Dir, "expired.key") }

// UntrustedCert and UntrustedKey are a client certificate of KafkaUserR2K
// signed by OtherCA(), which the broker does not trust.
func (k KafkaSecure) UntrustedCert() string { return filepath.Join(k.Dir, "untrusted.crt") }
func (k KafkaSecure) UntrustedKey() string  { return filepath.Join(k.Dir, "untrusted.key") }

// PasswordFile is the file holding user's password (PLAIN and SCRAM).
func (k KafkaSecure) PasswordFile(user string) string {
	return filepath.Join(k.Dir, user+".password")
}

// Password is user's password.
func (k KafkaSecure) Password(tb testing.TB, user string) string {
	tb.Helper()
	return readSecret(tb, "password of "+user, k.PasswordFile(user))
}

// TokenFile is the file holding user's OAUTHBEARER token, an unsecured JWT
// (see UnsecuredJWT) valid for years.
func (k KafkaSecure) TokenFile(user string) string { return filepath.Join(k.Dir, user+".token") }

// Token is user's OAUTHBEARER token.
func (k KafkaSecure) Token(tb testing.TB, user string) string {
	tb.Helper()
	return readSecret(tb, "token of "+user, k.TokenFile(user))
}

func readSecret(tb testing.TB, what, file string) string {
	tb.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
	return strings.TrimSpace(string(b))
}

// UnsecuredJWT is a token the OAUTHBEARER listener takes for principal sub
// until exp (Kafka's validator of unsecured JWTs: "alg":"none", an empty
// signature, exp required), e.g. an expired one for a test.
func UnsecuredJWT(sub string, exp time.Time) string {
	enc := base64.RawURLEncoding
	claims, _ := json.Marshal(map[string]any{"sub": sub, "iat": time.Now().Unix(), "exp": exp.Unix()})
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(claims) + "."
}

// TLSConfig trusts CA(); with a user it also presents that user's client
// certificate.
func (k KafkaSecure) TLSConfig(tb testing.TB, user string) *tls.Config {
	tb.Helper()
	ca, err := os.ReadFile(k.CA())
	if err != nil {
		tb.Fatalf("CA of the secured Kafka: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		tb.Fatalf("no certificate in %s", k.CA())
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if user != "" {
		pair, err := tls.LoadX509KeyPair(k.Cert(user), k.Key(user))
		if err != nil {
			tb.Fatalf("client certificate of %s: %v", user, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// ClientOpts are the options of a plain franz-go client of user through
// mech: the listener's seed brokers, TLS and the SASL mechanism with user's
// password, token or certificate. They share no code with xmirror.
func (k KafkaSecure) ClientOpts(tb testing.TB, mech Mechanism, user string) []kgo.Opt {
	tb.Helper()
	seeds := func(b string) kgo.Opt { return kgo.SeedBrokers(strings.Split(b, ",")...) }
	opts := []kgo.Opt{kgo.DialTimeout(3 * time.Second)}
	switch mech {
	case MechPlain:
		opts = append(opts, seeds(k.SASLBrokers), kgo.DialTLSConfig(k.TLSConfig(tb, "")),
			kgo.SASL(plain.Auth{User: user, Pass: k.Password(tb, user)}.AsMechanism()))
	case MechScramSHA256:
		opts = append(opts, seeds(k.SASLBrokers), kgo.DialTLSConfig(k.TLSConfig(tb, "")),
			kgo.SASL(scram.Auth{User: user, Pass: k.Password(tb, user)}.AsSha256Mechanism()))
	case MechScramSHA512:
		opts = append(opts, seeds(k.SASLBrokers), kgo.DialTLSConfig(k.TLSConfig(tb, "")),
			kgo.SASL(scram.Auth{User: user, Pass: k.Password(tb, user)}.AsSha512Mechanism()))
	case MechOAuthBearer:
		opts = append(opts, seeds(k.OAuthBrokers), kgo.DialTLSConfig(k.TLSConfig(tb, "")),
			kgo.SASL(oauth.Auth{Token: k.Token(tb, user)}.AsMechanism()))
	case MechMTLS:
		opts = append(opts, seeds(k.MTLSBrokers), kgo.DialTLSConfig(k.TLSConfig(tb, user)))
	default:
		tb.Fatalf("unknown mechanism %q", mech)
	}
	return opts
}

// Client is a plain franz-go client of user through mech (ClientOpts,
// extra options appended), closed when the test ends. It does not dial
// until used.
func (k KafkaSecure) Client(tb testing.TB, mech Mechanism, user string, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	cl, err := kgo.NewClient(append(k.ClientOpts(tb, mech, user), opts...)...)
	if err != nil {
		tb.Fatalf("client of %s (%s): %v", user, mech, err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// Admin is a plain franz-go client of the PLAINTEXT listener, a super
// user (extra options appended), closed when the test ends.
func (k KafkaSecure) Admin(tb testing.TB, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(strings.Split(k.AdminBrokers, ",")...), kgo.DialTimeout(3 * time.Second)}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		tb.Fatalf("admin client of %s: %v", k.AdminBrokers, err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// Kadm is a kadm client of the PLAINTEXT listener, a super user.
func (k KafkaSecure) Kadm(tb testing.TB) *kadm.Client {
	tb.Helper()
	return kadm.NewClient(k.Admin(tb))
}

// Topic creates a unique topic named SecureTopicPrefix..., which the
// least-privilege users' ACLs cover, with the given partitions; deleted
// when the test ends unless it failed.
func (k KafkaSecure) Topic(tb testing.TB, partitions int32) string {
	tb.Helper()
	return createTopic(tb, k.Admin(tb), Name(tb, strings.TrimSuffix(SecureTopicPrefix, "-")), partitions)
}

// An ACLResource is what an ACL is on: a topic, a transactional ID, a group
// or the cluster, by its literal name or by a prefix.
type ACLResource struct {
	Type     kmsg.ACLResourceType
	Name     string
	Prefixed bool
}

// TopicACL, TransactionalIDACL and GroupACL are the resources named name;
// with a trailing "*" the name is a prefix (TopicACL("sec-*")).
func TopicACL(name string) ACLResource { return aclResource(kmsg.ACLResourceTypeTopic, name) }
func TransactionalIDACL(name string) ACLResource {
	return aclResource(kmsg.ACLResourceTypeTransactionalId, name)
}
func GroupACL(name string) ACLResource { return aclResource(kmsg.ACLResourceTypeGroup, name) }

// ClusterACL is the cluster resource.
func ClusterACL() ACLResource {
	return ACLResource{Type: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster"}
}

func aclResource(t kmsg.ACLResourceType, name string) ACLResource {
	if p, ok := strings.CutSuffix(name, "*"); ok {
		return ACLResource{Type: t, Name: p, Prefixed: true}
	}
	return ACLResource{Type: t, Name: name}
}

func (r ACLResource) String() string {
	s := strings.ToLower(r.Type.String()) + " " + r.Name
	if r.Prefixed {
		s += "*"
	}
	return s
}

// Grant allows user ops on each resource and waits until the broker
// enforces it; revoked when the test ends. Only what Grant added is
// revoked: the script's ACLs on SecureTopicPrefix* stay.
func (k KafkaSecure) Grant(tb testing.TB, user string, ops []kadm.ACLOperation, res ...ACLResource) {
	tb.Helper()
	k.changeACLs(tb, true, false, user, ops, res)
	tb.Cleanup(func() { k.changeACLs(tb, false, false, user, ops, res) })
}

// Deny denies user ops on each resource, which outweighs every allowing
// ACL (a test takes one permission away from a least-privilege user for
// one topic this way), and waits until the broker enforces it; removed when
// the test ends.
func (k KafkaSecure) Deny(tb testing.TB, user string, ops []kadm.ACLOperation, res ...ACLResource) {
	tb.Helper()
	k.changeACLs(tb, true, true, user, ops, res)
	tb.Cleanup(func() { k.changeACLs(tb, false, true, user, ops, res) })
}

// Undeny removes what Deny added before the test ends (a rerun after the
// permission is granted again), and waits until the broker no longer
// lists it.
func (k KafkaSecure) Undeny(tb testing.TB, user string, ops []kadm.ACLOperation, res ...ACLResource) {
	tb.Helper()
	k.changeACLs(tb, false, true, user, ops, res)
}

// Revoke removes the ACLs allowing user ops on each resource, exactly as
// Grant made them, and waits until the broker no longer lists them. The
// script's ACLs are shared by every test running: take a permission away
// from one test's topic with Deny instead.
func (k KafkaSecure) Revoke(tb testing.TB, user string, ops []kadm.ACLOperation, res ...ACLResource) {
	tb.Helper()
	k.changeACLs(tb, false, false, user, ops, res)
}

// changeACLs creates (add) or deletes the ACLs allowing (or with deny,
// denying) user ops on each resource, then waits until the broker's
// authorizer lists them (or no longer does): KRaft applies an ACL
// asynchronously, after CreateACLs has returned.
func (k KafkaSecure) changeACLs(tb testing.TB, add, deny bool, user string, ops []kadm.ACLOperation, res []ACLResource) {
	tb.Helper()
	if len(ops) == 0 || len(res) == 0 {
		tb.Fatalf("ACLs of %s: no operation or no resource", user)
	}
	// Its own client, closed here: this also runs in a test's cleanup.
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(k.AdminBrokers, ",")...), kgo.DialTimeout(3*time.Second))
	if err != nil {
		tb.Fatalf("admin client of %s: %v", k.AdminBrokers, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kind, verb := "allowing", "create"
	if deny {
		kind = "denying"
	}
	if !add {
		verb = "delete"
	}
	what := fmt.Sprintf("%s %v to User:%s on %v", kind, ops, user, res)
	for _, r := range res {
		b := aclBuilder(r, deny, user, ops)
		var err error
		if add {
			var rs kadm.CreateACLsResults
			if rs, err = adm.CreateACLs(ctx, b); err == nil {
				for _, x := range rs {
					if x.Err != nil {
						err = x.Err
					}
				}
			}
		} else {
			var rs kadm.DeleteACLsResults
			if rs, err = adm.DeleteACLs(ctx, hostsFilter(b, deny)); err == nil {
				for _, x := range rs {
					if x.Err != nil {
						err = x.Err
					}
				}
			}
		}
		if err != nil {
			tb.Fatalf("%s the ACLs %s: %v", verb, what, err)
		}
	}
	Wait(tb, 20*time.Second, "the broker to apply the ACLs "+what, func() bool {
		for _, r := range res {
			rs, err := adm.DescribeACLs(ctx, hostsFilter(aclBuilder(r, deny, user, ops), deny))
			if err != nil {
				return false
			}
			n := 0
			for _, x := range rs {
				if x.Err != nil {
					return false
				}
				n += len(x.Described)
			}
			if add && n < len(ops) || !add && n > 0 {
				return false
			}
		}
		return true
	})
}

func aclBuilder(r ACLResource, deny bool, user string, ops []kadm.ACLOperation) *kadm.ACLBuilder {
	b := kadm.NewACLs().Operations(ops...)
	if deny {
		b.Deny("User:" + user)
	} else {
		b.Allow("User:" + user)
	}
	switch r.Type {
	case kmsg.ACLResourceTypeTopic:
		b.Topics(r.Name)
	case kmsg.ACLResourceTypeTransactionalId:
		b.TransactionalIDs(r.Name)
	case kmsg.ACLResourceTypeGroup:
		b.Groups(r.Name)
	case kmsg.ACLResourceTypeCluster:
		b.Clusters()
	}
	if r.Prefixed {
		b.ResourcePatternType(kadm.ACLPatternPrefixed)
	}
	return b
}

// hostsFilter makes a creating builder a filter of the same ACLs (a filter
// must name its hosts; every ACL here is for all hosts).
func hostsFilter(b *kadm.ACLBuilder, deny bool) *kadm.ACLBuilder {
	if deny {
		return b.DenyHosts("*")
	}
	return b.AllowHosts("*")
}
