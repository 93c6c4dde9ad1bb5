package mapping

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Field is one field of a stream entry. Names and values are arbitrary
// bytes held in strings.
type Field struct {
	Name  string
	Value string
}

// The json format writes an entry as one JSON object whose members are the
// entry's fields, in entry order, every value a string. It is written and
// read by hand rather than with encoding/json for two reasons: encoding/json
// replaces bytes that are not UTF-8 with U+FFFD, which would silently alter
// binary data, and it cannot keep the order of members or duplicate names.
//
// Here bytes that do not form valid UTF-8 are copied through unchanged, so a
// round trip is the identity. Duplicate field names are kept, in order, as
// duplicate members.

const hexDigits = "0123456789abcdef"

// AppendJSONObject appends fields as a JSON object to dst.
func AppendJSONObject(dst []byte, fields []Field) []byte {
	dst = append(dst, '{')
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, f.Name)
		dst = append(dst, ':')
		dst = appendJSONString(dst, f.Value)
	}
	return append(dst, '}')
}

// appendJSONString quotes s: '"', '\\' and control characters are escaped;
// everything else, valid UTF-8 or not, is copied as it is.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := plainJSONEnd(s, 0); i < len(s); i = plainJSONEnd(s, i+1) {
		c := s[i]
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// errNotObject and friends describe why a record value is not what the json
// format reads.
var (
	errNotObject   = errors.New("value is not a JSON object")
	errNotString   = errors.New("member value is not a JSON string")
	errTrailing    = errors.New("data after the JSON object")
	errUnterminate = errors.New("JSON ends too early")
)

// ParseJSONObject reads a JSON object of string members into fields,
// appending to dst, keeping member order and duplicates. String contents
// are unescaped; bytes that are not valid UTF-8 are kept as they are, the
// inverse of appendJSONObject.
func ParseJSONObject(src []byte, dst []Field) ([]Field, error) {
	i := skipSpace(src, 0)
	if i >= len(src) || src[i] != '{' {
		return dst, errNotObject
	}
	i = skipSpace(src, i+1)
	if i < len(src) && src[i] == '}' {
		if j := skipSpace(src, i+1); j != len(src) {
			return dst, errTrailing
		}
		return dst, nil
	}
	for {
		var name, value string
		var err error
		if i >= len(src) {
			return dst, errUnterminate
		}
		if src[i] != '"' {
			return dst, fmt.Errorf("at byte %d: expected a member name", i)
		}
		if name, i, err = parseJSONString(src, i); err != nil {
			return dst, err
		}
		i = skipSpace(src, i)
		if i >= len(src) || src[i] != ':' {
			return dst, fmt.Errorf("at byte %d: expected ':' after member %q", i, name)
		}
		i = skipSpace(src, i+1)
		if i >= len(src) {
			return dst, errUnterminate
		}
		if src[i] != '"' {
			return dst, fmt.Errorf("member %q: %w", name, errNotString)
		}
		if value, i, err = parseJSONString(src, i); err != nil {
			return dst, fmt.Errorf("member %q: %w", name, err)
		}
		dst = append(dst, Field{Name: name, Value: value})
		i = skipSpace(src, i)
		if i >= len(src) {
			return dst, errUnterminate
		}
		switch src[i] {
		case ',':
			i = skipSpace(src, i+1)
		case '}':
			if j := skipSpace(src, i+1); j != len(src) {
				return dst, errTrailing
			}
			return dst, nil
		default:
			return dst, fmt.Errorf("at byte %d: expected ',' or '}'", i)
		}
	}
}

func skipSpace(src []byte, i int) int {
	for i < len(src) && (src[i] == ' ' || src[i] == '\t' || src[i] == '\n' || src[i] == '\r') {
		i++
	}
	return i
}

// plainJSONEnd returns the index of the first byte of s from i on that a
// JSON string cannot hold as it is ('"', '\\' or a control character), or
// len(s). Most entries have none: it looks at eight bytes at a time, which
// makes encoding and decoding small values about twice as fast.
func plainJSONEnd[T string | []byte](s T, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(s); i += 8 {
		v := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		quote, backslash := v^(ones*'"'), v^(ones*'\\')
		// A byte below 0x20, or one that the XOR made zero, sets its
		// high bit here (possibly bits above it too, which only sends
		// the byte loop below to find it).
		if ((v-ones*0x20)&^v|(quote-ones)&^quote|(backslash-ones)&^backslash)&highs != 0 {
			break
		}
	}
	for i < len(s) && s[i] >= 0x20 && s[i] != '"' && s[i] != '\\' {
		i++
	}
	return i
}

// parseJSONString reads the string starting at src[i] == '"' and returns it
// unescaped with the index after its closing quote.
func parseJSONString(src []byte, i int) (string, int, error) {
	i++ // opening quote
	start := i
	// Fast path: no escapes.
	i = plainJSONEnd(src, i)
	if i < len(src) && src[i] == '"' {
		return string(src[start:i]), i + 1, nil
	}
	out := make([]byte, 0, i-start+16)
	out = append(out, src[start:i]...)
	for i < len(src) {
		c := src[i]
		switch {
		case c == '"':
			return string(out), i + 1, nil
		case c < 0x20:
			return "", i, fmt.Errorf("at byte %d: control character in a JSON string", i)
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(src) {
			return "", i, errUnterminate
		}
		switch e := src[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, n, err := parseUnicodeEscape(src, i)
			if err != nil {
				return "", i, err
			}
			out = utf8.AppendRune(out, r)
			i += n
			continue
		default:
			return "", i, fmt.Errorf("at byte %d: invalid escape \\%c", i, e)
		}
		i += 2
	}
	return "", i, errUnterminate
}

// parseUnicodeEscape reads \uXXXX (and a following low surrogate) at
// src[i]; it returns the rune and how many bytes it used.
func parseUnicodeEscape(src []byte, i int) (rune, int, error) {
	hi, ok := hex4(src, i+2)
	if !ok {
		return 0, 0, fmt.Errorf("at byte %d: invalid \\u escape", i)
	}
	if hi >= 0xD800 && hi < 0xDC00 {
		if i+11 < len(src)+0 && src[i+6] == '\\' && src[i+7] == 'u' {
			if lo, ok := hex4(src, i+8); ok && lo >= 0xDC00 && lo < 0xE000 {
				return (rune(hi)-0xD800)<<10 | (rune(lo) - 0xDC00) + 0x10000, 12, nil
			}
		}
		return utf8.RuneError, 6, nil
	}
	return rune(hi), 6, nil
}

func hex4(src []byte, i int) (uint16, bool) {
	if i+4 > len(src) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(src[i:i+4]), 16, 16)
	return uint16(v), err == nil
}
