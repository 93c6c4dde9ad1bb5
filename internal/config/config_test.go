package config

import (
	"reflect"
	"strings"
	"testing"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestParseReadsSettingsDefaultsAndMirrorsWithTheirPlaces(t *testing.T) {
	text := `redis: redis://${REDIS_HOST:-127.0.0.1}:6379/0
brokers: kafka:9092
defaults:
  batch-size: 5000
mirrors:
  - name: orders-out
    direction: redis-to-kafka
    stream: [orders, refunds]
    topic: "mirror.{stream}"
  - name: orders-in
    direction: kafka-to-redis
    topic:
      - orders
    follow: false
`
	f, err := Parse("m.yaml", []byte(text), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Settings[0]; got.Key != "redis" || got.Values[0] != "redis://127.0.0.1:6379/0" || got.Pos != (Pos{1, 1}) {
		t.Errorf("first setting %+v", got)
	}
	if got := f.Defaults[0]; got.Key != "batch-size" || got.Values[0] != "5000" || got.ValuePos[0] != (Pos{4, 15}) {
		t.Errorf("default %+v", got)
	}
	if len(f.Mirrors) != 2 {
		t.Fatalf("mirrors %+v", f.Mirrors)
	}
	out := f.Mirrors[0]
	if out.Name != "orders-out" || out.Direction != "redis-to-kafka" || out.NamePos != (Pos{6, 11}) {
		t.Errorf("mirror %+v", out)
	}
	if s := out.Settings[0]; s.Key != "stream" || !s.List || !reflect.DeepEqual(s.Values, []string{"orders", "refunds"}) {
		t.Errorf("stream %+v", s)
	}
	if s := out.Settings[1]; s.Values[0] != "mirror.{stream}" || s.List {
		t.Errorf("topic %+v", s)
	}
	in := f.Mirrors[1]
	if s := in.Settings[0]; !s.List || s.Values[0] != "orders" || s.ValuePos[0] != (Pos{13, 9}) {
		t.Errorf("topic list %+v", s)
	}
	if s := in.Settings[1]; s.Key != "follow" || s.Values[0] != "false" {
		t.Errorf("follow %+v", s)
	}
}

func TestParseListsEveryProblemAtItsPlace(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"syntax", "mirrors: [\n", []string{"m.yaml:"}},
		{"not a mapping", "- a\n", []string{"m.yaml:1:1: the file must be a mapping"}},
		{"no mirrors", "redis: x\n", []string{`no "mirrors" list`}},
		{"empty mirrors", "mirrors: []\n", []string{`"mirrors" is empty`}},
		{"duplicate names and missing parts", `mirrors:
  - name: a
    direction: redis-to-kafka
  - name: a
    direction: kafka-to-redis
  - direction: redis-to-kafka
  - name: b
`, []string{
			`m.yaml:4:11: mirror name "a" is used twice (first at line 2)`,
			`m.yaml:6:5: a mirror needs a "name"`,
			`m.yaml:7:5: mirror "b" needs a "direction"`,
		}},
		{"duplicate key", `mirrors:
  - name: a
    direction: redis-to-kafka
    stream: s
    stream: t
`, []string{`m.yaml:5:5: not valid YAML: mapping key "stream" already defined at [4:5]`}},
		{"values", `defaults:
  name: x
  batch-size:
  nested: {a: 1}
mirrors:
  - name: a
    direction: redis-to-kafka
    stream: []
    topic: ${UNSET}
    key-field: ${1BAD}
`, []string{
			`m.yaml:2:3: "name" has no default`,
			`m.yaml:3:14: "batch-size" takes a value`,
			`m.yaml:4:11: "nested" takes a value`,
			`m.yaml:8:13: "stream" is an empty list`,
			`m.yaml:9:12: "topic": environment variable UNSET is not set`,
			`m.yaml:10:16: "key-field": ${1BAD}`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("m.yaml", []byte(tt.text), env(nil))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if e, ok := err.(*Error); !ok || len(e.Problems) < len(tt.want) {
				t.Errorf("error %v: want %d problems", err, len(tt.want))
			}
		})
	}
}

func TestExpand(t *testing.T) {
	vars := env(map[string]string{"HOST": "cache", "EMPTY": "", "PW": "s3cr$t"})
	tests := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${HOST}:6379", "cache:6379", ""},
		{"${MISSING:-127.0.0.1}", "127.0.0.1", ""},
		{"${EMPTY:-fallback}", "fallback", ""},
		{"${EMPTY}", "", ""},
		{"${PW}", "s3cr$t", ""}, // a value is never expanded again
		{"$$HOME and $HOME", "$HOME and $HOME", ""},
		{"cost: 5$", "cost: 5$", ""},
		{"${MISSING}", "", "MISSING is not set"},
		{"${HOST", "", "without closing"},
		{"${A-B}", "", "not a variable name"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, vars)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expand(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("mirrors:\n  - name: a\n    direction: redis-to-kafka\n    stream: [s]\n")
	f.Add("defaults: {batch-size: 1}\nmirrors: [{name: a, direction: k2r, topic: t}]\n")
	f.Add("redis: ${X:-y}\nmirrors:\n - name: '${Y}'\n")
	f.Fuzz(func(t *testing.T, text string) {
		file, err := Parse("f.yaml", []byte(text), env(map[string]string{"Y": "v"}))
		if err == nil && file == nil {
			t.Fatal("no file and no error")
		}
		if file != nil {
			for _, m := range file.Mirrors {
				for _, s := range m.Settings {
					if len(s.Values) != len(s.ValuePos) {
						t.Fatalf("setting %+v: values and places differ", s)
					}
				}
			}
		}
		if err != nil {
			if e, ok := err.(*Error); !ok || len(e.Problems) == 0 {
				t.Fatalf("error %v is not an *Error with problems", err)
			}
		}
	})
}
