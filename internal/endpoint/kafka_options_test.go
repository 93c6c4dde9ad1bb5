package endpoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror/setting"
)

// flagNames renders settings as <Field> so a test sees which one a text
// names.
func flagNames(f string) (string, bool) { return "<" + f + ">", true }

func TestParseKafkaOptions(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	pwFile := writeFile(t, dir, "pw", "s3cret-file\n")
	tokenFile := writeFile(t, dir, "token", "tok.en.file\n")
	empty := writeFile(t, dir, "empty", "")
	for _, tc := range []struct {
		name      string
		o         KafkaOptions
		tls       bool
		mechanism string
		user      string
		wantErr   string
	}{
		{name: "plaintext", o: KafkaOptions{}},
		{name: "TLS with the system's roots", o: KafkaOptions{TLS: true}, tls: true},
		{name: "a CA implies TLS", o: KafkaOptions{CAFile: cert}, tls: true},
		{name: "a server name implies TLS", o: KafkaOptions{ServerName: "kafka.internal"}, tls: true},
		{name: "mutual TLS", o: KafkaOptions{CertFile: cert, KeyFile: key}, tls: true},
		{name: "a certificate without its key", o: KafkaOptions{CertFile: cert}, wantErr: "<KafkaCert> needs <KafkaKey>"},
		{name: "a CA file that is not PEM", o: KafkaOptions{CAFile: pwFile}, wantErr: "<KafkaCA> " + pwFile + " holds no PEM certificate"},
		{name: "a missing CA file", o: KafkaOptions{CAFile: filepath.Join(dir, "nope")}, wantErr: "<KafkaCA>: open "},
		{name: "PLAIN", o: KafkaOptions{SASLMechanism: "plain", User: "u", Password: "p"}, mechanism: SASLPlain, user: "u"},
		{name: "SCRAM-SHA-256 with a password file", o: KafkaOptions{SASLMechanism: "SCRAM-SHA-256", User: "u", PasswordFile: pwFile}, mechanism: SASLScramSHA256, user: "u"},
		{name: "SCRAM-SHA-512 over TLS", o: KafkaOptions{TLS: true, SASLMechanism: "scram-sha-512", User: "u", Password: "p"}, tls: true, mechanism: SASLScramSHA512, user: "u"},
		{name: "OAUTHBEARER with a token", o: KafkaOptions{SASLMechanism: "OAUTHBEARER", Token: "t"}, mechanism: SASLOAuthBearer},
		{name: "OAUTHBEARER with a token file", o: KafkaOptions{SASLMechanism: "OAUTHBEARER", TokenFile: tokenFile}, mechanism: SASLOAuthBearer},
		{name: "an unknown mechanism", o: KafkaOptions{SASLMechanism: "GSSAPI", User: "u"}, wantErr: `<KafkaSASLMechanism> "GSSAPI" is not one xmirror speaks; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER`},
		{name: "a user without a mechanism", o: KafkaOptions{User: "u"}, wantErr: "<KafkaUser> needs a SASL mechanism; set <KafkaSASLMechanism>"},
		{name: "a password file without a mechanism", o: KafkaOptions{PasswordFile: pwFile}, wantErr: "<KafkaPasswordFile> needs a SASL mechanism"},
		{name: "a token without a mechanism", o: KafkaOptions{Token: "t"}, wantErr: "<KafkaToken> needs a SASL mechanism"},
		{name: "PLAIN without a user", o: KafkaOptions{SASLMechanism: "PLAIN", Password: "p"}, wantErr: "PLAIN needs a user; give <KafkaUser>"},
		{name: "SCRAM without a password", o: KafkaOptions{SASLMechanism: "SCRAM-SHA-256", User: "u"}, wantErr: "SCRAM-SHA-256 needs a password; give it in <KafkaPasswordFile> or the environment"},
		{name: "SCRAM with a token", o: KafkaOptions{SASLMechanism: "SCRAM-SHA-256", User: "u", Token: "t"}, wantErr: "a token is for OAUTHBEARER"},
		{name: "OAUTHBEARER with a user", o: KafkaOptions{SASLMechanism: "OAUTHBEARER", User: "u", Token: "t"}, wantErr: "OAUTHBEARER takes a token (<KafkaTokenFile> or the environment), not <KafkaUser>"},
		{name: "OAUTHBEARER without a token", o: KafkaOptions{SASLMechanism: "OAUTHBEARER"}, wantErr: "OAUTHBEARER needs a token"},
		{name: "an empty password file", o: KafkaOptions{SASLMechanism: "PLAIN", User: "u", PasswordFile: empty}, wantErr: "<KafkaPasswordFile> " + empty + " is empty"},
		{name: "an empty token file", o: KafkaOptions{SASLMechanism: "OAUTHBEARER", TokenFile: empty}, wantErr: "<KafkaTokenFile> " + empty + " is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKafka("b1:9092,b2", tc.o)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				msg := setting.Render(err, flagNames)
				if !strings.HasPrefix(msg, "kafka b1:9092,b2:9092: ") || !strings.Contains(msg, tc.wantErr) {
					t.Fatalf("got %q\nwant %q after the brokers", msg, tc.wantErr)
				}
				for _, secret := range []string{"s3cret-file", "tok.en.file"} {
					if strings.Contains(msg, secret) {
						t.Fatalf("the error shows a secret: %q", msg)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(setting.Render(err, flagNames))
			}
			if k.TLS() != tc.tls || k.SASLMechanism() != tc.mechanism || k.User() != tc.user {
				t.Fatalf("TLS %v, SASL %q, user %q; want %v, %q, %q", k.TLS(), k.SASLMechanism(), k.User(), tc.tls, tc.mechanism, tc.user)
			}
			if k.TLS() && k.TLSConfig().MinVersion != tls.VersionTLS12 {
				t.Fatalf("TLS minimum version %x", k.TLSConfig().MinVersion)
			}
			if _, err := kgo.NewClient(k.ClientOpts()...); err != nil {
				t.Fatalf("client options: %v", err)
			}
		})
	}
}

