package mapping

import (
	"testing"
	"time"
)

func TestCompareIDs(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"2-0", "10-0", -1},
		{"10-5", "9-99", 1},
		{"10", "10-0", 0},
		{"10", "9-99", 1},
		{"9999999999999", "1796174265720-2", 1},
	}
	for _, tc := range cases {
		if got := CompareIDs(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareIDs(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestEntryIDMillisecondsAreClampedToWhatTheProducerCanWrite(t *testing.T) {
	tests := []struct {
		id   string
		want int64
	}{
		{"0-0", 0},
		{"1700000000000-5", 1700000000000},
		{"9223372036854-0", 9223372036854},
		{"9223372036855-0", MaxTimestampMs},
		{"9999999999999-0", MaxTimestampMs},
		{"18446744073709551615-18446744073709551615", MaxTimestampMs},
	}
	for _, tc := range tests {
		got := IDMillis(tc.id)
		if got != tc.want {
			t.Errorf("IDMillis(%q) = %d, want %d", tc.id, got, tc.want)
		}
		// What franz-go writes: UnixNano / 1e6, never negative.
		if ts := time.UnixMilli(got).UnixNano() / 1e6; ts != got || ts < 0 {
			t.Errorf("%q: the producer would write %d", tc.id, ts)
		}
	}
}

func TestEntryIDsParseAsRedisWritesThem(t *testing.T) {
	tests := []struct {
		id        string
		ms, seq   uint64
		ok        bool
		canonical string // "" when CanonicalID refuses it
	}{
		{"1700000000000-5", 1700000000000, 5, true, "1700000000000-5"},
		{"0-1", 0, 1, true, "0-1"},
		{"0-0", 0, 0, true, ""},
		{"0017-00", 17, 0, true, "17-0"},
		{"18446744073709551615-18446744073709551615", 1<<64 - 1, 1<<64 - 1, true, "18446744073709551615-18446744073709551615"},
		{"18446744073709551616-0", 0, 0, false, ""},
		{"5", 0, 0, false, ""},
		{"5-", 0, 0, false, ""},
		{"-5", 0, 0, false, ""},
		{"+5-1", 0, 0, false, ""},
		{"5-+1", 0, 0, false, ""},
		{"5-*", 0, 0, false, ""},
		{" 5-1", 0, 0, false, ""},
		{"5-1-2", 0, 0, false, ""},
		{"", 0, 0, false, ""},
	}
	for _, tc := range tests {
		ms, seq, ok := ParseID(tc.id)
		if ok != tc.ok || ok && (ms != tc.ms || seq != tc.seq) {
			t.Errorf("ParseID(%q) = %d, %d, %v, want %d, %d, %v", tc.id, ms, seq, ok, tc.ms, tc.seq, tc.ok)
		}
		got, ok := CanonicalID(tc.id)
		if ok != (tc.canonical != "") || got != tc.canonical {
			t.Errorf("CanonicalID(%q) = %q, %v, want %q", tc.id, got, ok, tc.canonical)
		}
	}
}
