package cmd_test

import (
	"context"
	"reflect"
	"strconv"
	"testing"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// readSlices reads a whole stream with its fields in order, duplicates
// kept, with a plain client.
func readSlices(t *testing.T, c rueidis.Client, stream string) []rueidis.XRangeSlice {
	t.Helper()
	es, err := c.Do(context.Background(), c.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRangeSlices()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", stream, err)
	}
	return es
}

func TestRoundTripGivesBackEveryEntryByteForByte(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	many := []string{"value", "first"}
	for i := 0; i < 1000; i++ {
		many = append(many, "f"+strconv.Itoa(i), strconv.Itoa(i))
	}
	// Every entry starts with its value field, the one place where the raw
	// format's round trip can differ (the value field comes back first).
	entries := [][]string{
		{"value", ""},
		{"value", "héllo wörld ✓ 日本語 🎉", "note", ""},
		{"value", "\xff\xfe\x00bin\x80ary\xc3", "\xffname", "\x00\x01"},
		{"value", "q\"b\\n\n", "a", "1", "a", "2"},
		{"value", "x", "key", "k", "customer", "c1"},
		many,
	}
	for _, format := range []string{"json", "raw"} {
		for _, preserve := range []bool{false, true} {
			name := format
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

				mustMirror(t, "r2k", "--stream", source, "--topic", topic, "--format", format, "--key-field", "customer")
				args := []string{"k2r", "--topic", topic, "--stream", copy, "--format", format, "--name", k2rName}
				if preserve {
					args = append(args, "--preserve-ids")
				}
				mustMirror(t, args...)

				sameEntries(t, rc, source, copy, ids, preserve)
				if preserve {
					// A replay under another name adds nothing.
					mustMirror(t, "k2r", "--topic", topic, "--stream", copy, "--format", format, "--preserve-ids", "--name", k2rName+"-replay")
					delKeys(t, rc, checkpoint.K2RKey(k2rName+"-replay", copy))
					if n, want := len(readSlices(t, rc, copy)), len(readSlices(t, rc, source)); n != want {
						t.Fatalf("after a replay the copy has %d entries, want %d", n, want)
					}
				}
			})
		}
	}
}

// sameEntries fails unless the stream copy holds the entries of source,
// field for field and byte for byte (ids name them in messages), with the
// same IDs when preserve.
func sameEntries(t *testing.T, rc rueidis.Client, source, copy string, ids []string, preserve bool) {
	t.Helper()
	want := readSlices(t, rc, source)
	got := readSlices(t, rc, copy)
	if len(got) != len(want) {
		t.Fatalf("copy has %d entries, source %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i].FieldValues, want[i].FieldValues) {
			t.Errorf("entry %d (%s): fields\n got %q\nwant %q", i, ids[i], got[i].FieldValues, want[i].FieldValues)
		}
		if preserve && got[i].ID != want[i].ID {
			t.Errorf("entry %d: ID %s, want the source's %s", i, got[i].ID, want[i].ID)
		}
	}
}
