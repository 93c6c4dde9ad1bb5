package cmd

import "testing"

func TestETA(t *testing.T) {
	tests := []struct {
		done, total int64
		rate        float64
		want        string
	}{
		{0, 100, 0, "?"},
		{100, 100, 5, "0s"},
		{99, 100, 10, "<1s"},
		{0, 120, 10, "12s"},
		{0, 1900, 10, "3m10s"},
		{0, 1800, 10, "3m"},
		{0, 10_000_000, 1, ">100h"},
	}
	for _, tt := range tests {
		if got := eta(tt.done, tt.total, tt.rate); got != tt.want {
			t.Errorf("eta(%d, %d, %v) = %q, want %q", tt.done, tt.total, tt.rate, got, tt.want)
		}
	}
}
