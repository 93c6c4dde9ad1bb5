package endpoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/xmirror/xmirror/mirror/setting"
)

// DefaultBrokers is where a local single-node Kafka listens out of the box.
const DefaultBrokers = "127.0.0.1:9092"

// defaultKafkaPort is assumed for a broker given without a port, as kcat does.
const defaultKafkaPort = "9092"

// Kafka is a parsed broker list with its TLS and SASL settings.
type Kafka struct {
	Brokers []string
	// NewHooks, when set, gives the hooks of each client built from
	// ClientOpts: called once per client, since a hook may keep state of
	// its one client (franz-go's kprom metrics do).
	NewHooks func() []kgo.Hook

	// tlsConfig is nil for plaintext.
	tlsConfig *tls.Config
	// mechanism is the SASL mechanism's name, "" without SASL; user the
	// SASL user (none for OAUTHBEARER).
	mechanism string
	user      string
	sasl      sasl.Mechanism
	// subject is the OAUTHBEARER token's subject when it could be read,
	// for messages.
	subject string
}

// SASL mechanisms xmirror speaks, by the names Kafka gives them.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
	SASLOAuthBearer = "OAUTHBEARER"
)

// SASLMechanisms lists the mechanisms KafkaOptions.SASLMechanism takes.
var SASLMechanisms = []string{SASLPlain, SASLScramSHA256, SASLScramSHA512, SASLOAuthBearer}

// KafkaOptions are the TLS and SASL settings given beside a broker list.
// Each one names the field its messages name it by.
type KafkaOptions struct {
	// TLS connects with TLS, verified against the system's roots unless
	// CAFile is given ({KafkaTLS}); any other TLS setting implies it.
	TLS bool
	// CAFile holds the PEM certificates of the CAs that sign the brokers'
	// certificates ({KafkaCA}).
	CAFile string
	// CertFile and KeyFile are the client's certificate and key, for
	// brokers that verify clients (mutual TLS; {KafkaCert}, {KafkaKey}).
	CertFile, KeyFile string
	// ServerName is the name the brokers' certificates must hold, when it
	// is not the host dialled ({KafkaTLSServerName}).
	ServerName string
	// Insecure skips the verification of the brokers' certificates: for
	// tests only ({KafkaTLSInsecure}).
	Insecure bool

	// SASLMechanism is one of SASLMechanisms, in any case; "" for no SASL
	// ({KafkaSASLMechanism}).
	SASLMechanism string
	// User and Password authenticate PLAIN and SCRAM ({KafkaUser}).
	User, Password string
	// PasswordFile holds the password on its first line, in place of
	// Password; it is read again when it changed, so a rotated password
	// is picked up by the next authentication ({KafkaPasswordFile}).
	PasswordFile string
	// Token is an OAUTHBEARER token; TokenFile holds one, in place of
	// Token, and is read again when it changed, so a refreshed token is
	// picked up by the next authentication ({KafkaToken},
	// {KafkaTokenFile}).
	Token, TokenFile string
}

func (o KafkaOptions) tlsFiles() tlsFiles {
	return tlsFiles{CAFile: o.CAFile, CertFile: o.CertFile, KeyFile: o.KeyFile, ServerName: o.ServerName, Insecure: o.Insecure}
}

// ParseKafka parses a broker list as ParseBrokers does and applies o. The
// files are read now, so a wrong path or an empty file is an error here.
func ParseKafka(list string, o KafkaOptions) (Kafka, error) {
	k, err := ParseBrokers(list)
	if err != nil {
		return k, err
	}
	if err := k.apply(o); err != nil {
		return Kafka{}, fmt.Errorf("kafka %s: %w", k, err)
	}
	return k, nil
}

