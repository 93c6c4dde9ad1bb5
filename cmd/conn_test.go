package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestRedisConnectionFlagsAndEnvironment runs check against a closed port:
// what the flags and the environment make of the connection shows in the
// warnings and errors, before any server is needed.
func TestRedisConnectionFlagsAndEnvironment(t *testing.T) {
	const pwWarning = "the Redis password in --redis can be seen by other users of this machine (ps); use XMIRROR_REDIS_PASSWORD, --redis-password-file or the URL in XMIRROR_REDIS instead"
	const insecureWarning = "the Redis server's certificate is not verified"
	cases := []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		wants  []string
		nots   []string
		secret string
	}{
		{name: "a password in --redis is warned about", args: []string{"--redis", "redis://u:hunter22@127.0.0.1:1"},
			code: ExitFailure, wants: []string{pwWarning, "127.0.0.1:1"}, secret: "hunter22"},
		{name: "a password in XMIRROR_REDIS is not", env: map[string]string{"XMIRROR_REDIS": "redis://u:hunter22@127.0.0.1:1"},
			code: ExitFailure, nots: []string{pwWarning}, secret: "hunter22"},
		{name: "XMIRROR_REDIS_PASSWORD is not", args: []string{"--redis", "redis://u@127.0.0.1:1"}, env: map[string]string{"XMIRROR_REDIS_PASSWORD": "hunter22"},
			code: ExitFailure, nots: []string{pwWarning}, secret: "hunter22"},
		{name: "--redis-tls-insecure is warned about", args: []string{"--redis", "rediss://127.0.0.1:1", "--redis-tls-insecure"},
			code: ExitFailure, wants: []string{insecureWarning}},
		{name: "so is XMIRROR_REDIS_TLS_INSECURE", args: []string{"--redis", "rediss://127.0.0.1:1"}, env: map[string]string{"XMIRROR_REDIS_TLS_INSECURE": "true"},
			code: ExitFailure, wants: []string{insecureWarning}},
		{name: "and skip_verify", args: []string{"--redis", "rediss://127.0.0.1:1?skip_verify=true"},
			code: ExitFailure, wants: []string{insecureWarning}},
		{name: "the flag wins over XMIRROR_REDIS_TLS_INSECURE", args: []string{"--redis", "rediss://127.0.0.1:1", "--redis-tls-insecure=false"}, env: map[string]string{"XMIRROR_REDIS_TLS_INSECURE": "true"},
			code: ExitFailure, nots: []string{insecureWarning}},
		{name: "XMIRROR_REDIS_TLS_INSECURE must be a boolean", args: []string{"--redis", "rediss://127.0.0.1:1"}, env: map[string]string{"XMIRROR_REDIS_TLS_INSECURE": "maybe"},
			code: ExitUsage, wants: []string{`XMIRROR_REDIS_TLS_INSECURE="maybe" must be true or false`}},
		{name: "XMIRROR_REDIS_CA with a plain URL", args: []string{"--redis", "redis://127.0.0.1:1"}, env: map[string]string{"XMIRROR_REDIS_CA": "/ca.pem"},
			code: ExitUsage, wants: []string{"xmirror: redis redis://127.0.0.1:1: --redis-ca applies only to TLS; use a rediss:// URL in --redis"}},
		{name: "a missing --redis-password-file", args: []string{"--redis", "redis://127.0.0.1:1", "--redis-password-file", "/nonexistent/pw"},
			code: ExitUsage, wants: []string{"--redis-password-file: open /nonexistent/pw"}},
		{name: "XMIRROR_REDIS_CERT without a key", args: []string{"--redis", "rediss://127.0.0.1:1"}, env: map[string]string{"XMIRROR_REDIS_CERT": "/c.pem"},
			code: ExitUsage, wants: []string{"--redis-cert needs --redis-key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := checkOutput(t, tc.env, append([]string{"--brokers", "127.0.0.1:1"}, tc.args...), tc.code, tc.wants, tc.nots)
			if tc.secret != "" && strings.Contains(out, tc.secret) {
				t.Errorf("output shows the password\n%s", out)
			}
			if strings.Count(out, pwWarning)+strings.Count(out, insecureWarning) > 1 {
				t.Errorf("a warning given more than once\n%s", out)
			}
		})
	}
}

