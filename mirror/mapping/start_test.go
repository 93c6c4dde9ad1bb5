package mapping

import (
	"strings"
	"testing"
)

func TestParseStartTakesOnlyIDsRedisTakes(t *testing.T) {
	for s, want := range map[string]string{"earliest": "0", "latest": "$", "1700000000000-0": "1700000000000-0", "1700000000000": "1700000000000", "18446744073709551615": "18446744073709551615"} {
		if st, err := ParseStart(s, true); err != nil || st.StreamID() != want {
			t.Errorf("ParseStart(%q) = %+v, %v; want %s", s, st, err, want)
		}
	}
	for _, s := range []string{"18446744073709551616", "99999999999999999999", "+1", "1-", "$", "Latest", ""} {
		if st, err := ParseStart(s, true); err == nil || !strings.Contains(err.Error(), "entry ID") {
			t.Errorf("ParseStart(%q) = %+v, %v; want it refused", s, st, err)
		}
	}
	if _, err := ParseStart("1-0", false); err == nil {
		t.Error("an ID is taken where only the ends are")
	}
}
