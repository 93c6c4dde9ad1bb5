package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
)

// FuzzParseTemplate: no template makes the parser panic; a refusal names
// the template; a template accepted is written in exactly one way, so what
// it expands to, with each placeholder marked and each literal brace
// doubled again, is the template itself.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{
		"{stream}", "mirror.{stream}.v1", "fixed", "{stream}-{stream}", "{steam}", "a{stream", "a}b", "}{stream}",
		"{{{stream}}}", "a{{b}}c", "{}", "{{", "}}", "{{}", "{partition}{stream}", "{stream{stream}}", "\xff{stream}\x00", "",
	} {
		f.Add(s)
	}
	allowed := []string{"stream", "partition"}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTemplate(s, allowed...)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("%q: error %q does not name the template", s, err)
			}
			return
		}
		if tm.String() != s {
			t.Fatalf("%q parsed keeps %q", s, tm.String())
		}
		if strings.ContainsAny(s, "\x01\x02") {
			return // the markers below
		}
		values := map[string]string{}
		for _, a := range allowed {
			values[a] = "\x01" + a + "\x02"
		}
		var back strings.Builder
		for _, part := range regexp.MustCompile("\x01[a-z]+\x02|[^\x01]+").FindAllString(tm.Expand(values), -1) {
			if part[0] == '\x01' {
				back.WriteString("{" + part[1:len(part)-1] + "}")
				continue
			}
			back.WriteString(strings.NewReplacer("{", "{{", "}", "}}").Replace(part))
		}
		if back.String() != s {
			t.Fatalf("%q expands to %q, which writes back as %q", s, tm.Expand(values), back.String())
		}
		for _, a := range allowed {
			if tm.Uses(a) != strings.Contains(tm.Expand(values), values[a]) {
				t.Fatalf("%q: Uses(%s) = %v", s, a, tm.Uses(a))
			}
		}
	})
}

var kafkaTopic = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// FuzzValidTopicName: a name passes exactly when Kafka would take it, and
// a refusal quotes the name.
func FuzzValidTopicName(f *testing.F) {
	for _, s := range []string{"orders", "a.b_c-D9", "", ".", "..", "...", "a:b", "a b", "é", "ok\xffno", strings.Repeat("a", 250), "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidTopicName(name)
		want := kafkaTopic.MatchString(name) && name != "." && name != ".."
		if (err == nil) != want {
			t.Fatalf("ValidTopicName(%q) = %v, want ok %v", name, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(name)) && name != "" {
			t.Fatalf("ValidTopicName(%q): %q does not quote the name", name, err)
		}
	})
}