// TestKafkaConnectionFlagsAndEnvironment: what the Kafka flags and the
// environment make of the connection shows in the warnings and the usage
// errors, before any broker is needed.
func TestKafkaConnectionFlagsAndEnvironment(t *testing.T) {
	const insecureWarning = "the Kafka brokers' certificates are not verified (--kafka-tls-insecure)"
	const plainWarning = "SASL PLAIN without TLS sends the Kafka password in clear"
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		code  int
		wants []string
		nots  []string
	}{
		{name: "--kafka-tls-insecure is warned about", args: []string{"--kafka-tls-insecure"}, code: ExitFailure, wants: []string{insecureWarning}},
		{name: "so is XMIRROR_KAFKA_TLS_INSECURE", env: map[string]string{"XMIRROR_KAFKA_TLS_INSECURE": "1"}, code: ExitFailure, wants: []string{insecureWarning}},
		{name: "the flag wins over the variable", args: []string{"--kafka-tls-insecure=false"}, env: map[string]string{"XMIRROR_KAFKA_TLS_INSECURE": "true"},
			code: ExitFailure, nots: []string{insecureWarning}},
		{name: "XMIRROR_KAFKA_TLS must be a boolean", env: map[string]string{"XMIRROR_KAFKA_TLS": "yes please"},
			code: ExitUsage, wants: []string{`XMIRROR_KAFKA_TLS="yes please" must be true or false`}},
		{name: "PLAIN without TLS is warned about", args: []string{"--kafka-sasl-mechanism", "plain", "--kafka-user", "u"}, env: map[string]string{"XMIRROR_KAFKA_PASSWORD": "hunter22"},
			code: ExitFailure, wants: []string{plainWarning}},
		{name: "PLAIN over TLS is not", args: []string{"--kafka-tls", "--kafka-sasl-mechanism", "PLAIN", "--kafka-user", "u"}, env: map[string]string{"XMIRROR_KAFKA_PASSWORD": "hunter22"},
			code: ExitFailure, nots: []string{plainWarning}},
		{name: "the mechanism from the environment", env: map[string]string{"XMIRROR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "XMIRROR_KAFKA_USER": "u"},
			code: ExitUsage, wants: []string{"SCRAM-SHA-256 needs a password; give it in --kafka-password-file or the environment"}},
		{name: "an unknown mechanism", args: []string{"--kafka-sasl-mechanism", "KERBEROS"},
			code: ExitUsage, wants: []string{`--kafka-sasl-mechanism "KERBEROS" is not one xmirror speaks; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER`}},
		{name: "a token without a mechanism", env: map[string]string{"XMIRROR_KAFKA_TOKEN": "hunter22"},
			code: ExitUsage, wants: []string{"XMIRROR_KAFKA_TOKEN needs a SASL mechanism; set --kafka-sasl-mechanism"}},
		{name: "a missing --kafka-token-file", args: []string{"--kafka-sasl-mechanism", "OAUTHBEARER", "--kafka-token-file", "/nonexistent/token"},
			code: ExitUsage, wants: []string{"xmirror: kafka 127.0.0.1:1: --kafka-token-file: open /nonexistent/token"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := checkOutput(t, tc.env, append([]string{"--redis", "redis://127.0.0.1:1", "--brokers", "127.0.0.1:1"}, tc.args...), tc.code, tc.wants, tc.nots)
			if strings.Contains(out, "hunter22") {
				t.Errorf("output shows the secret\n%s", out)
			}
		})
	}
}

// checkOutput runs check -v with args and env in this process, and fails
// the test unless it exits code with every one of wants and none of nots
// in its output, which it returns.
func checkOutput(t *testing.T, env map[string]string, args []string, code int, wants, nots []string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	got := Execute(context.Background(), Env{Stdout: &stdout, Stderr: &stderr, Getenv: getenv}, append([]string{"check", "--timeout", "2s", "-v"}, args...))
	out := stdout.String() + stderr.String()
	if got != code {
		t.Fatalf("exit %d, want %d\n%s", got, code, out)
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q\n%s", w, out)
		}
	}
	for _, n := range nots {
		if strings.Contains(out, n) {
			t.Errorf("output has %q\n%s", n, out)
		}
	}
	return out
}

// TestLogFormatAndLevel: --log-format json writes each log line as one
// JSON object; --log-level (or its variable) sets what is logged, over -v
// and -q; values it does not know are usage errors.
func TestLogFormatAndLevel(t *testing.T) {
	const warning = "the Redis server's certificate is not verified"
	insecure := []string{"--redis", "rediss://127.0.0.1:1", "--redis-tls-insecure"}
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		code  int
		wants []string
		nots  []string
	}{
		{name: "json", args: append([]string{"--log-format", "json"}, insecure...), code: ExitFailure,
			wants: []string{`"level":"WARN","msg":"` + warning}},
		{name: "json from the environment", args: insecure, env: map[string]string{"XMIRROR_LOG_FORMAT": "JSON"}, code: ExitFailure,
			wants: []string{`"level":"WARN"`}},
		{name: "text by default", args: insecure, code: ExitFailure, wants: []string{"level=WARN msg=\"" + warning}},
		{name: "--log-level error hides the warning", args: append([]string{"--log-level", "error"}, insecure...), code: ExitFailure, nots: []string{warning}},
		{name: "and wins over -v", args: append([]string{"--log-level", "ERROR"}, insecure...), code: ExitFailure, nots: []string{warning, "level=DEBUG"}},
		{name: "-v wins over XMIRROR_LOG_LEVEL", args: insecure, env: map[string]string{"XMIRROR_LOG_LEVEL": "error"}, code: ExitFailure, wants: []string{warning}},
		{name: "an unknown format", args: []string{"--log-format", "xml"}, code: ExitUsage, wants: []string{`--log-format must be text or json, got "xml"`}},
		{name: "an unknown level", args: nil, env: map[string]string{"XMIRROR_LOG_LEVEL": "chatty"}, code: ExitUsage, wants: []string{`XMIRROR_LOG_LEVEL must be debug, info, warn or error, got "chatty"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := checkOutput(t, tc.env, append([]string{"--brokers", "127.0.0.1:1"}, tc.args...), tc.code, tc.wants, tc.nots)
			if strings.Contains(tc.name, "json") {
				for _, line := range strings.Split(out, "\n") {
					if strings.HasPrefix(line, "{") && !json.Valid([]byte(line)) {
						t.Errorf("not a JSON line: %s", line)
					}
				}
			}
		})
	}
}
