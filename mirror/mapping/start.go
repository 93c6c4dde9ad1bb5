package mapping

import (
	"fmt"
	"strconv"
)

// Start is where a new mirror starts reading its source.
type Start struct {
	// Latest starts after what the source holds now; otherwise a mirror
	// starts at the beginning, or at ID.
	Latest bool
	// ID is an entry ID (or its milliseconds alone) to start at, in a
	// stream; "" for the beginning or the end.
	ID string
}

// The names of the two ends.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// ParseStart reads "earliest", "latest" or, when ids, an entry ID
// (<ms>-<seq>, or <ms> alone as XGROUP CREATE takes it).
func ParseStart(s string, ids bool) (Start, error) {
	switch s {
	case StartEarliest:
		return Start{}, nil
	case StartLatest:
		return Start{Latest: true}, nil
	}
	if ids && (ValidID(s) || isMillis(s)) {
		return Start{ID: s}, nil
	}
	if !ids {
		return Start{}, fmt.Errorf("must be %s or %s, got %q", StartEarliest, StartLatest, s)
	}
	return Start{}, fmt.Errorf("must be %s, %s or an entry ID such as 1700000000000-0, got %q", StartEarliest, StartLatest, s)
}

// isMillis says whether s is the milliseconds of an ID alone: digits that
// fit in 64 bits, as Redis takes them (more would be refused by XGROUP
// CREATE, and compare as 0-0).
func isMillis(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil && IsDigits(s)
}

// StreamID is the ID XGROUP CREATE takes for s: 0 for the beginning, $
// for the end, or s's ID.
func (s Start) StreamID() string {
	switch {
	case s.Latest:
		return "$"
	case s.ID != "":
		return s.ID
	}
	return "0"
}
