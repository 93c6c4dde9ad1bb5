package r2k

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// fields builds an entry's fields from name, value pairs.
func fields(nv ...string) []mapping.Field {
	fs := make([]mapping.Field, 0, len(nv)/2)
	for i := 0; i+1 < len(nv); i += 2 {
		fs = append(fs, mapping.Field{Name: nv[i], Value: nv[i+1]})
	}
	return fs
}

// headerPairs is r's headers as name, value pairs.
func headerPairs(r *kgo.Record) []string {
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, h.Key, string(h.Value))
	}
	return hs
}

// built is one record as the test expects it: nil key or value means
// none (null), distinct from an empty one.
type built struct {
	key, value []byte
	headers    []string // name, value pairs, lineage first
	ts         int64    // Unix ms
}

func TestBuildRecordFollowsTheMapping(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_123)
	lineage := func(more ...string) []string {
		return append([]string{mapping.HeaderStream, "orders", mapping.HeaderID, "1700000000000-5"}, more...)
	}
	const id = "1700000000000-5"
	tests := []struct {
		name   string
		cfg    KafkaSinkConfig
		id     string
		fields []mapping.Field
		want   built
	}{
		{"json: the fields as one object, in order, lineage alone as headers",
			KafkaSinkConfig{Format: mapping.FormatJSON}, id, fields("order", "1", "amount", "7.50"),
			built{value: []byte(`{"order":"1","amount":"7.50"}`), headers: lineage(), ts: 1700000000000}},
		{"json: duplicate names kept as duplicate members",
			KafkaSinkConfig{Format: mapping.FormatJSON}, id, fields("a", "1", "a", "2"),
			built{value: []byte(`{"a":"1","a":"2"}`), headers: lineage(), ts: 1700000000000}},
		{"json: names in xmirror's namespace are not renamed inside the value",
			KafkaSinkConfig{Format: mapping.FormatJSON}, id, fields(mapping.HeaderID, "x"),
			built{value: []byte(`{"xmirror.id":"x"}`), headers: lineage(), ts: 1700000000000}},
		{"json: quote, backslash and control bytes escaped, bytes that are not UTF-8 copied",
			KafkaSinkConfig{Format: mapping.FormatJSON}, id, fields("q\"\\", "\n\r\t\x00\x1f", "bin", "\xff\xfe\x80é"),
			built{value: []byte("{\"q\\\"\\\\\":\"\\n\\r\\t\\u0000\\u001f\",\"bin\":\"\xff\xfe\x80é\"}"), headers: lineage(), ts: 1700000000000}},
		{"json: an entry without fields is an empty object",
			KafkaSinkConfig{Format: mapping.FormatJSON}, id, nil,
			built{value: []byte(`{}`), headers: lineage(), ts: 1700000000000}},
		{"json: empty names and values",
			KafkaSinkConfig{Format: mapping.FormatJSON}, id, fields("", ""),
			built{value: []byte(`{"":""}`), headers: lineage(), ts: 1700000000000}},
		{"json: the key field stays in the value too",
			KafkaSinkConfig{Format: mapping.FormatJSON, KeyField: "customer"}, id, fields("order", "1", "customer", "c7"),
			built{key: []byte("c7"), value: []byte(`{"order":"1","customer":"c7"}`), headers: lineage(), ts: 1700000000000}},
		{"raw: the value field is the value, the others headers after lineage, in order",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("a", "1", "value", "payload", "b", "2"),
			built{value: []byte("payload"), headers: lineage("a", "1", "b", "2"), ts: 1700000000000}},
		{"raw: the first value field is the value, a repeat of it a header",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("value", "first", "value", "second"),
			built{value: []byte("first"), headers: lineage("value", "second"), ts: 1700000000000}},
		{"raw: another value field name",
			KafkaSinkConfig{Format: mapping.FormatRaw, ValueField: "payload"}, id, fields("value", "v", "payload", "p"),
			built{value: []byte("p"), headers: lineage("value", "v"), ts: 1700000000000}},
		{"raw: no value field is a null value",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("a", "1"),
			built{value: nil, headers: lineage("a", "1"), ts: 1700000000000}},
		{"raw: an empty value field is an empty value, not a null one",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("value", ""),
			built{value: []byte{}, headers: lineage(), ts: 1700000000000}},
		{"raw: empty names and values of headers",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("", "", "e", ""),
			built{value: nil, headers: lineage("", "", "e", ""), ts: 1700000000000}},
		{"raw: duplicate header names kept, in order",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("a", "1", "b", "x", "a", "2"),
			built{value: nil, headers: lineage("a", "1", "b", "x", "a", "2"), ts: 1700000000000}},
		{"raw: names in xmirror's namespace get the prefix once more, others kept as they are",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields(mapping.HeaderID, "fake", mapping.HeaderStream, "fake", "xmirror.", "p", "xmirror.xmirror.id", "pp", "XMIRROR.ID", "upper", "xmirror", "bare"),
			built{value: nil, headers: lineage("xmirror.xmirror.id", "fake", "xmirror.xmirror.stream", "fake", "xmirror.xmirror.", "p", "xmirror.xmirror.xmirror.id", "pp", "XMIRROR.ID", "upper", "xmirror", "bare"), ts: 1700000000000}},
		{"raw: binary bytes in names and values copied as they are",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("\x00\xff", "\xff\x00\n", "value", "\x89PNG\r\n\x1a\n\x00"),
			built{value: []byte("\x89PNG\r\n\x1a\n\x00"), headers: lineage("\x00\xff", "\xff\x00\n"), ts: 1700000000000}},
		{"raw: the key field is the key and stays a header",
			KafkaSinkConfig{Format: mapping.FormatRaw, KeyField: "customer"}, id, fields("customer", "c7", "value", "v"),
			built{key: []byte("c7"), value: []byte("v"), headers: lineage("customer", "c7"), ts: 1700000000000}},
		{"raw: the key field may be the value field",
			KafkaSinkConfig{Format: mapping.FormatRaw, KeyField: "value"}, id, fields("value", "v"),
			built{key: []byte("v"), value: []byte("v"), headers: lineage(), ts: 1700000000000}},
		{"key: the first occurrence of the key field",
			KafkaSinkConfig{Format: mapping.FormatRaw, KeyField: "k"}, id, fields("k", "first", "k", "second"),
			built{key: []byte("first"), value: nil, headers: lineage("k", "first", "k", "second"), ts: 1700000000000}},
		{"key: an empty first occurrence is an empty key, and it counts",
			KafkaSinkConfig{Format: mapping.FormatJSON, KeyField: "k"}, id, fields("k", "", "k", "second"),
			built{key: []byte{}, value: []byte(`{"k":"","k":"second"}`), headers: lineage(), ts: 1700000000000}},
		{"key: no key field in the entry is no key",
			KafkaSinkConfig{Format: mapping.FormatJSON, KeyField: "k"}, id, fields("a", "1"),
			built{key: nil, value: []byte(`{"a":"1"}`), headers: lineage(), ts: 1700000000000}},
		{"key: none without a key field set, even for a field named as empty",
			KafkaSinkConfig{Format: mapping.FormatRaw}, id, fields("", "x"),
			built{key: nil, value: nil, headers: lineage("", "x"), ts: 1700000000000}},
		{"timestamp id: the millisecond part of the ID",
			KafkaSinkConfig{Format: mapping.FormatRaw, Timestamp: TimestampID}, "1700000000999-18446744073709551615", nil,
			built{headers: []string{mapping.HeaderStream, "orders", mapping.HeaderID, "1700000000999-18446744073709551615"}, ts: 1700000000999}},
		{"timestamp id: zero",
			KafkaSinkConfig{Format: mapping.FormatRaw}, "0-1", nil,
			built{headers: []string{mapping.HeaderStream, "orders", mapping.HeaderID, "0-1"}, ts: 0}},
		{"timestamp id: the largest the producer can write",
			KafkaSinkConfig{Format: mapping.FormatRaw}, "9223372036854-0", nil,
			built{headers: []string{mapping.HeaderStream, "orders", mapping.HeaderID, "9223372036854-0"}, ts: mapping.MaxTimestampMs}},
		{"timestamp id: a larger ID clamped, never negative",
			KafkaSinkConfig{Format: mapping.FormatRaw}, "18446744073709551615-18446744073709551615", nil,
			built{headers: []string{mapping.HeaderStream, "orders", mapping.HeaderID, "18446744073709551615-18446744073709551615"}, ts: mapping.MaxTimestampMs}},
		{"timestamp now: the time the batch is produced, whatever the ID",
			KafkaSinkConfig{Format: mapping.FormatJSON, Timestamp: TimestampNow}, "18446744073709551615-0", nil,
			built{value: []byte(`{}`), headers: []string{mapping.HeaderStream, "orders", mapping.HeaderID, "18446744073709551615-0"}, ts: now.UnixMilli()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Topics = map[string]string{"orders": "orders-topic"}
			k := NewKafkaSink(tc.cfg)
			e := &Entry{Stream: "orders", ID: tc.id, Fields: tc.fields}
			var r kgo.Record
			headers, arena := k.buildRecord(&r, e, nil, nil, now)
			if r.Topic != "orders-topic" {
				t.Errorf("topic %q, want orders-topic", r.Topic)
			}
			if got := r.Timestamp.UnixMilli(); got != tc.want.ts {
				t.Errorf("timestamp %d, want %d", got, tc.want.ts)
			}
			if !sameBytes(r.Key, tc.want.key) {
				t.Errorf("key %q (nil %v), want %q (nil %v)", r.Key, r.Key == nil, tc.want.key, tc.want.key == nil)
			}
			if !sameBytes(r.Value, tc.want.value) {
				t.Errorf("value %q (nil %v), want %q (nil %v)", r.Value, r.Value == nil, tc.want.value, tc.want.value == nil)
			}
			if got := headerPairs(&r); strings.Join(got, "\x00|") != strings.Join(tc.want.headers, "\x00|") || len(got) != len(tc.want.headers) {
				t.Errorf("headers %q, want %q", got, tc.want.headers)
			}
			if len(headers) != len(r.Headers) {
				t.Errorf("%d headers appended, the record has %d", len(headers), len(r.Headers))
			}
			if tc.cfg.Format == mapping.FormatJSON && string(arena) != string(r.Value) {
				t.Errorf("arena %q, want the value %q", arena, r.Value)
			}
			if tc.cfg.Format == mapping.FormatRaw && arena != nil {
				t.Errorf("raw appended %q to the arena", arena)
			}
		})
	}
}

