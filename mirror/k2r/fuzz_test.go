package k2r

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror/mapping"
)

// FuzzParseStreamTemplate: no stream template makes the parser panic; it
// accepts what the name template parser accepts (but the empty template);
// a refusal names the template; and the stream of a template that uses
// {topic} ({partition}) tells apart every topic (partition number).
func FuzzParseStreamTemplate(f *testing.F) {
	for _, s := range []string{"{topic}", "copy:{topic}:{partition}", "all", "{{{topic}}}-copy", "a{{b}}c",
		"{partition}{topic}", "", "{topc}", "{}", "x{topic", "x}y", "{{topic}", "{partition}", "{stream}"} {
		f.Add(s, "orders", "orders.v2", int32(0), int32(10))
	}
	f.Fuzz(func(t *testing.T, s, topic1, topic2 string, p1, p2 int32) {
		tm, err := ParseStreamTemplate(s)
		_, merr := mapping.ParseTemplate(s, "topic", "partition")
		if (err == nil) != (merr == nil && s != "") {
			t.Fatalf("%q: stream template %v, name template %v", s, err, merr)
		}
		if err != nil {
			if msg := err.Error(); msg == "" || s != "" && !strings.Contains(msg, strconv.Quote(s)) {
				t.Fatalf("%q: error %q does not name the template", s, msg)
			}
			return
		}
		a := tm.Stream(topic1, p1)
		if a != tm.Stream(topic1, p1) {
			t.Fatalf("%q: two streams for %s/%d", s, topic1, p1)
		}
		if tm.Uses("topic") && topic1 != topic2 && a == tm.Stream(topic2, p1) {
			t.Fatalf("%q: topics %q and %q share stream %q", s, topic1, topic2, a)
		}
		if tm.Uses("partition") && p1 != p2 && a == tm.Stream(topic1, p2) {
			t.Fatalf("%q: partitions %d and %d share stream %q", s, p1, p2, a)
		}
		if !tm.Uses("topic") && !tm.Uses("partition") && a != tm.Stream(topic2, p2) {
			t.Fatalf("%q: a template without placeholders names two streams", s)
		}
		if err := tm.CheckTopics([]string{topic1, topic2}); (err != nil) != (tm.Uses("partition") && !tm.Uses("topic")) {
			t.Fatalf("%q: CheckTopics = %v", s, err)
		}
	})
}

// entryFields makes an entry's fields from fuzzer input: names and values
// alternate, separated by NUL bytes, so any number of fields, duplicate
// names (a second value field, a field called key or xmirror.id) and binary
// values are reached.
func entryFields(in string) []mapping.Field {
	parts := strings.Split(in, "\x00")
	var fields []mapping.Field
	for i := 0; i+1 < len(parts); i += 2 {
		fields = append(fields, mapping.Field{Name: parts[i], Value: parts[i+1]})
	}
	return fields
}

// asRedisToKafkaWrites is the record redis-to-kafka makes of an entry (see
// the README's mapping; the test shares no code with its producer): the
// lineage headers first, the key copied from the first key field, and in
// raw the first value field as the value, every other field a header under
// HeaderKey; in json all fields as one object.
func asRedisToKafkaWrites(raw bool, stream, id string, fields []mapping.Field) *kgo.Record {
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: mapping.HeaderStream, Value: []byte(stream)}, {Key: mapping.HeaderID, Value: []byte(id)}}}
	valueSet := false
	for _, f := range fields {
		if r.Key == nil && f.Name == "key" {
			r.Key = []byte(f.Value)
		}
		if !raw {
			continue
		}
		if !valueSet && f.Name == "value" {
			r.Value, valueSet = []byte(f.Value), true
			continue
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: mapping.HeaderKey(f.Name), Value: []byte(f.Value)})
	}
	if !raw {
		r.Value = mapping.AppendJSONObject(nil, fields)
	}
	return r
}

// FuzzK2RRoundTrip: an entry of any fields that redis-to-kafka wrote comes
// back with the same fields, in order (in raw, the value field first),
// duplicates and bytes that are not UTF-8 included, with no field of
// xmirror's lineage added, and with its entry ID when IDs are preserved.
func FuzzK2RRoundTrip(f *testing.F) {
	f.Add("value\x00\xff\xfe\x00a\x001\x00a\x002", false, true)
	f.Add("a\x001\x00value\x00v\x00value\x00w\x00key\x00k", true, false)
	f.Add("xmirror.id\x009-9\x00xmirror.stream\x00t\x00xmirror.xmirror.id\x00x\x00xmirror.\x00", true, true)
	f.Add("\x00\x00", false, false)
	f.Add("value\x00", true, true)
	f.Fuzz(func(t *testing.T, in string, raw, preserve bool) {
		fields := entryFields(in)
		if len(fields) == 0 {
			return // Redis keeps no entry without fields
		}
		format := mapping.FormatJSON
		if raw {
			format = mapping.FormatRaw
		}
		m := recordMapping{format: format, valueField: "value", keyField: "key", preserveIDs: preserve}
		const id = "1700000000000-7"
		got, gotID, err := m.decode(asRedisToKafkaWrites(raw, "s", id, fields), nil)
		if err != nil {
			t.Fatalf("%s entry %q: %v", format, fields, err)
		}
		want := fields
		if raw {
			want = nil
			rest := fields
			for i, f := range fields {
				if f.Name == "value" {
					want = append(want, f)
					rest = append(append([]mapping.Field{}, fields[:i]...), fields[i+1:]...)
					break
				}
			}
			want = append(want, rest...)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s entry %q comes back as %q, want %q", format, fields, got, want)
		}
		if wantID := map[bool]string{true: id, false: "*"}[preserve]; gotID != wantID {
			t.Fatalf("%s entry %q: ID %q, want %q", format, fields, gotID, wantID)
		}
	})
}