func (k *Kafka) apply(o KafkaOptions) error {
	files := o.tlsFiles()
	if o.TLS || len(files.given(kafkaTLSFields)) > 0 {
		cfg, err := files.config(nil, kafkaTLSFields)
		if err != nil {
			return err
		}
		k.tlsConfig = cfg
	}
	mech := strings.ToUpper(strings.TrimSpace(o.SASLMechanism))
	switch mech {
	case "":
		for _, s := range []struct {
			set   bool
			field string
		}{{o.User != "", "KafkaUser"}, {o.Password != "", "KafkaPassword"}, {o.PasswordFile != "", "KafkaPasswordFile"},
			{o.Token != "", "KafkaToken"}, {o.TokenFile != "", "KafkaTokenFile"}} {
			if s.set {
				return setting.Errorf("{"+s.field+"} needs a SASL mechanism; set {KafkaSASLMechanism} to one of %s", strings.Join(SASLMechanisms, ", "))
			}
		}
		return nil
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if o.Token != "" || o.TokenFile != "" {
			return setting.Errorf("a token is for OAUTHBEARER; %s takes {KafkaUser} and a password", mech)
		}
		if o.User == "" {
			return setting.Errorf("%s needs a user; give {KafkaUser}", mech)
		}
		password, err := secret(o.Password, o.PasswordFile, "KafkaPasswordFile", "password")
		if err != nil {
			return err
		}
		if password == nil {
			return setting.Errorf("%s needs a password; give it in {KafkaPasswordFile} or the environment", mech)
		}
		user := o.User
		k.user = user
		switch mech {
		case SASLPlain:
			k.sasl = plain.Plain(func(ctx context.Context) (plain.Auth, error) {
				return plain.Auth{User: user, Pass: password()}, nil
			})
		case SASLScramSHA256:
			k.sasl = scram.Sha256(func(ctx context.Context) (scram.Auth, error) {
				return scram.Auth{User: user, Pass: password()}, nil
			})
		default:
			k.sasl = scram.Sha512(func(ctx context.Context) (scram.Auth, error) {
				return scram.Auth{User: user, Pass: password()}, nil
			})
		}
	case SASLOAuthBearer:
		if o.User != "" || o.Password != "" || o.PasswordFile != "" {
			return setting.Errorf("OAUTHBEARER takes a token ({KafkaTokenFile} or the environment), not {KafkaUser} or a password")
		}
		token, err := secret(o.Token, o.TokenFile, "KafkaTokenFile", "token")
		if err != nil {
			return err
		}
		if token == nil {
			return setting.Errorf("OAUTHBEARER needs a token; give it in {KafkaTokenFile} or the environment")
		}
		k.subject = tokenSubject(token())
		k.sasl = oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
			return oauth.Auth{Token: token()}, nil
		})
	default:
		return setting.Errorf("{KafkaSASLMechanism} %q is not one xmirror speaks; use %s", o.SASLMechanism, strings.Join(SASLMechanisms, ", "))
	}
	k.mechanism = mech
	return nil
}

// secret returns a function giving the secret: value when set, else the
// first line of file, read now (so a wrong path fails at once) and again
// when it changed (see secretFile). The file wins over the value (a
// variable in the environment). Nil when neither is given.
func secret(value, file, field, noun string) (func() string, error) {
	if file != "" {
		f, err := newSecretFile(file, field, noun)
		if err != nil {
			return nil, err
		}
		return f.get, nil
	}
	if value != "" {
		return func() string { return value }, nil
	}
	return nil, nil
}

// TLS says whether the brokers are reached with TLS.
func (k Kafka) TLS() bool { return k.tlsConfig != nil }

// Insecure says whether the brokers' certificates go unverified.
func (k Kafka) Insecure() bool { return k.TLS() && k.tlsConfig.InsecureSkipVerify }

// TLSConfig is the TLS configuration (nil without TLS), for reports.
func (k Kafka) TLSConfig() *tls.Config { return k.tlsConfig }

// SASLMechanism is the SASL mechanism, "" without SASL.
func (k Kafka) SASLMechanism() string { return k.mechanism }

// User is the SASL user, "" without SASL or with OAUTHBEARER.
func (k Kafka) User() string { return k.user }

// Principal is the name Kafka's ACLs most likely know this client by: the
// SASL user, the OAUTHBEARER token's subject, the client certificate's
// subject (as the broker's default ssl.principal.mapping.rules gives it;
// a broker may map it to another name), or ANONYMOUS.
func (k Kafka) Principal() string {
	switch {
	case k.user != "":
		return "User:" + k.user
	case k.subject != "":
		return "User:" + k.subject
	case k.mechanism == SASLOAuthBearer:
		return "User:<the token's subject>"
	case k.TLS() && len(k.tlsConfig.Certificates) > 0:
		if leaf, err := x509.ParseCertificate(k.tlsConfig.Certificates[0].Certificate[0]); err == nil {
			return "User:" + leaf.Subject.String()
		}
		return "User:<the client certificate's subject>"
	}
	return "User:ANONYMOUS"
}

