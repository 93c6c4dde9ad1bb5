package cmd

import (
	"bytes"
	"context"
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
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return tc.env[k] }
			args := append([]string{"check", "--timeout", "2s", "--brokers", "127.0.0.1:1", "-v"}, tc.args...)
			code := Execute(context.Background(), Env{Stdout: &stdout, Stderr: &stderr, Getenv: getenv}, args)
			out := stdout.String() + stderr.String()
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, out)
			}
			for _, w := range tc.wants {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q\n%s", w, out)
				}
			}
			for _, n := range tc.nots {
				if strings.Contains(out, n) {
					t.Errorf("output has %q\n%s", n, out)
				}
			}
			if tc.secret != "" && strings.Contains(out, tc.secret) {
				t.Errorf("output shows the password\n%s", out)
			}
			if strings.Count(out, pwWarning)+strings.Count(out, insecureWarning) > 1 {
				t.Errorf("a warning given more than once\n%s", out)
			}
		})
	}
}
