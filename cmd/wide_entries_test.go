package cmd_test

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/internal/testenv"
)

// wideEntry is an entry of n fields, value first.
func wideEntry(n int) []string {
	f := make([]string, 0, 2*n)
	f = append(f, "value", "wide")
	for i := 1; i < n; i++ {
		f = append(f, "f"+strconv.Itoa(i), strconv.Itoa(i%10))
	}
	return f
}

func TestEntryOf100000FieldsRoundTrips(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	entries := [][]string{{"value", "before"}, wideEntry(100000), {"value", "after"}}
	for _, format := range []string{"json", "raw"} {
		t.Run(format, func(t *testing.T) {
			source := testenv.Stream(t, rc)
			copy := testenv.Stream(t, rc)
			// 100,000 fields take about 1.3 MB, more than Kafka's default.
			topic := sizedTopic(t, kc, 8<<20)
			ids := addEntries(t, rc, source, 0, len(entries), func(i int) []string { return entries[i] })

			r := mustMirror(t, "r2k", "--stream", source, "--topic", topic, "--format", format, "--name", testenv.Name(t, "r2k"))
			if strings.Contains(r.stderr, "max-fields") {
				t.Errorf("redis-to-kafka warns of an entry kafka-to-redis takes by default: %s", r.stderr)
			}
			mustMirror(t, "k2r", "--topic", topic, "--stream", copy, "--format", format, "--name", testenv.Name(t, "k2r"))

			want, got := readSlices(t, rc, source), readSlices(t, rc, copy)
			if len(got) != len(want) {
				t.Fatalf("copy has %d entries, source %d", len(got), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(got[i].FieldValues, want[i].FieldValues) {
					t.Fatalf("entry %d (%s): the copy's %d fields differ from the source's %d", i, ids[i], len(got[i].FieldValues), len(want[i].FieldValues))
				}
			}
			if n := len(got[1].FieldValues); n != 100000 {
				t.Fatalf("the wide entry came back with %d fields, want 100000", n)
			}
		})
	}
}

func TestRedisToKafkaWarnsOncePerStreamOfEntriesKafkaToRedisWouldRefuse(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	a, b, quiet := testenv.Stream(t, rc), testenv.Stream(t, rc), testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	// Three wide entries in a and b each, none in quiet.
	wide := map[string][]string{}
	for _, s := range []string{a, b} {
		wide[s] = addEntries(t, rc, s, 0, 6, func(i int) []string {
			if i%2 == 1 {
				return wideEntry(11)
			}
			return wideEntry(10)
		})
	}
	addEntries(t, rc, quiet, 0, 3, func(i int) []string { return wideEntry(10) })

	r := mustMirror(t, "r2k", "--stream", a, "--stream", b, "--stream", quiet, "--topic", topic, "--max-fields", "10", "--batch-size", "2")
	for _, s := range []string{a, b} {
		if n := strings.Count(r.stderr, `stream=`+s+` `); n != 1 {
			t.Errorf("stream %s: %d warnings, want one for the run; stderr:\n%s", s, n, r.stderr)
		}
		first := wide[s][1]
		if !strings.Contains(r.stderr, first) {
			t.Errorf("the warning for %s does not name its first wide entry %s:\n%s", s, first, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "stream="+quiet) || strings.Count(r.stderr, "level=WARN") != 2 {
		t.Errorf("want exactly two warnings, none for %s; stderr:\n%s", quiet, r.stderr)
	}
	if n := len(readTopic(t, topic)); n != 15 {
		t.Fatalf("%d records, want all 15 entries written despite the warning", n)
	}

	// And kafka-to-redis with the same limit refuses what was warned of,
	// saying how to let it through; with the limit raised it takes it.
	copy := testenv.Stream(t, rc)
	k2rName := testenv.Name(t, "k2r")
	k := xmirror(t, "k2r", "--topic", topic, "--stream", copy, "--max-fields", "10", "--name", k2rName)
	if k.code != 1 || !strings.Contains(k.stderr, "more than --max-fields allows (10)") || !strings.Contains(k.stderr, "pass --max-fields 11 or more") {
		t.Fatalf("kafka-to-redis --max-fields 10: exit %d, stderr %s; want exit 1 naming the limit and the flag", k.code, k.stderr)
	}
	mustMirror(t, "k2r", "--topic", topic, "--stream", copy, "--max-fields", "11", "--name", k2rName)
	if n := len(readSlices(t, rc, copy)); n != 15 {
		t.Fatalf("kafka-to-redis --max-fields 11 wrote %d entries, want 15", n)
	}
}

func TestMaxFieldsIsListedWithItsDefaultInBothDirections(t *testing.T) {
	for _, dir := range []string{"redis-to-kafka", "kafka-to-redis"} {
		r := mustMirror(t, dir, "--help")
		if !strings.Contains(r.stdout, "--max-fields int") || !strings.Contains(r.stdout, "(default 1000000)") {
			t.Errorf("%s --help does not list --max-fields with its default:\n%s", dir, r.stdout)
		}
	}
	for _, args := range [][]string{{"r2k", "--stream", "s", "--max-fields", "0"}, {"k2r", "--topic", "t", "--max-fields", "-1"}} {
		if r := xmirror(t, args...); r.code != 2 || !strings.Contains(r.stderr, "--max-fields must be at least 1") {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}
