package mapping

import (
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

func TestJSONObjectEncoding(t *testing.T) {
	cases := []struct {
		name   string
		fields []Field
		want   string
	}{
		{"empty entry", nil, `{}`},
		{"one field", []Field{{"a", "1"}}, `{"a":"1"}`},
		{"empty value", []Field{{"value", ""}}, `{"value":""}`},
		{"order kept", []Field{{"z", "1"}, {"a", "2"}}, `{"z":"1","a":"2"}`},
		{"duplicates kept", []Field{{"a", "1"}, {"a", "2"}}, `{"a":"1","a":"2"}`},
		{"escapes", []Field{{"q", "\"\\\n\r\t\x00\x1f"}}, `{"q":"\"\\\n\r\t\u0000\u001f"}`},
		{"unicode as is", []Field{{"ü", "日本 🎉"}}, `{"ü":"日本 🎉"}`},
		{"invalid UTF-8 as is", []Field{{"\xff", "a\x80b\xc3"}}, "{\"\xff\":\"a\x80b\xc3\"}"},
		{"html not escaped", []Field{{"h", "<&>"}}, `{"h":"<&>"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendJSONObject(nil, tc.fields))
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			back, err := ParseJSONObject([]byte(got), nil)
			if err != nil {
				t.Fatalf("parse back: %v", err)
			}
			if len(back) != len(tc.fields) || (len(back) > 0 && !reflect.DeepEqual(back, tc.fields)) {
				t.Fatalf("round trip: got %q, want %q", back, tc.fields)
			}
			if utf8.ValidString(got) && !json.Valid([]byte(got)) {
				t.Fatalf("valid UTF-8 output is not valid JSON: %q", got)
			}
		})
	}
}

func TestJSONObjectParsing(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    []Field
		wantErr bool
	}{
		{"spaces", " { \"a\" : \"1\" , \"b\":\"2\" } ", []Field{{"a", "1"}, {"b", "2"}}, false},
		{"escapes", `{"a":"\u00e9\/\b\f\ud83c\udf89"}`, []Field{{"a", "é/\b\f🎉"}}, false},
		{"empty object", `{}`, nil, false},
		{"number value", `{"a":1}`, nil, true},
		{"nested", `{"a":{"b":"c"}}`, nil, true},
		{"array", `["a"]`, nil, true},
		{"trailing data", `{"a":"1"} x`, nil, true},
		{"unterminated", `{"a":"1`, nil, true},
		{"missing colon", `{"a" "1"}`, nil, true},
		{"bad escape", `{"a":"\x"}`, nil, true},
		{"raw control character", "{\"a\":\"\n\"}", nil, true},
		{"empty input", ``, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseJSONObject([]byte(tc.in), nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// plainJSONEnd must stop exactly where a byte-by-byte scan stops, for every
// byte value at every position of a word and around word boundaries.
func TestPlainJSONEndStopsAtTheFirstByteToEscape(t *testing.T) {
	byByte := func(s []byte, i int) int {
		for i < len(s) && s[i] >= 0x20 && s[i] != '"' && s[i] != '\\' {
			i++
		}
		return i
	}
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 20; pos++ {
			for _, from := range []int{0, 1, 7} {
				s := []byte("abcdefghijklmnopqrstuvwxyz")[:20]
				s[pos] = byte(c)
				if got, want := plainJSONEnd(s, from), byByte(s, from); got != want {
					t.Fatalf("byte %#x at %d, from %d: got %d, want %d", c, pos, from, got, want)
				}
				if got, want := plainJSONEnd(string(s), from), byByte(s, from); got != want {
					t.Fatalf("string: byte %#x at %d, from %d: got %d, want %d", c, pos, from, got, want)
				}
			}
		}
	}
}
