package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// headerCount is how many headers of a record carry the name key.
func headerCount(r *kgo.Record, key string) int {
	n := 0
	for _, h := range r.Headers {
		if h.Key == key {
			n++
		}
	}
	return n
}

// headerList shows a record's headers as quoted name=value pairs.
func headerList(r *kgo.Record) string {
	var b []byte
	for _, h := range r.Headers {
		b = fmt.Appendf(b, "%q=%q ", h.Key, h.Value)
	}
	return string(b)
}

// parseSummary reads the summary of --output json.
func parseSummary(t *testing.T, stdout string) (s struct{ Entries, Skipped int }) {
	t.Helper()
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("summary %q: %v", stdout, err)
	}
	return s
}

// Field names a user can write that look like xmirror's own: every lineage
// header name, the reserved prefix, names already escaped once, other cases,
// the empty name, bytes that are not UTF-8, and duplicates. The first four
// entries are those of the issue: the value field of the second one used to
// become the entry ID, and the two after it were dropped as present.
func TestFieldsNamedLikeLineageRoundTripByteForByte(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	// Every entry but the last starts with its value field, the one place
	// where the raw format's round trip can differ.
	entries := [][]string{
		{"payload", "a"},
		{"payload", "b", "xmirror.id", "9999999999999-0"},
		{"payload", "c"},
		{"payload", "d"},
		{"payload", "e", "xmirror.stream", "another-stream", "xmirror.id", "1-1"},
		{"payload", "f", "xmirror.", "p", "xmirror.xmirror.id", "q", "xmirror.xmirror.", "r", "xmirror.xmirror.xmirror.stream", "s"},
		{"payload", "g", "XMIRROR.ID", "1-1", "XMIRROR.STREAM", "t", "Xmirror.id", "u", "xmirror", "v", "xmirror.trace", "w"},
		{"payload", "h", "", "", "", "empty name twice"},
		{"payload", "\xff\xfe\x00", "\xff\xfe", "\x00", "xmirror.\xff", "\xc3", "xmirror.id\x00", "x", "\x00xmirror.id", "y"},
		{"payload", "i", "xmirror.id", "1", "xmirror.id", "2", "payload", "second", "xmirror.stream", "3", "xmirror.stream", "4", "xmirror.", "5", "xmirror.", "6"},
		{"payload", "", "xmirror.id", "", "xmirror.stream", ""},
		{"xmirror.id", "no value field", "xmirror.stream", "z"},
	}
	variants := []struct {
		name     string
		r2k, k2r []string
	}{
		{name: "json", r2k: []string{"--format", "json"}, k2r: []string{"--format", "json"}},
		{name: "json/headers", r2k: []string{"--format", "json"}, k2r: []string{"--format", "json", "--headers"}},
		{name: "raw", r2k: []string{"--format", "raw", "--value-field", "payload"}, k2r: []string{"--format", "raw", "--value-field", "payload"}},
	}
	for _, v := range variants {
		for _, preserve := range []bool{false, true} {
			name := v.name
			if preserve {
				name += "/preserve-ids"
			}
			t.Run(name, func(t *testing.T) {
				source := testenv.Stream(t, rc)
				copy := testenv.Stream(t, rc)
				topic := testenv.Topic(t, kc, 1)
				ids := addEntries(t, rc, source, 0, len(entries), func(i int) []string { return entries[i] })
				k2rName := testenv.Name(t, "k2r")
				delKeys(t, rc, checkpoint.K2RKey(k2rName, copy), checkpoint.R2KKey(source+">"+topic))

				// Keyed by a field named like lineage, too: the key is a copy
				// of a field and must not come back as one more.
				r := mustMirror(t, append([]string{"r2k", "--stream", source, "--topic", topic, "--key-field", "xmirror.id", "--output", "json"}, v.r2k...)...)
				if s := parseSummary(t, r.stdout); s.Entries != len(entries) || s.Skipped != 0 {
					t.Fatalf("redis-to-kafka summary %s: want %d entries, none skipped", r.stdout, len(entries))
				}
				// Each record carries its lineage once, whatever its fields.
				recs := readTopic(t, topic)
				if len(recs) != len(entries) {
					t.Fatalf("topic has %d records, want %d", len(recs), len(entries))
				}
				for i, rec := range recs {
					s, _ := header(rec, "xmirror.stream")
					id, _ := header(rec, "xmirror.id")
					if headerCount(rec, "xmirror.stream") != 1 || headerCount(rec, "xmirror.id") != 1 || s != source || id != ids[i] {
						t.Errorf("record %d: headers %s, want xmirror.stream=%s and xmirror.id=%s once each", i, headerList(rec), source, ids[i])
					}
					if v.name != "raw" || len(rec.Headers) < 2 {
						continue
					}
					// The other fields follow as headers, a name that
					// starts with the reserved prefix given it once more.
					var want []string
					valueSeen := false
					for j := 0; j < len(entries[i]); j += 2 {
						switch f := entries[i][j]; {
						case f == "payload" && !valueSeen:
							valueSeen = true
						case strings.HasPrefix(f, "xmirror."):
							want = append(want, "xmirror."+f)
						default:
							want = append(want, f)
						}
					}
					var got []string
					for _, h := range rec.Headers[2:] {
						got = append(got, h.Key)
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("record %d: field headers %q, want %q", i, got, want)
					}
				}

				args := append([]string{"k2r", "--topic", topic, "--stream", copy, "--name", k2rName, "--output", "json"}, v.k2r...)
				if preserve {
					args = append(args, "--preserve-ids")
				}
				r = mustMirror(t, args...)
				if s := parseSummary(t, r.stdout); s.Entries != len(entries) || s.Skipped != 0 {
					t.Errorf("kafka-to-redis summary %s: want %d entries, none skipped", r.stdout, len(entries))
				}

				sameEntries(t, rc, source, copy, ids, preserve)
			})
		}
	}
}

