package k2r

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// recordMapping turns Kafka records into stream entries.
type recordMapping struct {
	format mapping.Format
	// headers (json): copy headers other than lineage as fields, after
	// the value's members.
	headers bool
	// valueField and keyField (raw) name the fields of value and key.
	valueField, keyField string
	// preserveIDs takes the entry ID from the xmirror.id header.
	preserveIDs bool
	// maxFields refuses a record mapping to more fields
	// (DefaultMaxFields when zero).
	maxFields int
}

// Why a record cannot become an entry.
var (
	errNullValue   = errors.New("value is null (a tombstone), not a JSON object")
	errNoFields    = errors.New("record maps to no fields, and a stream entry needs at least one")
	errNoLineageID = setting.Errorf("{PreserveIDs}: record has no %s header to take the entry ID from", mapping.HeaderID)
)

// decode appends the fields of r's entry to dst and returns them with the
// entry ID to write ("*": Redis chooses).
func (m *recordMapping) decode(r *kgo.Record, dst []mapping.Field) ([]mapping.Field, string, error) {
	id := "*"
	si, ii := mapping.LineageIndex(r.Headers)
	lineage := si >= 0 || ii >= 0
	if m.preserveIDs && ii >= 0 {
		var ok bool
		if id, ok = mapping.CanonicalID(string(r.Headers[ii].Value)); !ok {
			return dst, "", setting.Errorf("{PreserveIDs}: header %s holds %q, not an entry ID above 0-0", mapping.HeaderID, r.Headers[ii].Value)
		}
	}
	if m.preserveIDs && id == "*" {
		return dst, "", errNoLineageID
	}
	start := len(dst)
	var err error
	switch m.format {
	case mapping.FormatJSON:
		if r.Value == nil {
			return dst, "", errNullValue
		}
		if dst, err = mapping.ParseJSONObject(r.Value, dst); err != nil {
			return dst[:start], "", err
		}
		if m.headers {
			dst = appendHeaderFields(dst, r.Headers, si, ii)
		}
	case mapping.FormatRaw:
		if r.Value != nil {
			dst = append(dst, mapping.Field{Name: m.valueField, Value: string(r.Value)})
		}
		// redis-to-kafka's key is a copy of a field the entry already
		// has: taking it again would add a field the source never had.
		if r.Key != nil && !lineage {
			dst = append(dst, mapping.Field{Name: m.keyField, Value: string(r.Key)})
		}
		dst = appendHeaderFields(dst, r.Headers, si, ii)
	default:
		return dst, "", fmt.Errorf("unknown format %q", m.format)
	}
	limit := m.maxFields
	if limit <= 0 {
		limit = mapping.DefaultMaxFields
	}
	switch n := len(dst) - start; {
	case n == 0:
		return dst, "", errNoFields
	case n > limit:
		return dst[:start], "", &TooManyFieldsError{Fields: n, Limit: limit}
	}
	return dst, id, nil
}

// TooManyFieldsError refuses a record that maps to more fields than
// MaxFields.
type TooManyFieldsError struct {
	Fields, Limit int
}

func (e *TooManyFieldsError) Error() string { return e.RenderSettings(nil) }

// RenderSettings is the error's text with its settings named by names.
func (e *TooManyFieldsError) RenderSettings(names setting.Names) string {
	return setting.Text(names, "record maps to %d fields, more than {MaxFields} allows (%d); pass {MaxFields} %d or more to take it", e.Fields, e.Limit, e.Fields)
}

// appendHeaderFields adds every header but the lineage ones at si and ii
// (see lineageIndex) as fields, in order, with the names redis-to-kafka
// escaped given back (see fieldName).
func appendHeaderFields(dst []mapping.Field, headers []kgo.RecordHeader, si, ii int) []mapping.Field {
	for i, h := range headers {
		if i == si || i == ii {
			continue
		}
		dst = append(dst, mapping.Field{Name: mapping.FieldName(h.Key), Value: string(h.Value)})
	}
	return dst
}