// PrincipalNote is "" when Principal is the name brokers know the client
// by (a SASL user, a token's subject), else what to check before granting
// to it.
func (k Kafka) PrincipalNote() string {
	if k.user != "" || k.subject != "" || !k.TLS() || len(k.tlsConfig.Certificates) == 0 {
		return ""
	}
	return "the client certificate's subject, as Kafka's default ssl.principal.mapping.rules name it; brokers with rules of their own know it by the name those give"
}

// tokenSubject is the "sub" claim of a JWT, read for messages only (the
// broker verifies the token); "" when token is not a readable JWT.
func tokenSubject(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) < 2 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return claims.Sub
}

// ParseBrokers parses a comma-separated list of host[:port].
func ParseBrokers(list string) (Kafka, error) {
	if strings.Contains(list, "@") {
		// A broker is no URL, but a user may paste credentials into
		// one (which may hold a comma): never show them.
		return Kafka{}, setting.Errorf("broker list %q: give host:port, without a user or password (give those with {KafkaUser} and {KafkaPasswordFile} or the environment)", maskCredentials(list))
	}
	var brokers []string
	for _, b := range strings.Split(list, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if strings.Contains(b, "://") {
			return Kafka{}, fmt.Errorf("broker %q: give host:port without a scheme", b)
		}
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			// No port: take the default, as kcat and the Kafka tools do.
			host, port = b, defaultKafkaPort
			if inner, ok := strings.CutPrefix(b, "["); ok {
				// An IPv6 address in brackets, such as [::1].
				if host, ok = strings.CutSuffix(inner, "]"); !ok {
					return Kafka{}, fmt.Errorf("broker %q is not host:port", b)
				}
			} else if strings.Contains(b, ":") {
				return Kafka{}, fmt.Errorf("broker %q is not host:port", b)
			}
		}
		if strings.ContainsAny(host, "[]") || strings.ContainsFunc(host, unicode.IsSpace) {
			return Kafka{}, fmt.Errorf("broker %q: the host %q is not a host name or address", b, host)
		}
		if host == "" {
			return Kafka{}, fmt.Errorf("broker %q has no host", b)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Kafka{}, fmt.Errorf("broker %q: port must be a number from 1 to 65535", b)
		}
		brokers = append(brokers, net.JoinHostPort(host, port))
	}
	if len(brokers) == 0 {
		return Kafka{}, errors.New("broker list is empty; give host:port[,host:port...]")
	}
	return Kafka{Brokers: brokers}, nil
}

// String is the broker list as given to the client.
func (k Kafka) String() string { return strings.Join(k.Brokers, ",") }

// ClientOpts are the options every xmirror Kafka client starts from: the
// seed brokers and time bounds so an unreachable cluster fails instead of
// hanging.
func (k Kafka) ClientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(k.Brokers...),
		kgo.DialTimeout(DefaultDialTimeout),
		kgo.ClientID("xmirror"),
		// A topic xmirror just created must be usable at once; franz-go
		// otherwise waits up to 5s before it refreshes its metadata.
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	if k.tlsConfig != nil {
		// franz-go dials each broker with a copy whose ServerName is the
		// broker's host, unless the copy names one.
		opts = append(opts, kgo.DialTLSConfig(k.tlsConfig.Clone()))
	}
	if k.sasl != nil {
		opts = append(opts, kgo.SASL(k.sasl))
	}
	if k.NewHooks != nil {
		if hooks := k.NewHooks(); len(hooks) > 0 {
			opts = append(opts, kgo.WithHooks(hooks...))
		}
	}
	return opts
}

// Connect builds a client and checks a broker answers within timeout.
func (k Kafka) Connect(ctx context.Context, timeout time.Duration, opts ...kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append(k.ClientOpts(), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", k, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, k.Explain(err)
	}
	return cl, nil
}

