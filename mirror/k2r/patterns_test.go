package k2r

import (
	"strings"
	"testing"

	"github.com/xmirror/xmirror/mirror/setting"
)

func TestTopicRegexMatchesAnywhereAndLeavesInternalTopicsOut(t *testing.T) {
	tests := []struct {
		exprs []string
		topic string
		want  string // the expression that matches, "" none
	}{
		{[]string{`^orders\.`}, "orders.eu", `^orders\.`},
		{[]string{`^orders\.`}, "orders", ""},
		{[]string{`^orders\.`}, "old.orders.eu", ""},
		{[]string{`orders`}, "old.orders.eu", `orders`}, // unanchored: anywhere
		{[]string{`^a$`, `a`}, "a", `^a$`},              // the first that matches
		{[]string{`.*`}, "__consumer_offsets", ""},
		{[]string{`offsets`}, "__consumer_offsets", ""},
		{[]string{`^__consumer`}, "__consumer_offsets", `^__consumer`},
		{[]string{`.*`}, "_single", `.*`},
		{[]string{`.*`}, "x__y", `.*`},
	}
	for _, tt := range tests {
		var ps setting.Problems
		p := compileTopicPatterns(&ps, tt.exprs)
		if err := ps.Err(); err != nil {
			t.Fatalf("%q: %v", tt.exprs, err)
		}
		got, ok := p.match(tt.topic)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("%q match %q = %q, %v; want %q", tt.exprs, tt.topic, got, ok, tt.want)
		}
	}
}

func TestConfigRefusesBadTopicRegexes(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"not a regex", func(c *Config) { c.TopicRegexes = []string{"("} }, `TopicRegexes "(" is not a regular expression`},
		{"empty", func(c *Config) { c.TopicRegexes = []string{""} }, "TopicRegexes must not be empty"},
		{"twice", func(c *Config) { c.TopicRegexes = []string{"a", "a"} }, `topic regex "a" is given twice`},
		{"neither topics nor regexes", func(c *Config) { c.Topics = nil }, "Topics or TopicRegexes is required"},
		{"rescan", func(c *Config) { c.TopicRegexes = []string{"a"}; c.Rescan = 0 }, "Rescan must be positive"},
		{"partition without topic", func(c *Config) { c.TopicRegexes = []string{"a"}; c.Stream = "p{partition}" }, "has {partition} but not {topic}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Name, cfg.Redis.URL, cfg.Kafka.Brokers = "m", "redis://127.0.0.1:6379/0", []string{"127.0.0.1:9092"}
			cfg.Topics = []string{"orders"}
			tt.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(setting.Render(err, nil), tt.want) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
	cfg := Defaults()
	cfg.Name, cfg.Redis.URL, cfg.Kafka.Brokers = "m", "redis://127.0.0.1:6379/0", []string{"127.0.0.1:9092"}
	cfg.TopicRegexes = []string{`^orders\.`}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a regex alone: %v", err)
	}
}

func TestDefaultNameWithTopicRegexes(t *testing.T) {
	cfg := Defaults()
	cfg.Topics = []string{"b", "a"}
	if got := DefaultName(cfg); got != "a,b>{topic}" {
		t.Errorf("without regexes: %q", got)
	}
	cfg.TopicRegexes = []string{`^z`, `^orders\.`}
	if got, want := DefaultName(cfg), `a,b,~^orders\.,~^z>{topic}`; got != want {
		t.Errorf("DefaultName = %q, want %q", got, want)
	}
}
