package mapping

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseID reads a stream entry ID <ms>-<seq>, two unsigned 64-bit decimal
// numbers (no sign, no spaces), as Redis writes it and XADD takes it. It is
// the one parser of entry IDs: the checkpoints, both directions and the
// command line all read IDs with it.
func ParseID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// ValidID says whether id is an entry ID ParseID reads.
func ValidID(id string) bool {
	_, _, ok := ParseID(id)
	return ok
}

// CompareIDs orders two entry IDs as Redis does (numerically, the
// milliseconds first): -1, 0 or 1. The milliseconds alone stand for
// <ms>-0, as XGROUP CREATE and XRANGE take them; an ID that does not
// parse counts as 0-0: callers compare IDs Redis wrote or ParseStart
// accepted.
func CompareIDs(a, b string) int {
	am, as := idParts(a)
	bm, bs := idParts(b)
	switch {
	case am < bm:
		return -1
	case am > bm:
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

// idParts reads an ID, or its milliseconds alone, as ParseID does.
func idParts(id string) (ms, seq uint64) {
	if ms, seq, ok := ParseID(id); ok {
		return ms, seq
	}
	if IsDigits(id) {
		ms, _ = strconv.ParseUint(id, 10, 64)
	}
	return ms, 0
}

// IDLess says whether entry ID a comes before b (see CompareIDs).
func IDLess(a, b string) bool { return CompareIDs(a, b) < 0 }

// CanonicalID accepts an entry ID above 0-0, as XADD takes an explicit one,
// and returns it as Redis stores it (no leading zeros), the form a compare
// with a stored ID needs.
func CanonicalID(id string) (string, bool) {
	ms, seq, ok := ParseID(id)
	if !ok || ms == 0 && seq == 0 {
		return "", false
	}
	a, b, _ := strings.Cut(id, "-")
	canonical := func(part string) bool { return part == "0" || part[0] != '0' }
	if canonical(a) && canonical(b) {
		return id, true // as Redis stores it: no allocation
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10), true
}

// MaxTimestampMs is the largest millisecond timestamp a time.Time in
// nanoseconds since 1970 holds (in 2262).
const MaxTimestampMs = math.MaxInt64 / int64(time.Millisecond/time.Nanosecond)

// IDMillis is the millisecond part of entry ID id, clamped to the year
// 2262 (Redis allows up to 2^64-1, a timestamp in nanoseconds does not).
func IDMillis(id string) int64 {
	ms, _, _ := ParseID(id)
	if ms > uint64(MaxTimestampMs) {
		return MaxTimestampMs
	}
	return int64(ms)
}

// IsDigits says whether s is a non-empty run of decimal digits: the
// milliseconds-only form of an ID that XGROUP CREATE and XRANGE take.
func IsDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
