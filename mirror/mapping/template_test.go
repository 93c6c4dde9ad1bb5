package mapping

import (
	"strings"
	"testing"
)

func TestTemplates(t *testing.T) {
	cases := []struct {
		tmpl    string
		values  map[string]string
		want    string
		wantErr string
	}{
		{"{stream}", map[string]string{"stream": "orders"}, "orders", ""},
		{"mirror.{stream}.v1", map[string]string{"stream": "eu"}, "mirror.eu.v1", ""},
		{"fixed", nil, "fixed", ""},
		{"{stream}-{stream}", map[string]string{"stream": "a"}, "a-a", ""},
		{"{steam}", nil, "", "unknown placeholder {steam}"},
		{"a{stream", nil, "", "has no '}'"},
		{"a}b", nil, "", "has no '{'"},
		{"}{stream}", nil, "", "has no '{'"},
		{"{{{stream}}}", map[string]string{"stream": "s"}, "{s}", ""},
		{"a{{b}}c", nil, "a{b}c", ""},
		{"{}", nil, "", "unknown placeholder {}"},
	}
	for _, tc := range cases {
		t.Run(tc.tmpl, func(t *testing.T) {
			tm, err := ParseTemplate(tc.tmpl, "stream")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tm.Expand(tc.values); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTopicNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"orders": true, "a.b_c-D9": true, "": false, ".": false, "..": false,
		"a:b": false, "a b": false, "é": false, strings.Repeat("a", 249): true, strings.Repeat("a", 250): false,
	} {
		if err := ValidTopicName(name); (err == nil) != ok {
			t.Errorf("ValidTopicName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestInvalidTopicNameErrorNamesTheCharacterNotAByte(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"caf\u00e4", `has 'ä' (U+00E4) at character 4`},
		{"a\u20acb", `has '€' (U+20AC) at character 2`},
		{"\u00e4b:c", `has 'ä' (U+00E4) at character 1`},
		{"ab:c", `has ':' (U+003A) at character 3`},
		{"ok\xffno", `has the byte 0xff, which is not UTF-8, at character 3`},
	} {
		err := ValidTopicName(tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidTopicName(%q) = %v, want it to say %s", tc.name, err, tc.want)
		}
	}
}