// sameBytes compares b with want, telling nil (none) from empty.
func sameBytes(b, want []byte) bool {
	return (b == nil) == (want == nil) && string(b) == string(want)
}

// TestBuildRecordsShareTheBatchBuffers pins what Write relies on: the
// records of a batch take their headers and JSON values from the batch's
// buffers, each capped at its own part so that nothing appended later
// reaches into it, and raw values and header values are the entries'
// strings, not copies.
func TestBuildRecordsShareTheBatchBuffers(t *testing.T) {
	for _, format := range []mapping.Format{mapping.FormatJSON, mapping.FormatRaw} {
		t.Run(string(format), func(t *testing.T) {
			k := NewKafkaSink(KafkaSinkConfig{Topics: map[string]string{"s": "t"}, Format: format})
			b := &EntryBatch{Entries: []Entry{
				{Stream: "s", ID: "1-0", Fields: fields("value", "one", "a", "1")},
				{Stream: "s", ID: "2-0", Fields: fields("value", "two", "b", "2", "c", "3")},
				{Stream: "s", ID: "3-0", Fields: fields("value", "three")},
			}}
			for _, e := range b.Entries {
				b.size += entrySize(e)
			}
			headers, arena := k.recordBuffers(b)
			records := b.records
			hbase, abase := unsafe.SliceData(headers), unsafe.SliceData(arena)
			for i := range b.Entries {
				headers, arena = k.buildRecord(&records[i], &b.Entries[i], headers, arena, time.Now())
			}
			if unsafe.SliceData(headers) != hbase || (format == mapping.FormatJSON && unsafe.SliceData(arena) != abase) {
				t.Fatalf("the batch's buffers grew: sized %d headers and %d arena bytes", cap(headers), cap(arena))
			}
			wantHeaders := []int{2 + 1, 2 + 2, 2}
			if format == mapping.FormatJSON {
				wantHeaders = []int{2, 2, 2}
			}
			for i := range records {
				r := &records[i]
				if len(r.Headers) != wantHeaders[i] || cap(r.Headers) != len(r.Headers) {
					t.Errorf("record %d: %d headers (cap %d), want %d capped", i, len(r.Headers), cap(r.Headers), wantHeaders[i])
				}
				if cap(r.Value) != len(r.Value) {
					t.Errorf("record %d: value of %d bytes has cap %d: appending to it would overwrite the next", i, len(r.Value), cap(r.Value))
				}
				e := &b.Entries[i]
				if format == mapping.FormatRaw && unsafe.SliceData(r.Value) != unsafe.StringData(e.Fields[0].Value) {
					t.Errorf("record %d: the raw value is a copy", i)
				}
				if unsafe.SliceData(r.Headers[1].Value) != unsafe.StringData(e.ID) {
					t.Errorf("record %d: the ID header is a copy", i)
				}
			}
			if format == mapping.FormatJSON {
				if got := string(records[1].Value); got != `{"value":"two","b":"2","c":"3"}` {
					t.Errorf("record 1's value %s", got)
				}
			}
		})
	}
}