// TestKafkaSecretFilesAreReadAtEachLogin: a rotated password or token
// is what the next authentication sends.
func TestKafkaSecretFilesAreReadAtEachLogin(t *testing.T) {
	dir := t.TempDir()
	pwFile, tokenFile := filepath.Join(dir, "pw"), filepath.Join(dir, "token")
	os.WriteFile(pwFile, []byte("first\n"), 0o600)
	os.WriteFile(tokenFile, []byte("token-1\n"), 0o600)
	ctx := context.Background()
	for _, mech := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512, SASLOAuthBearer} {
		o := KafkaOptions{SASLMechanism: mech, User: "u", PasswordFile: pwFile}
		if mech == SASLOAuthBearer {
			o = KafkaOptions{SASLMechanism: mech, TokenFile: tokenFile}
		}
		k, err := ParseKafka("b:9092", o)
		if err != nil {
			t.Fatal(err)
		}
		// The first message a mechanism sends carries the secret (for
		// SCRAM, only the user: the exchange has to run its course).
		secretNow := func() string {
			t.Helper()
			_, msg, err := k.sasl.Authenticate(ctx, "b:9092")
			if err != nil {
				t.Fatal(err)
			}
			return string(msg)
		}
		before := secretNow()
		os.WriteFile(pwFile, []byte("second\n"), 0o600)
		os.WriteFile(tokenFile, []byte("token-2\n"), 0o600)
		// A rotation a moment later: the file's time tells it changed
		// (within one clock tick a rewrite of the same size would not).
		later := time.Now().Add(time.Second)
		os.Chtimes(pwFile, later, later)
		os.Chtimes(tokenFile, later, later)
		after := secretNow()
		switch mech {
		case SASLPlain:
			if !strings.HasSuffix(before, "\x00first") || !strings.HasSuffix(after, "\x00second") {
				t.Errorf("PLAIN sent %q then %q", before, after)
			}
		case SASLOAuthBearer:
			if !strings.Contains(before, "Bearer token-1") || !strings.Contains(after, "Bearer token-2") {
				t.Errorf("OAUTHBEARER sent %q then %q", before, after)
			}
		}
		os.WriteFile(pwFile, []byte("first\n"), 0o600)
		os.WriteFile(tokenFile, []byte("token-1\n"), 0o600)
		// A file gone since (midway through a rotation) keeps the
		// secret last read: the broker says whether it still holds.
		os.Rename(pwFile, pwFile+".gone")
		os.Rename(tokenFile, tokenFile+".gone")
		if got := secretNow(); (mech == SASLPlain || mech == SASLOAuthBearer) && got != after {
			t.Errorf("%s with its file gone sent %q, want %q again", mech, got, after)
		}
		os.Rename(pwFile+".gone", pwFile)
		os.Rename(tokenFile+".gone", tokenFile)
	}
}

