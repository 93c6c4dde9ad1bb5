package cmd

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// panickingWriter stands for any bug that panics while a command runs.
type panickingWriter struct{}

func (panickingWriter) Write([]byte) (int, error) { panic("writer exploded") }

func TestPanicInACommandExitsOneWithOneLine(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		stack bool
	}{
		{"quiet about the stack", []string{"version"}, false},
		{"stack under -v", []string{"version", "-v"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := Execute(context.Background(), Env{Stdout: panickingWriter{}, Stderr: &stderr, Getenv: func(string) string { return "" }}, tc.args)
			if code != ExitFailure {
				t.Fatalf("exit %d, want %d; stderr %q", code, ExitFailure, stderr.String())
			}
			first, rest, _ := strings.Cut(stderr.String(), "\n")
			if !strings.HasPrefix(first, "xmirror: internal error: writer exploded") {
				t.Fatalf("first line %q, want the panic named", first)
			}
			if got := strings.Contains(rest, "goroutine"); got != tc.stack {
				t.Fatalf("stack printed: %v, want %v; stderr %q", got, tc.stack, stderr.String())
			}
		})
	}
}

func TestUsageErrorNamesTheHelpOfItsCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		help string
	}{
		{"unknown command", []string{"no-such-command"}, "Run 'xmirror --help' for usage."},
		{"unknown root flag", []string{"--no-such-flag"}, "Run 'xmirror --help' for usage."},
		{"redis-to-kafka flag", []string{"redis-to-kafka", "--no-such-flag"}, "Run 'xmirror redis-to-kafka --help' for usage."},
		{"alias of kafka-to-redis", []string{"k2r", "--no-such-flag"}, "Run 'xmirror kafka-to-redis --help' for usage."},
		{"check flag", []string{"check", "--no-such-flag"}, "Run 'xmirror check --help' for usage."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Execute(context.Background(), Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}, tc.args)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, ExitUsage, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if last := lines[len(lines)-1]; last != tc.help {
				t.Fatalf("last line %q, want %q; stderr %q", last, tc.help, stderr.String())
			}
		})
	}
}
