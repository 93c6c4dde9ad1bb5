package k2r

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror/mapping"
)

func hdr(kv ...string) []kgo.RecordHeader {
	var h []kgo.RecordHeader
	for i := 0; i < len(kv); i += 2 {
		h = append(h, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return h
}

func TestRecordMapping(t *testing.T) {
	json := recordMapping{format: mapping.FormatJSON, valueField: "value", keyField: "key"}
	jsonHeaders := json
	jsonHeaders.headers = true
	raw := recordMapping{format: mapping.FormatRaw, valueField: "value", keyField: "key"}
	rawPayload := recordMapping{format: mapping.FormatRaw, valueField: "payload", keyField: "k"}
	preserve := raw
	preserve.preserveIDs = true
	preservePayload := rawPayload
	preservePayload.preserveIDs = true
	lineage := hdr(mapping.HeaderStream, "orders", mapping.HeaderID, "1700000000000-3")
	tests := []struct {
		name   string
		m      recordMapping
		rec    kgo.Record
		want   []mapping.Field
		wantID string
		err    string
	}{
		{name: "json members in order, duplicates kept", m: json,
			rec:  kgo.Record{Value: []byte(`{"b":"2","a":"1","b":"3"}`)},
			want: []mapping.Field{{Name: "b", Value: "2"}, {Name: "a", Value: "1"}, {Name: "b", Value: "3"}}, wantID: "*"},
		{name: "json non-UTF-8 bytes verbatim", m: json,
			rec:  kgo.Record{Value: []byte("{\"k\":\"\xff\xfe\"}")},
			want: []mapping.Field{{Name: "k", Value: "\xff\xfe"}}, wantID: "*"},
		{name: "json ignores key and headers by default", m: json,
			rec:  kgo.Record{Key: []byte("k"), Value: []byte(`{"a":"1"}`), Headers: hdr("h", "v")},
			want: []mapping.Field{{Name: "a", Value: "1"}}, wantID: "*"},
		{name: "json --headers appends headers but not lineage", m: jsonHeaders,
			rec:  kgo.Record{Value: []byte(`{"a":"1"}`), Headers: append(hdr("h", "v"), lineage...)},
			want: []mapping.Field{{Name: "a", Value: "1"}, {Name: "h", Value: "v"}}, wantID: "*"},
		{name: "json lineage never becomes a field", m: json,
			rec:  kgo.Record{Value: []byte(`{"a":"1"}`), Headers: lineage},
			want: []mapping.Field{{Name: "a", Value: "1"}}, wantID: "*"},
		{name: "json not an object", m: json, rec: kgo.Record{Value: []byte(`["a"]`)}, err: "not a JSON object"},
		{name: "json number member", m: json, rec: kgo.Record{Value: []byte(`{"a":1}`)}, err: "not a JSON string"},
		{name: "json null value", m: json, rec: kgo.Record{}, err: "tombstone"},
		{name: "json empty object", m: json, rec: kgo.Record{Value: []byte(`{}`)}, err: "no fields"},
		{name: "json trailing data", m: json, rec: kgo.Record{Value: []byte(`{"a":"1"} x`)}, err: "after the JSON object"},
		{name: "raw value key headers in order", m: raw,
			rec:  kgo.Record{Key: []byte("K"), Value: []byte("V"), Headers: hdr("h1", "a", "h2", "b")},
			want: []mapping.Field{{Name: "value", Value: "V"}, {Name: "key", Value: "K"}, {Name: "h1", Value: "a"}, {Name: "h2", Value: "b"}}, wantID: "*"},
		{name: "raw empty value is a field, null is not", m: raw,
			rec:  kgo.Record{Value: []byte{}, Headers: hdr("h", "")},
			want: []mapping.Field{{Name: "value", Value: ""}, {Name: "h", Value: ""}}, wantID: "*"},
		{name: "raw null value without key", m: raw,
			rec:  kgo.Record{Headers: hdr("h", "x")},
			want: []mapping.Field{{Name: "h", Value: "x"}}, wantID: "*"},
		{name: "raw with lineage skips the key, a copy of a field", m: raw,
			rec:  kgo.Record{Key: []byte("c1"), Value: []byte("V"), Headers: append(hdr("customer", "c1"), lineage...)},
			want: []mapping.Field{{Name: "value", Value: "V"}, {Name: "customer", Value: "c1"}}, wantID: "*"},
		{name: "raw header named value collides and is kept", m: raw,
			rec:  kgo.Record{Value: []byte("V"), Headers: hdr("value", "W")},
			want: []mapping.Field{{Name: "value", Value: "V"}, {Name: "value", Value: "W"}}, wantID: "*"},
		{name: "raw custom field names", m: rawPayload,
			rec:  kgo.Record{Key: []byte("K"), Value: []byte("V")},
			want: []mapping.Field{{Name: "payload", Value: "V"}, {Name: "k", Value: "K"}}, wantID: "*"},
		{name: "raw nothing at all", m: raw, rec: kgo.Record{}, err: "no fields"},
		// Fields in xmirror's namespace, as redis-to-kafka escapes them.
		{name: "raw escaped names come back, lineage stays the ID", m: preservePayload,
			rec: kgo.Record{Value: []byte("b"), Headers: append(lineage[:2:2],
				hdr("xmirror.xmirror.id", "9999999999999-0", "xmirror.xmirror.stream", "other",
					"xmirror.xmirror.", "p", "xmirror.xmirror.xmirror.id", "q", "xmirror.xmirror.\xff", "r")...)},
			want: []mapping.Field{{Name: "payload", Value: "b"}, {Name: "xmirror.id", Value: "9999999999999-0"}, {Name: "xmirror.stream", Value: "other"},
				{Name: "xmirror.", Value: "p"}, {Name: "xmirror.xmirror.id", Value: "q"}, {Name: "xmirror.\xff", Value: "r"}},
			wantID: "1700000000000-3"},
		{name: "raw escaped names without preserve ids", m: rawPayload,
			rec:  kgo.Record{Key: []byte("K"), Value: []byte("b"), Headers: append(lineage[:2:2], hdr("xmirror.xmirror.id", "x")...)},
			want: []mapping.Field{{Name: "payload", Value: "b"}, {Name: "xmirror.id", Value: "x"}}, wantID: "*"},
		{name: "raw names outside the namespace are not lineage", m: preservePayload,
			rec:  kgo.Record{Value: []byte("b"), Headers: append(lineage[:2:2], hdr("XMIRROR.ID", "1-1", "", "e", "\xff", "f")...)},
			want: []mapping.Field{{Name: "payload", Value: "b"}, {Name: "XMIRROR.ID", Value: "1-1"}, {Name: "", Value: "e"}, {Name: "\xff", Value: "f"}}, wantID: "1700000000000-3"},
		{name: "raw headers of another producer in the namespace are copied as they are", m: raw,
			rec:  kgo.Record{Value: []byte("V"), Headers: hdr("xmirror.trace", "t", "xmirror.", "u")},
			want: []mapping.Field{{Name: "value", Value: "V"}, {Name: "xmirror.trace", Value: "t"}, {Name: "xmirror.", Value: "u"}}, wantID: "*"},
		// An earlier redis-to-kafka wrote a field named like a lineage
		// header unescaped, after the lineage.
		{name: "raw lineage header twice: the first is lineage, the second a field", m: preservePayload,
			rec:  kgo.Record{Value: []byte("b"), Headers: append(lineage[:2:2], hdr(mapping.HeaderID, "9999999999999-0", mapping.HeaderStream, "other")...)},
			want: []mapping.Field{{Name: "payload", Value: "b"}, {Name: "xmirror.id", Value: "9999999999999-0"}, {Name: "xmirror.stream", Value: "other"}}, wantID: "1700000000000-3"},
		{name: "raw escaped id alone is no lineage", m: preserve,
			rec: kgo.Record{Value: []byte("V"), Headers: hdr("xmirror.xmirror.id", "1-1")}, err: "no xmirror.id"},
		{name: "json --headers gives escaped names back", m: jsonHeaders,
			rec:  kgo.Record{Value: []byte(`{"xmirror.id":"1"}`), Headers: append(lineage[:2:2], hdr("xmirror.xmirror.id", "2", "xmirror.trace", "3")...)},
			want: []mapping.Field{{Name: "xmirror.id", Value: "1"}, {Name: "xmirror.id", Value: "2"}, {Name: "xmirror.trace", Value: "3"}}, wantID: "*"},
		{name: "json members are never unescaped", m: json,
			rec:  kgo.Record{Value: []byte(`{"xmirror.xmirror.id":"1","xmirror.id":"2"}`), Headers: lineage},
			want: []mapping.Field{{Name: "xmirror.xmirror.id", Value: "1"}, {Name: "xmirror.id", Value: "2"}}, wantID: "*"},
		{name: "preserve ids", m: preserve,
			rec:  kgo.Record{Value: []byte("V"), Headers: lineage},
			want: []mapping.Field{{Name: "value", Value: "V"}}, wantID: "1700000000000-3"},
		{name: "preserve ids as Redis stores them, without leading zeros", m: preserve,
			rec:  kgo.Record{Value: []byte("V"), Headers: hdr(mapping.HeaderID, "0017-00")},
			want: []mapping.Field{{Name: "value", Value: "V"}}, wantID: "17-0"},
		{name: "preserve ids of ms 0", m: preserve,
			rec:  kgo.Record{Value: []byte("V"), Headers: hdr(mapping.HeaderID, "0-5")},
			want: []mapping.Field{{Name: "value", Value: "V"}}, wantID: "0-5"},
		{name: "preserve ids without header", m: preserve, rec: kgo.Record{Value: []byte("V")}, err: "no xmirror.id"},
		{name: "preserve ids bad header", m: preserve,
			rec: kgo.Record{Value: []byte("V"), Headers: hdr(mapping.HeaderID, "0-0")}, err: "not an entry ID"},
		{name: "preserve ids header with star", m: preserve,
			rec: kgo.Record{Value: []byte("V"), Headers: hdr(mapping.HeaderID, "5-*")}, err: "not an entry ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, id, err := tt.m.decode(&tt.rec, nil)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) || id != tt.wantID {
				t.Errorf("got %q id %q, want %q id %q", got, id, tt.want, tt.wantID)
			}
		})
	}
}