// FuzzCompareIDs: ParseID, CanonicalID and CompareIDs agree: IDs compare as
// their two numbers do (an ID of milliseconds alone as <ms>-0), the order is
// antisymmetric, and a canonical ID is the same ID written as Redis writes
// it.
func FuzzCompareIDs(f *testing.F) {
	for _, p := range [][2]string{
		{"1-0", "1-0"}, {"1-0", "1-1"}, {"2-0", "10-0"}, {"10", "10-0"}, {"0017-00", "17-0"},
		{"18446744073709551615-18446744073709551615", "18446744073709551615"}, {"18446744073709551616-0", "0-0"}, {"+1-1", "1-1"},
		{"1-1", "x"}, {"0-0", "18446744073709551615-0"},
	} {
		f.Add(p[0], p[1])
	}
	num := func(id string) (ms, seq uint64, ok bool) {
		if ms, seq, ok := ParseID(id); ok {
			return ms, seq, true
		}
		if IsDigits(id) {
			ms, err := strconv.ParseUint(id, 10, 64)
			return ms, 0, err == nil
		}
		return 0, 0, false
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareIDs(a, b) != -CompareIDs(b, a) || CompareIDs(a, a) != 0 {
			t.Fatalf("CompareIDs(%q, %q) = %d, reversed %d", a, b, CompareIDs(a, b), CompareIDs(b, a))
		}
		if IDLess(a, b) != (CompareIDs(a, b) < 0) {
			t.Fatalf("IDLess(%q, %q) disagrees with CompareIDs", a, b)
		}
		am, as, aok := num(a)
		bm, bs, bok := num(b)
		if aok && bok {
			want := 0
			switch {
			case am < bm || am == bm && as < bs:
				want = -1
			case am > bm || am == bm && as > bs:
				want = 1
			}
			if got := CompareIDs(a, b); got != want {
				t.Fatalf("CompareIDs(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
		ms, seq, ok := ParseID(a)
		if ok != ValidID(a) {
			t.Fatalf("ValidID(%q) disagrees with ParseID", a)
		}
		if ok && a != fmt.Sprintf("%d-%d", ms, seq) && strings.TrimLeft(a, "0123456789-") != "" {
			t.Fatalf("ParseID(%q) = %d-%d: took more than digits", a, ms, seq)
		}
		c, cok := CanonicalID(a)
		if cok != (ok && (ms != 0 || seq != 0)) {
			t.Fatalf("CanonicalID(%q) ok = %v", a, cok)
		}
		if cok && c != strconv.FormatUint(ms, 10)+"-"+strconv.FormatUint(seq, 10) {
			t.Fatalf("CanonicalID(%q) = %q, not as Redis writes %d-%d", a, c, ms, seq)
		}
	})
}

// FuzzParseStart: only the two ends and, where IDs are taken, an ID
// CompareIDs can read are accepted; each is given to XGROUP CREATE as it
// was written; a refusal quotes what was given.
func FuzzParseStart(f *testing.F) {
	for _, s := range []string{"earliest", "latest", "1700000000000-0", "1700000000000", "0", "$", "Latest", "99999999999999999999", "1-x", ""} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, ids bool) {
		st, err := ParseStart(s, ids)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("ParseStart(%q): %q does not quote it", s, err)
			}
			return
		}
		switch {
		case s == StartEarliest:
			if st != (Start{}) || st.StreamID() != "0" {
				t.Fatalf("%q: %+v", s, st)
			}
		case s == StartLatest:
			if st != (Start{Latest: true}) || st.StreamID() != "$" {
				t.Fatalf("%q: %+v", s, st)
			}
		default:
			if !ids || st.ID != s || st.StreamID() != s || st.Latest {
				t.Fatalf("ParseStart(%q, %v) = %+v", s, ids, st)
			}
			ms, seq, ok := ParseID(s)
			if !ok {
				ms, err = strconv.ParseUint(s, 10, 64)
				if err != nil {
					t.Fatalf("start %q is taken, yet it is no entry ID: %v", s, err)
				}
			}
			if CompareIDs(s, fmt.Sprintf("%d-%d", ms, seq)) != 0 {
				t.Fatalf("start %q does not compare as %d-%d", s, ms, seq)
			}
		}
	})
}

// jsonFields decodes a JSON object of strings with encoding/json's
// tokenizer, keeping order and duplicates: an independent reader.
func jsonFields(src []byte) ([]Field, bool) {
	d := json.NewDecoder(bytes.NewReader(src))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []Field
	for d.More() {
		name, err := d.Token()
		if err != nil {
			return nil, false
		}
		value, err := d.Token()
		v, isString := value.(string)
		if err != nil || !isString {
			return nil, false
		}
		out = append(out, Field{Name: name.(string), Value: v})
	}
	if tok, err := d.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, false
	}
	return out, true
}

