package cmd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/xmirror/xmirror/internal/testenv"
)

func TestCheck(t *testing.T) {
	testenv.Redis(t)
	testenv.Kafka(t)
	cases := []struct {
		name  string
		args  []string
		code  int
		wants []string
	}{
		{"local servers", []string{"check"}, 0, []string{"redis  ok", "kafka  ok", "XAUTOCLAIM: yes", "cluster "}},
		{"json report", []string{"check", "-o", "json"}, 0, []string{`"cluster_id"`, `"xautoclaim": true`}},
		{"closed ports", []string{"check", "--redis", "redis://127.0.0.1:1", "--brokers", "127.0.0.1:2"}, 1, []string{"redis 127.0.0.1:1: connection refused", "kafka 127.0.0.1:2: connection refused"}},
		{"wrong password", []string{"check", "--redis", "redis://nobody:pw@" + strings.TrimPrefix(testenv.RedisURL(), "redis://")}, 1, []string{"authentication refused", "nobody:xxxxx@"}},
		{"malformed url", []string{"check", "--redis", "127.0.0.1:6379"}, 2, []string{"redis URL"}},
		{"malformed brokers", []string{"check", "--brokers", "kafka://x"}, 2, []string{"without a scheme"}},
		{"bad flag", []string{"check", "--nope"}, 2, []string{"unknown flag"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			begin := time.Now()
			r := xmirror(t, tc.args...)
			if took := time.Since(begin); took > 10*time.Second {
				t.Errorf("took %s, want at most 10s", took)
			}
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, w := range tc.wants {
				if !strings.Contains(r.stdout+r.stderr, w) {
					t.Errorf("output lacks %q\nstdout: %s\nstderr: %s", w, r.stdout, r.stderr)
				}
			}
			if strings.Contains(r.stdout+r.stderr, ":pw@") {
				t.Errorf("a password was printed")
			}
		})
	}
}

func TestHelpAndVersionNeedNoServer(t *testing.T) {
	r := xmirror(t, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "redis-to-kafka") || !strings.Contains(r.stdout, "Exit codes") {
		t.Fatalf("--help: exit %d\n%s", r.code, r.stdout)
	}
	r = xmirror(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "xmirror ") {
		t.Fatalf("version: exit %d %q", r.code, r.stdout)
	}
	r = xmirror(t, "frobnicate")
	if r.code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", r.code)
	}
}