// TestBuildingABatchAllocatesPerBatchNotPerEntry pins the hot path: a
// batch costs one allocation for its records, one for their headers and,
// in json, one for their values, however many entries it has, as long as
// the entries' JSON fits the arena's estimate (16 bytes per entry beyond
// the fields' own bytes).
func TestBuildingABatchAllocatesPerBatchNotPerEntry(t *testing.T) {
	for _, tc := range []struct {
		format mapping.Format
		want   float64
	}{{mapping.FormatJSON, 3}, {mapping.FormatRaw, 2}} {
		for _, n := range []int{1, 2000} {
			k := NewKafkaSink(KafkaSinkConfig{Topics: map[string]string{"orders": "orders"}, Format: tc.format, KeyField: "customer"})
			b := &EntryBatch{Entries: make([]Entry, n)}
			for i := range b.Entries {
				// Two fields: {"customer":"…","value":"…"} is 13 bytes
				// beyond the fields' own.
				b.Entries[i] = Entry{Stream: "orders", ID: strconv.Itoa(1700000000000+i) + "-0", Fields: fields("customer", "c"+strconv.Itoa(i%97), "value", strings.Repeat("x", 100))}
				b.size += entrySize(b.Entries[i])
			}
			now := time.Now()
			got := testing.AllocsPerRun(20, func() { buildBatch(k, b, now) })
			if got != tc.want {
				t.Errorf("%s, %d entries: %v allocations per batch, want %v", tc.format, n, got, tc.want)
			}
		}
	}
}