// TestExplainKafkaFailures: each way a secured connection fails is told
// apart after the brokers, naming the settings to change, never a secret.
func TestExplainKafkaFailures(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	plainText, _ := ParseKafka("b:9092", KafkaOptions{})
	tlsOnly, _ := ParseKafka("b:9092", KafkaOptions{TLS: true})
	mtls, _ := ParseKafka("b:9092", KafkaOptions{CertFile: cert, KeyFile: key})
	scramTLS, _ := ParseKafka("b:9092", KafkaOptions{TLS: true, SASLMechanism: "SCRAM-SHA-512", User: "alice", Password: "topsecret"})
	bearer, _ := ParseKafka("b:9092", KafkaOptions{TLS: true, SASLMechanism: "OAUTHBEARER", Token: "topsecret"})
	c := &x509.Certificate{DNSNames: []string{"kafka.internal"}}
	for _, tc := range []struct {
		k    Kafka
		err  error
		want string
	}{
		{tlsOnly, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "a CA this host does not trust; give that CA's certificate with <KafkaCA>"},
		{tlsOnly, &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: c, Host: "b"}}, `not for "b" (it holds kafka.internal); connect by a name it holds or set <KafkaTLSServerName>`},
		{tlsOnly, &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: c, Reason: x509.Expired, Detail: "expired at noon"}}, "has expired or is not valid yet (expired at noon)"},
		{tlsOnly, tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "the server does not speak TLS; connect without TLS (leave out <KafkaTLS>"},
		{tlsOnly, fmt.Errorf("read: %w", tls.AlertError(116)), "requires a client certificate; give one with <KafkaCert> and <KafkaKey>"},
		{mtls, errors.New("remote error: tls: unknown certificate authority"), "refused the client certificate (<KafkaCert>)"},
		{mtls, errors.New("remote error: tls: expired certificate"), "refused the client certificate (<KafkaCert>): it has expired"},
		{tlsOnly, errors.New("remote error: tls: bad certificate"), "the server requires a client certificate; give one with <KafkaCert> and <KafkaKey>"},
		{mtls, errors.New("remote error: tls: unknown certificate"), "refused the client certificate (<KafkaCert>): expired, revoked, or not signed by a CA it trusts"},
		{tlsOnly, errors.New("broker closed the connection immediately after a dial, which often happens if the client is using TLS when the broker is not expecting it: is TLS misconfigured on the client or the broker?"), "as a plaintext listener does; connect without TLS (leave out <KafkaTLS>"},
		{plainText, errors.New("invalid large response size 352518912 > limit 104857600"), "does this listener expect TLS (<KafkaTLS>)"},
		{plainText, errors.New("unexpected EOF"), "does this listener expect TLS (<KafkaTLS>) or SASL (<KafkaSASLMechanism>)"},
		{tlsOnly, errors.New("EOF"), "requires a client certificate does that: give one with <KafkaCert> and <KafkaKey>; or does it expect SASL (<KafkaSASLMechanism>)"},
		{scramTLS, kerr.SaslAuthenticationFailed, `authentication refused for user "alice" with SCRAM-SHA-512: wrong password, or no such user for this mechanism; check <KafkaUser> and the password (<KafkaPasswordFile> or the environment)`},
		{scramTLS, kerr.UnsupportedSaslMechanism, "the broker does not enable SASL SCRAM-SHA-512 on this listener; use a mechanism it enables (<KafkaSASLMechanism>)"},
		{bearer, kerr.SaslAuthenticationFailed, "did not accept the OAUTHBEARER token (<KafkaTokenFile> or the environment)"},
		{plainText, errors.New("dial tcp 127.0.0.1:9: connect: connection refused"), "connection refused; is the broker running there?"},
	} {
		msg := setting.Render(tc.k.Explain(tc.err), flagNames)
		if !strings.HasPrefix(msg, "kafka b:9092: ") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "topsecret") {
			t.Errorf("%v:\n got %q\nwant %q after the brokers", tc.err, msg, tc.want)
		}
	}
}

