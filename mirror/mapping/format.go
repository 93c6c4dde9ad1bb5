package mapping

import "fmt"

// Format is how an entry becomes a record value (and back).
type Format string

// Formats.
const (
	// FormatJSON: the value is a JSON object of the entry's fields.
	FormatJSON Format = "json"
	// FormatRaw: the value is one field's bytes, the other fields headers.
	FormatRaw Format = "raw"
)

// ParseFormat accepts "json" or "raw".
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatJSON, FormatRaw:
		return f, nil
	}
	return "", fmt.Errorf("must be json or raw, got %q", s)
}

// Defaults of the raw format's field names, in both directions.
const (
	DefaultValueField = "value"
	DefaultKeyField   = "key"
)

// DefaultMaxFields is the most fields kafka-to-redis makes one entry of,
// and above which redis-to-kafka warns. Redis itself sets
// no such bound: XADD takes up to 2^31 arguments, and a batch's XADDs go
// through MULTI/EXEC, not a script's argument list (which is what an
// earlier bound of 3,000 was sized for). What is left to bound is memory:
// a record is decoded whole, and its fields become XADD arguments, about
// 200 bytes per field in all (an entry of a million one-byte fields
// peaked at 220 MiB), so a hostile record cannot take much more than that.
// redis-to-kafka reading such an entry costs about as much.
const DefaultMaxFields = 1_000_000