// TestBuiltRecordRefusedForItsTimestamp: the record of an entry whose ID
// is beyond its topic's timestamp bounds is refused before it is produced,
// unless it is stamped with the time it is produced.
func TestBuiltRecordRefusedForItsTimestamp(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	ahead := strconv.FormatInt(now.Add(2*time.Hour).UnixMilli(), 10) + "-0"
	behind := strconv.FormatInt(now.Add(-48*time.Hour).UnixMilli(), 10) + "-0"
	pol := timestampPolicy(map[string]string{"message.timestamp.after.max.ms": "3600000", "message.timestamp.before.max.ms": "86400000"})
	tests := []struct {
		name   string
		ts     TimestampSource
		id     string
		limit  int32
		refuse error // nil: accepted
	}{
		{"id, within the bounds", TimestampID, strconv.FormatInt(now.UnixMilli(), 10) + "-0", 0, nil},
		{"id, 2 h ahead", TimestampID, ahead, 0, kerr.InvalidTimestamp},
		{"id, 2 days behind", TimestampID, behind, 0, kerr.InvalidTimestamp},
		{"id, clamped to year 2262", TimestampID, "18446744073709551615-0", 0, kerr.InvalidTimestamp},
		{"now, 2 h ahead", TimestampNow, ahead, 0, nil},
		{"now, 2 days behind", TimestampNow, behind, 0, nil},
		{"too large for its topic", TimestampNow, ahead, 80, kerr.MessageTooLarge},
	}
	for _, tc := range tests {
		k := NewKafkaSink(KafkaSinkConfig{Topics: map[string]string{"s": "t"}, Format: mapping.FormatRaw, Timestamp: tc.ts,
			Limits: map[string]kafkatopic.RecordLimit{"t": {Bytes: tc.limit, Setting: kafkatopic.SettingTopic}}})
		var r kgo.Record
		k.buildRecord(&r, &Entry{Stream: "s", ID: tc.id, Fields: fields("value", "v")}, nil, nil, now)
		err := k.refusal(&r, now, pol, true)
		switch {
		case tc.refuse == nil && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.refuse != nil && !errors.Is(err, tc.refuse):
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.refuse)
		}
	}
}

// benchBatch is a batch of n entries as a stream of orders gives them: a
// few short fields and a payload of 100 bytes.
func benchBatch(n int) *EntryBatch {
	b := &EntryBatch{Entries: make([]Entry, n)}
	payload := strings.Repeat("x", 100)
	for i := range b.Entries {
		b.Entries[i] = Entry{Stream: "orders", ID: strconv.Itoa(1700000000000+i) + "-0", Fields: []mapping.Field{
			{Name: "customer", Value: "c" + strconv.Itoa(i%97)},
			{Name: "value", Value: payload},
			{Name: "amount", Value: "7.50"},
		}}
		b.size += entrySize(b.Entries[i])
	}
	b.written = n
	return b
}

// buildBatch builds every record of b as Write does, without producing.
func buildBatch(k *KafkaSink, b *EntryBatch, now time.Time) {
	headers, arena := k.recordBuffers(b)
	records := b.records
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.skip != skipNone {
			continue
		}
		headers, arena = k.buildRecord(&records[i], e, headers, arena, now)
	}
}

// BenchmarkBuildRecords builds the records of a batch of 2000 entries, in
// each format, with a key field.
func BenchmarkBuildRecords(b *testing.B) {
	for _, format := range []mapping.Format{mapping.FormatJSON, mapping.FormatRaw} {
		b.Run(string(format), func(b *testing.B) {
			k := NewKafkaSink(KafkaSinkConfig{Topics: map[string]string{"orders": "orders"}, Format: format, KeyField: "customer"})
			batch := benchBatch(2000)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				buildBatch(k, batch, now)
			}
		})
	}
}