// The json mapping is the inverse of appendJSONObject for any fields.
func FuzzK2RDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"a":"1"}`))
	f.Add([]byte(`{"a":"1","a":"\u00e9\ud83d\ude00"}`))
	f.Add([]byte("{\"\xff\":\"\x00\"}"))
	f.Add([]byte(`{ "a" : "x\"y\\z\n" }`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"a":"\ud800"}`))
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(`[`))
	m := recordMapping{format: mapping.FormatJSON}
	f.Fuzz(func(t *testing.T, value []byte) {
		fields, _, err := m.decode(&kgo.Record{Value: value}, nil)
		if err != nil {
			return
		}
		if len(fields) == 0 {
			t.Fatal("decoded an entry without fields")
		}
		again, _, err := m.decode(&kgo.Record{Value: mapping.AppendJSONObject(nil, fields)}, nil)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", mapping.AppendJSONObject(nil, fields), err)
		}
		if !reflect.DeepEqual(again, fields) {
			t.Fatalf("round trip changed %q into %q", fields, again)
		}
	})
}

// Arbitrary raw records decode to their value, key and headers, never more;
// the exact lineage names never become fields, and an escaped name comes
// back with one prefix less.
func FuzzK2RDecodeRaw(f *testing.F) {
	f.Add([]byte("v"), []byte("k"), "h", []byte("x"), false)
	f.Add([]byte(nil), []byte(nil), "", []byte(nil), true)
	f.Add([]byte("\xff"), []byte(nil), mapping.HeaderID, []byte("1-1"), true)
	f.Add([]byte("b"), []byte(nil), "xmirror.xmirror.id", []byte("9999999999999-0"), true)
	f.Add([]byte("b"), []byte("k"), "xmirror.xmirror.", []byte("x"), false)
	f.Add([]byte("b"), []byte(nil), "xmirror.", []byte("x"), false)
	f.Add([]byte("b"), []byte(nil), "XMIRROR.ID", []byte("1-1"), true)
	f.Fuzz(func(t *testing.T, value, key []byte, hkey string, hval []byte, preserve bool) {
		m := recordMapping{format: mapping.FormatRaw, valueField: "value", keyField: "key", preserveIDs: preserve}
		rec := &kgo.Record{Value: value, Key: key, Headers: []kgo.RecordHeader{{Key: hkey, Value: hval}}}
		fields, id, err := m.decode(rec, nil)
		if err != nil {
			return
		}
		lineage := hkey == mapping.HeaderID || hkey == mapping.HeaderStream
		var want []mapping.Field
		if value != nil {
			want = append(want, mapping.Field{Name: "value", Value: string(value)})
		}
		if key != nil && !lineage {
			want = append(want, mapping.Field{Name: "key", Value: string(key)})
		}
		if !lineage {
			want = append(want, mapping.Field{Name: mapping.FieldName(hkey), Value: string(hval)})
		}
		if !reflect.DeepEqual(fields, want) || id == "" {
			t.Fatalf("decoded %q id %q, want %q", fields, id, want)
		}
		if preserve {
			ms, seq, _ := strings.Cut(string(hval), "-")
			a, _ := strconv.ParseUint(ms, 10, 64)
			b, _ := strconv.ParseUint(seq, 10, 64)
			if hkey != mapping.HeaderID || id != fmt.Sprintf("%d-%d", a, b) {
				t.Fatalf("--preserve-ids took id %q from header %q %q", id, hkey, hval)
			}
		}
	})
}