// TestKafkaPrincipal: the name a grant hint gives the client, from its
// SASL user, its token's subject or its certificate's subject.
func TestKafkaPrincipal(t *testing.T) {
	cert, key := writeCert(t, t.TempDir())
	jwt := "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"svc-mirror","exp":1}`)) + "."
	for _, tc := range []struct {
		o    KafkaOptions
		want string
	}{
		{KafkaOptions{}, "User:ANONYMOUS"},
		{KafkaOptions{SASLMechanism: "SCRAM-SHA-256", User: "alice", Password: "p"}, "User:alice"},
		{KafkaOptions{SASLMechanism: "OAUTHBEARER", Token: jwt}, "User:svc-mirror"},
		{KafkaOptions{SASLMechanism: "OAUTHBEARER", Token: "opaque"}, "User:<the token's subject>"},
		{KafkaOptions{CertFile: cert, KeyFile: key}, "User:CN=test"},
	} {
		k, err := ParseKafka("b:9092", tc.o)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.Principal(); got != tc.want {
			t.Errorf("%+v: principal %q, want %q", tc.o, got, tc.want)
		}
	}
}

// TestKafkaDenied: a refusal by the authorizer names the operation, the
// resource and the principal, with the kafka-acls.sh line to grant it;
// other errors pass unchanged.
func TestKafkaDenied(t *testing.T) {
	k, err := ParseKafka("b1:9092,b2:9092", KafkaOptions{TLS: true, SASLMechanism: "SCRAM-SHA-512", User: "xmirror-r2k", Password: "topsecret"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err                error
		op, resource, name string
		want               string
	}{
		{fmt.Errorf("produce: %w", kerr.TopicAuthorizationFailed), "Write", KafkaTopic, "orders",
			`User:xmirror-r2k may not Write on topic "orders" (produce: TOPIC_AUTHORIZATION_FAILED: Not authorized to access topics: [Topic authorization failed.]); grant it: kafka-acls.sh --bootstrap-server b1:9092,b2:9092 --command-config <admin.properties> --add --allow-principal User:xmirror-r2k --operation Write --topic orders`},
		{kerr.TransactionalIDAuthorizationFailed, "Write", KafkaTransactionalID, "xmirror-r2k:my mirror",
			`--operation Write --transactional-id 'xmirror-r2k:my mirror'`},
		{kerr.ClusterAuthorizationFailed, "IdempotentWrite", KafkaCluster, "", `User:xmirror-r2k may not IdempotentWrite on cluster (`},
	} {
		got := k.Denied(tc.err, tc.op, tc.resource, tc.name)
		if !errors.Is(got, tc.err) || !strings.Contains(got.Error(), tc.want) || strings.Contains(got.Error(), "topsecret") {
			t.Errorf("got %q\nwant %q", got, tc.want)
		}
		if again := k.Denied(got, "Read", KafkaTopic, "x"); again != got {
			t.Errorf("wrapped twice: %v", again)
		}
	}
	plainErr := errors.New("connection refused")
	if got := k.Denied(plainErr, "Write", KafkaTopic, "t"); got != plainErr {
		t.Errorf("not a refusal, but wrapped: %v", got)
	}
}

// TestCredentialsInMistypedEndpointsNeverShown: a Redis URL whose scheme is
// mistyped or missing, and a broker with credentials pasted in, are
// refused without showing what could be a password.
func TestCredentialsInMistypedEndpointsNeverShown(t *testing.T) {
	for _, raw := range []string{"redis//u:s3cret@host", "u:s3cret@host:6379", "redis:u:s3cret@host:1", "rediss:/u:s3cret@host", "redis:///u:s3cret@host", "redis://u:s3cret@",
		"redis://alice:?Xy7s3cretQ@cache:6379/0", "redis://u:1234?s3cret=et@host", "rediss://alice:#Xy7s3cretQ@cache:6379", "redis://u:s3cr/et@host:1"} {
		if _, err := ParseRedisURL(raw); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: %v", raw, err)
		}
	}
	for _, list := range []string{"u:s3cret@host:9092", "h1:9092,alice:s3cret@h2", "sasl://u:s3cret@h:9092", "alice:s3cret,x@h:9092"} {
		if _, err := ParseBrokers(list); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: %v", list, err)
		}
	}
}
