package k2r

import (
	"strings"
	"testing"
)

func TestStreamTemplate(t *testing.T) {
	tests := []struct {
		tmpl      string
		topic     string
		partition int32
		want      string
		err       string
	}{
		{tmpl: "{topic}", topic: "orders", want: "orders"},
		{tmpl: "copy:{topic}:{partition}", topic: "orders", partition: 7, want: "copy:orders:7"},
		{tmpl: "all", topic: "orders", partition: 2, want: "all"},
		{tmpl: "{{{topic}}}-copy", topic: "orders", want: "{orders}-copy"},
		{tmpl: "a{{b}}c", topic: "x", want: "a{b}c"},
		{tmpl: "{partition}{topic}", topic: "t", partition: 0, want: "0t"},
		{tmpl: "", err: "empty"},
		{tmpl: "{topc}", err: "unknown placeholder {topc}"},
		{tmpl: "{}", err: "unknown placeholder {}"},
		{tmpl: "x{topic", err: "has no '}'"},
		{tmpl: "x}y", err: "has no '{'"},
		{tmpl: "{{topic}", err: "has no '{'"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			tmpl, err := ParseStreamTemplate(tt.tmpl)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseStreamTemplate(%q) = %v, want an error containing %q", tt.tmpl, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tmpl.Stream(tt.topic, tt.partition); got != tt.want {
				t.Errorf("Stream(%q, %d) = %q, want %q", tt.topic, tt.partition, got, tt.want)
			}
		})
	}
}

func TestStreamTemplateCheckTopics(t *testing.T) {
	tests := []struct {
		tmpl   string
		topics []string
		ok     bool
	}{
		{"{topic}", []string{"a", "b"}, true},
		{"merged", []string{"a", "b"}, true}, // a fixed name merges on purpose
		{"{topic}-{partition}", []string{"a", "b"}, true},
		{"p{partition}", []string{"a"}, true},
		{"p{partition}", []string{"a", "b"}, false},
	}
	for _, tt := range tests {
		tmpl, err := ParseStreamTemplate(tt.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if err := tmpl.CheckTopics(tt.topics); (err == nil) != tt.ok {
			t.Errorf("%q with %v: err = %v, want ok=%v", tt.tmpl, tt.topics, err, tt.ok)
		}
	}
}
