package cmd

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestSummaryWords(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 entries"},
		{1, "1 entry"},
		{2, "2 entries"},
		{1000, "1000 entries"},
	} {
		if got := entryCount(tc.n); got != tc.want {
			t.Errorf("entryCount(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct {
		r    float64
		want string
	}{
		{0, "0"},
		{-1, "0"},
		{math.NaN(), "0"},
		{math.Inf(1), "0"},
		{0.5, "0.5"},
		{0.123456, "0.123"},
		{0.00001234, "0.0000123"},
		{7, "7"},
		{12.345, "12.3"},
		{99.96, "100"},
		{246.3, "246"},
		{17086.4, "17086"},
	} {
		if got := humanRate(tc.r); got != tc.want {
			t.Errorf("humanRate(%v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestSummaryLine(t *testing.T) {
	for _, tc := range []struct {
		name, output string
		s            summary
		want         string
	}{
		{"one entry", "text", summary{Mirror: "a>b", Entries: 1, Bytes: 10, Seconds: 2, Rate: 0.5, Stopped: "done"},
			"a>b: mirrored 1 entry (10 B) in 2.00s, 0.5 entries/s\n"},
		{"entries", "text", summary{Mirror: "a>b", Entries: 7, Bytes: 10, Seconds: 1, Rate: 7, Stopped: "done"},
			"a>b: mirrored 7 entries (10 B) in 1.00s, 7 entries/s\n"},
		{"trimmed", "text", summary{Mirror: "a>b", Entries: 7, Bytes: 10, Seconds: 1, Rate: 7, Lost: 2, Trimmed: 5, Stopped: "done"},
			"a>b: mirrored 7 entries (10 B) in 1.00s, 7 entries/s, 2 lost, 5 trimmed from the source\n"},
		{"trimmed json", "json", summary{Mirror: "a>b", Direction: "redis-to-kafka", Entries: 7, Trimmed: 5, Stopped: "done"},
			`{"mirror":"a>b","direction":"redis-to-kafka","entries":7,"bytes":0,"seconds":0,"entries_per_second":0,"trimmed":5,"stopped":"done"}` + "\n"},
		{"json keeps '>'", "json", summary{Mirror: "orders>{stream}", Direction: "redis-to-kafka", Entries: 1, Rate: 0.5, Stopped: "done"},
			`{"mirror":"orders>{stream}","direction":"redis-to-kafka","entries":1,"bytes":0,"seconds":0,"entries_per_second":0.5,"stopped":"done"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			a := &app{global: &globalOptions{}}
			a.env.Stdout, a.env.Stderr = &out, &errOut
			a.printSummary(&runFlags{output: tc.output}, tc.s)
			got := errOut.String()
			if tc.output == "json" {
				got = out.String()
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if strings.Contains(out.String()+errOut.String(), `\u003e`) {
				t.Errorf("'>' escaped: %q", out.String())
			}
		})
	}
}
