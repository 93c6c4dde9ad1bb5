package setting

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func flagNames(field string) (string, bool) {
	name, ok := map[string]string{"OnGap": "--on-gap", "CreateTopic": "--create-topic", "Name": "--name", "Topic": "--topic"}[field]
	return name, ok
}

func TestSettingsAreNamedByFieldOrAsTheFrontEndSays(t *testing.T) {
	inner := Errorf("stream %q: pass {OnGap} skip to go on", "s")
	wrapped := fmt.Errorf("read: %w", inner)
	outer := Errorf("run: %w; or choose another {Name}", wrapped)
	tests := []struct {
		name       string
		err        error
		plain, cli string
	}{
		{"one setting", inner, `stream "s": pass OnGap skip to go on`, `stream "s": pass --on-gap skip to go on`},
		{"wrapped by fmt.Errorf", wrapped, `read: stream "s": pass OnGap skip to go on`, `read: stream "s": pass --on-gap skip to go on`},
		{"settings at two levels", outer, `run: read: stream "s": pass OnGap skip to go on; or choose another Name`, `run: read: stream "s": pass --on-gap skip to go on; or choose another --name`},
		{"a field the front end does not know", Errorf("set {Linger}"), "set Linger", "set Linger"},
		{"braces that are not a field", Errorf("use '{topic}-{partition}', {{ or {}"), "use '{topic}-{partition}', {{ or {}", "use '{topic}-{partition}', {{ or {}"},
		// A user's data is never taken for a setting: only the format is
		// read for them.
		{"a stream named like a setting", Errorf("stream %q: pass {OnGap} skip", "{OnGap}"), `stream "{OnGap}": pass OnGap skip`, `stream "{OnGap}": pass --on-gap skip`},
		{"a percent sign in a name", Errorf("%s {Name}", "100%"), "100% Name", "100% --name"},
		{"no setting at all", errors.New("plain"), "plain", "plain"},
		// A wrapper's own text is not rewritten where it happens to
		// hold a wrapped error's text.
		{"a topic named like the wrapped text", fmt.Errorf("topic %q: %w", "Topic", Errorf("{Topic}")), `topic "Topic": Topic`, `topic "Topic": --topic`},
		{"the wrapped text first, and again in a user's name", fmt.Errorf("%w: stream %q", Errorf("choose another {Name}"), "choose another Name"),
			`choose another Name: stream "choose another Name"`, `choose another --name: stream "choose another Name"`},
		{"a nil error in a wrapper", fmt.Errorf("a: %w", (*nilError)(nil)), "a: <nil>", "a: <nil>"},
		{"an error argument not wrapped", Errorf("write: %w (%v)", io.EOF, Errorf("choose another {Name}")), "write: EOF (choose another Name)", "write: EOF (choose another --name)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.plain {
				t.Errorf("Error() = %q, want %q", got, tc.plain)
			}
			if got := Render(tc.err, flagNames); got != tc.cli {
				t.Errorf("RenderError = %q, want %q", got, tc.cli)
			}
		})
	}
}

func TestErrorfWrapsAsFmtErrorfDoes(t *testing.T) {
	err := Errorf("read {Name}: %w", io.EOF)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("%v does not wrap io.EOF", err)
	}
	two := Errorf("%w and %w", io.EOF, io.ErrUnexpectedEOF)
	if !errors.Is(two, io.EOF) || !errors.Is(two, io.ErrUnexpectedEOF) {
		t.Fatalf("%v does not wrap both", two)
	}
}

func TestConfigErrorListsEveryProblemByField(t *testing.T) {
	var ps Problems
	if ps.Err() != nil {
		t.Fatal("no problem is no error")
	}
	ps.Addf("Name", "{Name} must not be empty")
	ps.Addf("OnGap", "{OnGap} must be fail or skip, got %q", "x")
	err := ps.Err()
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 || ce.Problems[0].Field != "Name" || ce.Problems[1].Field != "OnGap" {
		t.Fatalf("got %#v, want two problems naming Name and OnGap", err)
	}
	if !IsConfig(err) || !IsConfig(fmt.Errorf("set up: %w", err)) || IsConfig(errors.New("other")) {
		t.Fatal("IsConfig does not tell a Config's problems")
	}
	want := `--name must not be empty; --on-gap must be fail or skip, got "x"`
	if got := Render(fmt.Errorf("%w", err), flagNames); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

type nilError struct{}

func (e *nilError) Error() string { return "never called on nil" + fmt.Sprint(*e) }
