package mapping

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Template is a name with placeholders such as {stream}, {topic} or
// {partition}, checked once when it is parsed. "{{" and "}}" stand for
// literal braces, so a Redis hash tag can be written: "{{{topic}}}" gives
// "{orders}".
type Template struct {
	raw   string
	parts []templatePart
}

type templatePart struct {
	literal     string
	placeholder string // empty for a literal
}

// ParseTemplate parses s, accepting only the given placeholder names.
// Braces that do not form a known placeholder are refused, so a typo such as
// {steam} is a usage error rather than a name with braces in it.
func ParseTemplate(s string, allowed ...string) (Template, error) {
	t := Template{raw: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, templatePart{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '{':
			if i+1 < len(s) && s[i+1] == '{' {
				lit.WriteByte('{')
				i++
				continue
			}
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return Template{}, fmt.Errorf("template %q: '{' at byte %d has no '}'; write {{ for a literal brace", s, i)
			}
			name := s[i+1 : i+1+end]
			known := false
			for _, a := range allowed {
				known = known || name == a
			}
			if !known {
				return Template{}, fmt.Errorf("template %q: unknown placeholder {%s}; it may use {%s}, or {{ }} for literal braces", s, name, strings.Join(allowed, "}, {"))
			}
			flush()
			t.parts = append(t.parts, templatePart{placeholder: name})
			i += end + 1
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				lit.WriteByte('}')
				i++
				continue
			}
			return Template{}, fmt.Errorf("template %q: '}' at byte %d has no '{'; write }} for a literal brace", s, i)
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return t, nil
}

// Uses reports whether the template contains {name}.
func (t Template) Uses(name string) bool {
	for _, p := range t.parts {
		if p.placeholder == name {
			return true
		}
	}
	return false
}

// Expand replaces each placeholder by its value.
func (t Template) Expand(values map[string]string) string {
	if len(t.parts) == 1 && t.parts[0].placeholder != "" {
		return values[t.parts[0].placeholder]
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.placeholder == "" {
			b.WriteString(p.literal)
		} else {
			b.WriteString(values[p.placeholder])
		}
	}
	return b.String()
}

func (t Template) String() string { return t.raw }

// ValidTopicName checks a name against Kafka's rules: 1 to 249 characters
// of [a-zA-Z0-9._-], and not "." or "..".
func ValidTopicName(name string) error {
	if name == "" {
		return fmt.Errorf("topic name is empty")
	}
	if len(name) > 249 {
		return fmt.Errorf("topic name %q is longer than 249 characters", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("topic name %q is not allowed", name)
	}
	// The character is named as the user typed it (a rune, with its code
	// point), not as one of its UTF-8 bytes; positions count characters.
	pos := 0
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		pos++
		if r == utf8.RuneError && size == 1 {
			return fmt.Errorf("topic name %q has the byte 0x%02x, which is not UTF-8, at character %d; Kafka allows only ASCII letters, digits, '.', '_' and '-'", name, name[i], pos)
		}
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("topic name %q has %q (%U) at character %d; Kafka allows only ASCII letters, digits, '.', '_' and '-'", name, r, r, pos)
		}
		i += size
	}
	return nil
}

// SourceText writes a mirror's sources as one text: the names given
// (streams or topics), then each pattern after a "~", comma-separated;
// sorted for a name derived from them (the same settings always give the
// same name), or as given for a description.
func SourceText(names, patterns []string, sorted bool) string {
	parts := append([]string(nil), names...)
	pats := append([]string(nil), patterns...)
	if sorted {
		slices.Sort(parts)
		slices.Sort(pats)
	}
	for _, p := range pats {
		parts = append(parts, "~"+p)
	}
	return strings.Join(parts, ",")
}
