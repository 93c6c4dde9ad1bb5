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
