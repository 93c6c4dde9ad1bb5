package cmd

import (
	"testing"
	"time"
)

func TestParseResetTime(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-12-01T08:00:00Z", time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), true},
		{"1764576000000", time.UnixMilli(1764576000000), true},
		{"-2h", now.Add(-2 * time.Hour), true},
		{"2h", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"--1h", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := parseResetTime(tt.in, now)
		if (err == nil) != tt.ok || tt.ok && !got.Equal(tt.want) {
			t.Errorf("parseResetTime(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