// A restart reads back what an interrupted run wrote, taking lineage from
// the exact header names only, and from their first occurrence: an earlier
// redis-to-kafka wrote a field named xmirror.id as a second such header,
// after the lineage. Taking that field for lineage acknowledged an entry
// never written (lost) and wrote again one already in Kafka (doubled).
func TestReadBackNeverTakesAFieldForLineage(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.R2KKey(name))

	ms := time.Now().UnixMilli()
	ids := []string{fmt.Sprintf("%d-1", ms), fmt.Sprintf("%d-2", ms), fmt.Sprintf("%d-3", ms), fmt.Sprintf("%d-4", ms)}
	// b's and c's fields name other entries of the stream.
	entries := [][]string{
		{"value", "a"},
		{"value", "b", "xmirror.stream", stream, "xmirror.id", ids[3]},
		{"value", "c", "xmirror.stream", stream, "xmirror.id", ids[0]},
		{"value", "d"},
	}
	for i, e := range entries {
		fv := rc.B().Xadd().Key(stream).Id(ids[i]).FieldValue()
		for j := 0; j < len(e); j += 2 {
			fv = fv.FieldValue(e[j], e[j+1])
		}
		must(t, rc.Do(ctx, fv.Build()).Error())
	}
	// An interrupted run read all four, and Kafka confirmed a, b and c
	// before it died: b as the earlier version wrote it (its fields as
	// they are), c escaped as this one does.
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("xmirror").Id("0").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xreadgroup().Group("xmirror", name).Count(10).Streams().Key(stream).Id(">").Build()).Error())
	lineage := func(i int) []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: "xmirror.stream", Value: []byte(stream)}, {Key: "xmirror.id", Value: []byte(ids[i])}}
	}
	written := []*kgo.Record{
		{Topic: topic, Value: []byte("a"), Headers: lineage(0)},
		{Topic: topic, Value: []byte("b"), Headers: append(lineage(1),
			kgo.RecordHeader{Key: "xmirror.stream", Value: []byte(stream)}, kgo.RecordHeader{Key: "xmirror.id", Value: []byte(ids[3])})},
		{Topic: topic, Value: []byte("c"), Headers: append(lineage(2),
			kgo.RecordHeader{Key: "xmirror.xmirror.stream", Value: []byte(stream)}, kgo.RecordHeader{Key: "xmirror.xmirror.id", Value: []byte(ids[0])})},
	}
	must(t, kc.ProduceSync(ctx, written...).FirstErr())

	r := mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--format", "raw", "--output", "json")
	if s := parseSummary(t, r.stdout); s.Entries != 1 {
		t.Errorf("summary %s: want only d mirrored", r.stdout)
	}
	exactlyOnce(t, topic, ids)
	if n, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group("xmirror").Build()).ToArray(); err != nil {
		t.Fatal(err)
	} else if pending, _ := n[0].AsInt64(); pending != 0 {
		t.Errorf("%d entries still pending, want none", pending)
	}
}
