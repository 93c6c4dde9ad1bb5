package config

import (
	"fmt"
	"strings"
)

// expand replaces ${VAR} by the variable's value and ${VAR:-default} by
// its value, or default when it is unset or empty (as a shell does); $$
// is a literal $, and a $ not followed by { or $ is left as it is. A
// variable unset without a default is an error: a secret forgotten in the
// environment must not become an empty password.
func expand(s string, getenv func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("%q opens ${ without closing it with }", s)
		}
		expr := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validName(name) {
			return "", fmt.Errorf("${%s}: %q is not a variable name (letters, digits and _, not starting with a digit); write $$ for a literal $", expr, name)
		}
		v, set := getenv(name)
		switch {
		case set && v != "":
			b.WriteString(v)
		case hasDef:
			b.WriteString(def)
		case set:
			// Set but empty, without a default: empty, as a shell.
		default:
			return "", fmt.Errorf("environment variable %s is not set; set it, or give a default with ${%s:-default}", name, name)
		}
		i += 2 + end
	}
	return b.String(), nil
}

func validName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