// FuzzParseJSONObject: no record value makes the json decoder panic; on
// valid UTF-8 it accepts exactly the JSON objects of string members that
// encoding/json reads, with the same members in the same order; what it
// accepts encodes back to what decodes to the same fields.
func FuzzParseJSONObject(f *testing.F) {
	for _, s := range []string{
		`{"a":"1"}`, ` { "a" : "1" , "b":"2" } `, `{"a":"\u00e9\/\b\f\ud83c\udf89"}`, `{}`, `{"a":1}`, `{"a":{"b":"c"}}`,
		`["a"]`, `{"a":"1"} x`, `{"a":"1`, `{"a" "1"}`, `{"a":"\x"}`, "{\"a\":\"\n\"}", ``, `{"a":"1","a":"2"}`,
		`{"a":"\ud800"}`, `{"a":"\udc00\ud800\u0041"}`, `{"a":"\ud83c\u0041"}`, "{\"\xff\":\"\x00\"}", `{"a":"1",}`, `{,}`,
		"{\"a\":\"\x7f\"}", `{"a":"\u0000"}`, "\ufeff{}", `{"a":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		fields, err := ParseJSONObject(src, nil)
		if err != nil && err.Error() == "" {
			t.Fatalf("%q: empty error", src)
		}
		if utf8.Valid(src) {
			want, ok := jsonFields(src)
			if ok != (err == nil) {
				t.Fatalf("%q: encoding/json reads it: %v; xmirror: %v", src, ok, err)
			}
			if ok && !(len(want) == 0 && len(fields) == 0) && !reflect.DeepEqual(fields, want) {
				t.Fatalf("%q: read as %q, encoding/json reads %q", src, fields, want)
			}
		}
		if err != nil {
			return
		}
		again, err := ParseJSONObject(AppendJSONObject(nil, fields), nil)
		if err != nil || !reflect.DeepEqual(again, fields) {
			t.Fatalf("%q read as %q, written and read again: %q, %v", src, fields, again, err)
		}
	})
}

// splitFields makes an entry's fields from fuzzer input: names and values
// alternate, separated by NUL bytes, so any number of fields, duplicate
// names and binary values (other than NUL) are reached.
func splitFields(in string) []Field {
	parts := strings.Split(in, "\x00")
	var fields []Field
	for i := 0; i+1 < len(parts); i += 2 {
		fields = append(fields, Field{Name: parts[i], Value: parts[i+1]})
	}
	return fields
}

// FuzzJSONEntryRoundTrip: any entry written as a JSON object reads back as
// the same fields, in order, duplicates and bytes that are not UTF-8
// included, and valid UTF-8 is written as JSON that encoding/json reads the
// same way.
func FuzzJSONEntryRoundTrip(f *testing.F) {
	f.Add("a\x001\x00a\x002\x00\xff\xfe\x00\"\\\n\u2028")
	f.Add("value\x00\x00z\x00\x01\x1f\x7f")
	f.Add("\x00\x00")
	f.Add("value\x00\x00a\x00\xff\x00\"\\")
	f.Add("ü\x00日本\x00\n\x00\u2028")
	f.Fuzz(func(t *testing.T, in string) {
		fields := splitFields(in)
		enc := AppendJSONObject(nil, fields)
		got, err := ParseJSONObject(enc, nil)
		if err != nil || len(got) != len(fields) || len(got) > 0 && !reflect.DeepEqual(got, fields) {
			t.Fatalf("%q written as %q reads %q, %v", fields, enc, got, err)
		}
		if utf8.Valid(enc) {
			if want, ok := jsonFields(enc); !ok || len(want) != len(fields) || len(want) > 0 && !reflect.DeepEqual(want, fields) {
				t.Fatalf("%q written as %q: encoding/json reads %q, %v", fields, enc, want, ok)
			}
		}
	})
}

// FuzzLineageIndex: for any headers, the lineage is the first header of
// each exact name; and the headers of an entry written as redis-to-kafka
// writes them (lineage first, then each field under HeaderKey) give the
// lineage at 0 and 1 and every field back by FieldName, whatever its name.
func FuzzLineageIndex(f *testing.F) {
	f.Add("xmirror.stream\x00s\x00xmirror.id\x001-1\x00payload\x00x")
	f.Add("xmirror.xmirror.stream\x00t\x00xmirror.xmirror.id\x002-2")
	f.Add("xmirror.id\x001-1\x00xmirror.id\x009-0\x00XMIRROR.STREAM\x00t")
	f.Add("xmirror.\x00x\x00xmirror\x00y\x00\x00")
	f.Add("a\x00\x00xmirror.xmirror.id\x00\x00XMIRROR.ID\x00\x00xmirror.\xff\x00\x00\x00\x00")
	f.Fuzz(func(t *testing.T, in string) {
		fields := splitFields(in)
		var headers []kgo.RecordHeader
		for _, fl := range fields {
			headers = append(headers, kgo.RecordHeader{Key: fl.Name, Value: []byte(fl.Value)})
		}
		s, i := LineageIndex(headers)
		first := func(name string) int {
			for j, h := range headers {
				if h.Key == name {
					return j
				}
			}
			return -1
		}
		if s != first(HeaderStream) || i != first(HeaderID) {
			t.Fatalf("headers %q: lineage at %d, %d", in, s, i)
		}
		written := []kgo.RecordHeader{{Key: HeaderStream, Value: []byte("s")}, {Key: HeaderID, Value: []byte("1-1")}}
		for _, fl := range fields {
			written = append(written, kgo.RecordHeader{Key: HeaderKey(fl.Name), Value: []byte(fl.Value)})
		}
		if s, i := LineageIndex(written); s != 0 || i != 1 {
			t.Fatalf("fields %q written as headers: lineage at %d, %d", fields, s, i)
		}
		for j, fl := range fields {
			h := written[j+2]
			if h.Key == HeaderStream || h.Key == HeaderID || FieldName(h.Key) != fl.Name || strings.HasPrefix(fl.Name, ReservedPrefix) != (h.Key != fl.Name) {
				t.Fatalf("field %q written as header %q reads back as %q", fl.Name, h.Key, FieldName(h.Key))
			}
		}
	})
}