// Explain turns a client error into a one-line message naming the brokers,
// with a hint where the cause is recognisable.
func (k Kafka) Explain(err error) error {
	if hint := k.hint(err); hint != "" {
		// The hint is the format: it may name a setting ({Kafka}); any
		// other text in it is escaped.
		return setting.Errorf("kafka %s: "+hint+" (%w)", k, err)
	}
	return fmt.Errorf("kafka %s: %w", k, err)
}

// hint says what to do about err, in a format that names settings as
// {Field} and holds no other verb, or "".
func (k Kafka) hint(err error) string {
	if errors.As(err, new(*DeniedError)) {
		// It says what to grant.
		return ""
	}
	esc := func(s string) string { return strings.ReplaceAll(s, "%", "%%") }
	if k.TLS() {
		if h := tlsHint(err, kafkaTLSFields, len(k.tlsConfig.Certificates) > 0); h != "" {
			return esc(h)
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused"):
		return "connection refused; is the broker running there?"
	case strings.Contains(msg, "no such host"):
		return "unknown host; check {Kafka}"
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		if k.mechanism == SASLOAuthBearer {
			return "authentication refused: the broker did not accept the OAUTHBEARER token ({KafkaTokenFile} or the environment); is it valid, unexpired, and for this cluster?"
		}
		return esc(fmt.Sprintf("authentication refused for user %q with %s: wrong password, or no such user for this mechanism; check {KafkaUser} and the password ({KafkaPasswordFile} or the environment)", k.user, k.mechanism))
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return esc(fmt.Sprintf("the broker does not enable SASL %s on this listener; use a mechanism it enables ({KafkaSASLMechanism}) or another listener", k.mechanism))
	case errors.Is(err, kerr.IllegalSaslState):
		return "the broker refused the SASL exchange; does this listener expect SASL ({KafkaSASLMechanism})?"
	case errors.As(err, new(*kgo.ErrFirstReadEOF)), strings.Contains(msg, "EOF"), strings.Contains(msg, "connection reset"),
		strings.Contains(msg, "broker closed the connection"):
		switch {
		case !k.TLS() && k.sasl == nil:
			return "the broker closed the connection at once; is it a Kafka broker, and does this listener expect TLS ({KafkaTLS}) or SASL ({KafkaSASLMechanism})?"
		case !k.TLS():
			return "the broker closed the connection at once; does this listener expect TLS ({KafkaTLS})?"
		case strings.Contains(msg, "using TLS when the broker is not expecting it"), strings.Contains(msg, "is TLS misconfigured"):
			// franz-go's guess when the broker hangs up on the first TLS
			// bytes: a plaintext (or SASL_PLAINTEXT) listener.
			return "the broker closed the connection as the TLS handshake began, as a plaintext listener does; " + kafkaTLSFields.Plain + ", or use the broker's TLS listener"
		case len(k.tlsConfig.Certificates) == 0:
			return "the broker closed the connection during or right after the TLS handshake; a listener that requires a client certificate does that: give one with {KafkaCert} and {KafkaKey}; or does it expect SASL ({KafkaSASLMechanism})?"
		case k.sasl == nil:
			return "the broker closed the connection right after the TLS handshake; does it accept this client certificate, and does this listener expect SASL ({KafkaSASLMechanism})?"
		}
		return "the broker closed the connection at once; is it a Kafka broker, and does this listener take TLS with SASL?"
	case errors.Is(err, kerr.UnknownTopicID):
		return "a topic was deleted and created again meanwhile (its topic ID changed); run again"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "i/o timeout"):
		if k.TLS() {
			return "no answer in time; a plaintext listener never answers a TLS handshake: does this one speak TLS, and is the broker reachable from here?"
		}
		return "no answer in time; is it a Kafka broker, reachable from here, and a plaintext listener (else {KafkaTLS})?"
	case strings.Contains(msg, "invalid large response size"), strings.Contains(msg, "response"):
		if !k.TLS() {
			return "the server did not answer like Kafka; is the port right, or does this listener expect TLS ({KafkaTLS})?"
		}
		return "the server did not answer like Kafka; is the port right?"
	}
	return ""
}
