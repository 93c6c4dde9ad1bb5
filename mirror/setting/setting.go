package setting

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Names maps a Config field name to the name a front end's users know it
// by; false leaves the field's name.
type Names func(field string) (string, bool)

// settingNamer is an error whose text names settings.
type settingNamer interface {
	error
	// RenderSettings is the error's text with each setting named by
	// names (nil: by its field name), its wrapped errors' included.
	RenderSettings(names Names) string
}

// Errorf is fmt.Errorf for an error whose format names settings of a
// mirror's Config as {Field}: "pass {OnGap} skip to accept the loss".
// %w wraps as with fmt.Errorf.
func Errorf(format string, args ...any) error {
	return &settingError{format: format, args: args, err: fmt.Errorf(nameSettings(format, nil), args...)}
}

type settingError struct {
	format string
	args   []any
	err    error // the error with field names, which wraps what %w wrapped
}

func (e *settingError) Error() string { return e.err.Error() }

func (e *settingError) RenderSettings(names Names) string {
	return fmt.Errorf(nameSettings(e.format, names), e.args...).Error()
}

func (e *settingError) Unwrap() []error {
	switch u := e.err.(type) {
	case interface{ Unwrap() error }:
		return []error{u.Unwrap()}
	case interface{ Unwrap() []error }:
		return u.Unwrap()
	}
	return nil
}

// Text is fmt.Sprintf for the text of an error type whose format
// names settings as {Field} (see Errorf), each named by names (nil: by
// its field name). Such a type's RenderSettings(names) is
// Text(names, ...) and its Error RenderSettings(nil).
func Text(names Names, format string, args ...any) string {
	return fmt.Sprintf(nameSettings(format, names), args...)
}

// nameSettings replaces each {Field} of format (an upper-case letter, then
// letters and digits) by its name; other braces stay.
func nameSettings(format string, names Names) string {
	if strings.IndexByte(format, '{') < 0 {
		return format
	}
	var b strings.Builder
	for {
		open := strings.IndexByte(format, '{')
		if open < 0 {
			b.WriteString(format)
			return b.String()
		}
		end := strings.IndexByte(format[open:], '}')
		if end < 0 || !isFieldName(format[open+1:open+end]) {
			b.WriteString(format[:open+1])
			format = format[open+1:]
			continue
		}
		field := format[open+1 : open+end]
		b.WriteString(format[:open])
		name := field
		if names != nil {
			if n, ok := names(field); ok {
				name = n
			}
		}
		b.WriteString(strings.ReplaceAll(name, "%", "%%"))
		format = format[open+end+1:]
	}
}

func isFieldName(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Render is err's text with every setting that an error in its chain
// names written as names says: the text a front end shows its users. An
// error made by Errorf is formatted again, its error arguments rendered in
// turn; one that renders its own text (RenderSettings) renders itself; any
// other wrapper holds its wrapped errors' texts as they are, and each is
// replaced there, at its last place, by its rendering.
func Render(err error, names Names) string {
	if err == nil {
		return ""
	}
	return render(err, names)
}

func render(err error, names Names) string {
	if v := reflect.ValueOf(err); v.Kind() == reflect.Pointer && v.IsNil() {
		return fmt.Sprint(err) // as fmt prints it, without calling a method on nil
	}
	var msg string
	switch e := err.(type) {
	case *settingError:
		args := make([]any, len(e.args))
		for i, a := range e.args {
			if ae, ok := a.(error); ok {
				a = renderedError{text: render(ae, names), err: ae}
			}
			args[i] = a
		}
		return fmt.Errorf(nameSettings(e.format, names), args...).Error()
	case settingNamer:
		// It renders itself, its wrapped error included.
		return e.RenderSettings(names)
	default:
		msg = err.Error()
	}
	var wrapped []error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		wrapped = []error{u.Unwrap()}
	case interface{ Unwrap() []error }:
		wrapped = u.Unwrap()
	}
	for _, w := range wrapped {
		if w == nil {
			continue
		}
		plain := render(w, nil)
		if plain == "" {
			continue
		}
		// Where a wrapper holds it: at its end ("doing x: %w") most
		// often, else at its start, else at its last place.
		switch i := strings.LastIndex(msg, plain); {
		case strings.HasSuffix(msg, plain):
			msg = msg[:len(msg)-len(plain)] + render(w, names)
		case strings.HasPrefix(msg, plain):
			msg = render(w, names) + msg[len(plain):]
		case i >= 0:
			msg = msg[:i] + render(w, names) + msg[i+len(plain):]
		}
	}
	return msg
}

// renderedError stands in for an error argument of Errorf, formatted again
// with its settings named.
type renderedError struct {
	text string
	err  error
}

func (e renderedError) Error() string { return e.text }
func (e renderedError) Unwrap() error { return e.err }

// A Problem is one thing wrong with a Config: the field at fault and what
// is wrong with it, a text that names settings as Errorf does.
type Problem struct {
	// Field is the Config field at fault.
	Field string
	Err   error
}

// Problemf is the problem of field, described as Errorf would.
func Problemf(field, format string, args ...any) *Problem {
	return &Problem{Field: field, Err: Errorf(format, args...)}
}

func (p *Problem) Error() string { return p.Err.Error() }
func (p *Problem) Unwrap() error { return p.Err }

// ConfigError is every problem a Config's Validate found, in order.
type ConfigError struct {
	Problems []*Problem
}

// Error joins the problems into one line.
func (e *ConfigError) Error() string { return e.RenderSettings(nil) }

// RenderSettings joins the problems, settings named by names.
func (e *ConfigError) RenderSettings(names Names) string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(Render(p, names))
	}
	return b.String()
}

func (e *ConfigError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// Problems collects a Config's problems; Err is nil when there are none.
type Problems []*Problem

// Addf adds a problem of field, described as Errorf would.
func (ps *Problems) Addf(field, format string, args ...any) {
	*ps = append(*ps, Problemf(field, format, args...))
}

// Add adds err as a problem of field.
func (ps *Problems) Add(field string, err error) {
	*ps = append(*ps, &Problem{Field: field, Err: err})
}

// Unique adds a problem of field for each of values given twice (what
// names them: "stream", "topic"), and returns the set of values.
func (ps *Problems) Unique(field, what string, values []string) map[string]bool {
	seen := make(map[string]bool, len(values))
	for _, v := range values {
		if seen[v] {
			ps.Addf(field, "%s %q is given twice", what, v)
		}
		seen[v] = true
	}
	return seen
}

// Err is the problems as a *ConfigError, or nil.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ConfigError{Problems: ps}
}

// IsConfig says whether err is a Config's problem: the mirror refused a
// setting, so the fix is in the configuration, not the servers.
func IsConfig(err error) bool {
	var ce *ConfigError
	var p *Problem
	return errors.As(err, &ce) || errors.As(err, &p)
}