func TestDecodeRefusesOnlyRecordsWiderThanMaxFields(t *testing.T) {
	headers := func(n int) []kgo.RecordHeader {
		h := make([]kgo.RecordHeader, n)
		for i := range h {
			h[i] = kgo.RecordHeader{Key: "f", Value: []byte{byte(i)}}
		}
		return h
	}
	for _, tc := range []struct {
		maxFields, fields int
		refused           bool
	}{
		{3, 3, false},
		{3, 4, true},
		{1, 1, false},
		{0, 100000, false}, // the default takes what redis-to-kafka writes of a wide entry
		{0, mapping.DefaultMaxFields, false},
		{0, mapping.DefaultMaxFields + 1, true},
	} {
		m := recordMapping{format: mapping.FormatRaw, valueField: "value", keyField: "key", maxFields: tc.maxFields}
		// A value and fields-1 headers.
		fields, _, err := m.decode(&kgo.Record{Value: []byte("v"), Headers: headers(tc.fields - 1)}, nil)
		var tooMany *TooManyFieldsError
		switch {
		case tc.refused && (!errors.As(err, &tooMany) || tooMany.Fields != tc.fields):
			t.Errorf("max %d, %d fields: %v, want a TooManyFieldsError of %d", tc.maxFields, tc.fields, err, tc.fields)
		case !tc.refused && (err != nil || len(fields) != tc.fields):
			t.Errorf("max %d, %d fields: %d fields, %v; want all of them", tc.maxFields, tc.fields, len(fields), err)
		}
	}
}
