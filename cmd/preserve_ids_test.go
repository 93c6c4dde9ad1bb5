package cmd_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// lineageRecord is a record as redis-to-kafka writes it for entry id of
// stream src, in raw format.
func lineageRecord(src, id, value string) *kgo.Record {
	return &kgo.Record{Value: []byte(value), Headers: []kgo.RecordHeader{
		{Key: "xmirror.stream", Value: []byte(src)},
		{Key: "xmirror.id", Value: []byte(id)},
	}}
}

// streamIDs lists a stream's entry IDs, read with a plain client.
func streamIDs(t *testing.T, es []rueidis.XRangeEntry) []string {
	t.Helper()
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

// Entries taken over from another consumer (--claim-idle) reach the topic
// after newer ones: partition order 4,5,6,1,2,3. The IDs 1,2,3 are below
// the stream's top once 4,5,6 are written, and not in it: Redis cannot add
// them, and they are not "already present" either.
func TestPreserveIDsEntriesOutOfOrderAreReportedNotDropped(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	const base = "1700000000000-"
	var recs []*kgo.Record
	for _, n := range []int{4, 5, 6, 1, 2, 3} {
		recs = append(recs, lineageRecord("src", base+strconv.Itoa(n), "v"+strconv.Itoa(n)))
	}
	produce(t, topic, recs)

	// fail (the default): 4,5,6 written and checkpointed, then exit 1
	// naming the first of 1,2,3; a rerun stops there again.
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--format", "raw", "--preserve-ids", "--output", "json"}
	for run := 1; run <= 2; run++ {
		r := xmirror(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("topic %q partition 0 offset 3", topic)) ||
			!strings.Contains(r.stderr, "entry ID "+base+"1 ") || !strings.Contains(r.stderr, "last ID "+base+"6") {
			t.Fatalf("run %d: exit %d, stderr %s; want exit 1 naming offset 3, ID %s1 and the top %s6", run, r.code, r.stderr, base, base)
		}
		if got := strings.Join(streamIDs(t, readStream(t, rc, stream)), ","); got != base+"4,"+base+"5,"+base+"6" {
			t.Fatalf("run %d: stream holds %s, want 4,5,6", run, got)
		}
		if pos := hget(t, rc, checkpoint.K2RKey(name, stream), topic+":0"); pos != "3" {
			t.Fatalf("run %d: checkpoint at %s, want 3 (the first entry not written)", run, pos)
		}
		// The totals count what was written, not the entries cut.
		written := 0
		for _, e := range readStream(t, rc, stream) {
			for k, v := range e.FieldValues {
				written += len(k) + len(v)
			}
		}
		key := checkpoint.K2RKey(name, stream)
		if n, b := hget(t, rc, key, "entries"), hget(t, rc, key, "bytes"); n != "3" || b != strconv.Itoa(written) {
			t.Fatalf("run %d: checkpoint totals %s entries, %s bytes; want 3 entries, %d bytes (4, 5 and 6)", run, n, b, written)
		}
	}

	// skip: goes past them, counted.
	args[len(args)-2] = "--on-error"
	args[len(args)-1] = "skip"
	r := mustMirror(t, append(args, "--output", "json")...)
	if !strings.Contains(r.stdout, `"entries":0`) || !strings.Contains(r.stdout, `"skipped":3`) {
		t.Fatalf("skip: summary %s, want 3 skipped", r.stdout)
	}
	if !strings.Contains(r.stderr, "skipping an entry that Redis cannot add") || strings.Contains(r.stderr, "already present") {
		t.Fatalf("skip: stderr %s", r.stderr)
	}
	if n := len(readStream(t, rc, stream)); n != 3 {
		t.Fatalf("skip: stream holds %d entries, want 3", n)
	}

	// dead-letter, from the start into another stream: 4,5,6 written,
	// 1,2,3 stored with their offsets.
	stream2, dead, name2 := testenv.Stream(t, rc), testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name2, stream2))
	r = mustMirror(t, "k2r", "--topic", topic, "--stream", stream2, "--name", name2, "--format", "raw", "--preserve-ids",
		"--on-error", "dead-letter", "--dead-letter-stream", dead, "--output", "json")
	if !strings.Contains(r.stdout, `"entries":3`) || !strings.Contains(r.stdout, `"skipped":3`) {
		t.Fatalf("dead-letter: summary %s", r.stdout)
	}
	letters := readStream(t, rc, dead)
	if len(letters) != 3 {
		t.Fatalf("dead-letter stream holds %d entries, want 3", len(letters))
	}
	for i, l := range letters {
		if l.FieldValues["offset"] != strconv.Itoa(3+i) || l.FieldValues["header.xmirror.id"] != base+strconv.Itoa(1+i) ||
			l.FieldValues["value"] != "v"+strconv.Itoa(1+i) || !strings.Contains(l.FieldValues["reason"], "not above its last ID") {
			t.Fatalf("dead letter %d: %v", i, l.FieldValues)
		}
	}
	if got := strings.Join(streamIDs(t, readStream(t, rc, stream2)), ","); got != base+"4,"+base+"5,"+base+"6" {
		t.Fatalf("dead-letter: stream holds %s", got)
	}
}

// redis-to-kafka → topic → kafka-to-redis --preserve-ids into a stream that
// another client XADDs to meanwhile: a source entry whose ID the other
// writer's entries overtook cannot be added, and must be reported, not
// counted as present.
func TestPreserveIDsBesideAnotherWriterLosesNothing(t *testing.T) {
	rc := testenv.Redis(t)
	ctx := context.Background()
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	src, dst, dead := testenv.Stream(t, rc), testenv.Stream(t, rc), testenv.Stream(t, rc)
	r2kName, k2rName := testenv.Name(t, "r2k"), testenv.Name(t, "k2r")
	delKeys(t, rc, checkpoint.K2RKey(k2rName, dst), checkpoint.R2KKey(r2kName))

	r2k := startXmirror(t, "r2k", "--stream", src, "--topic", topic, "--name", r2kName, "--format", "raw", "-f", "--linger", "20ms")
	k2r := startXmirror(t, "k2r", "--topic", topic, "--stream", dst, "--name", k2rName, "--format", "raw", "--preserve-ids", "-f",
		"--on-error", "dead-letter", "--dead-letter-stream", dead)

	// The other writer: one entry every 0.1 s until the source is done.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				rc.Do(ctx, rc.B().Xadd().Key(dst).Id("*").FieldValue().FieldValue("other", "1").Build())
			}
		}
	}()
	// 1000 source entries over about 2 s.
	const n = 1000
	var srcIDs []string
	for i := 0; i < n; i += 25 {
		srcIDs = append(srcIDs, addEntries(t, rc, src, i, 25, func(i int) []string { return []string{"value", strconv.Itoa(i)} })...)
		time.Sleep(50 * time.Millisecond) // pacing the source, not synchronisation
	}

	// Every source entry ends up written or dead-lettered.
	var written, lettered map[string]string
	deadline := time.Now().Add(time.Minute)
	for {
		written, lettered = map[string]string{}, map[string]string{}
		for _, e := range readStream(t, rc, dst) {
			if v, ok := e.FieldValues["value"]; ok {
				written[e.ID] = v
			}
		}
		for _, e := range readStream(t, rc, dead) {
			lettered[e.FieldValues["header.xmirror.id"]] = e.FieldValues["value"]
		}
		if len(written)+len(lettered) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	k2r.stop(t, syscall.SIGTERM, 30*time.Second)
	r2k.stop(t, syscall.SIGTERM, 30*time.Second)

	for i, id := range srcIDs {
		v, inStream := written[id]
		lv, inDead := lettered[id]
		switch {
		case inStream && inDead:
			t.Fatalf("source entry %s both written and dead-lettered", id)
		case inStream && v != strconv.Itoa(i), inDead && lv != strconv.Itoa(i):
			t.Fatalf("source entry %s holds %q/%q, want %d", id, v, lv, i)
		case !inStream && !inDead:
			t.Fatalf("source entry %s (%d of %d) neither written nor reported: %d written, %d dead-lettered; k2r stderr:\n%s",
				id, i, n, len(written), len(lettered), k2r.stderr.String())
		}
	}
	if len(written)+len(lettered) != n {
		t.Fatalf("%d written + %d dead-lettered for %d source entries", len(written), len(lettered), n)
	}
	if strings.Contains(k2r.stderr.String(), "already present") {
		t.Fatalf("entries counted present that never were: %s", k2r.stderr.String())
	}
	t.Logf("%d written with their IDs, %d overtaken by the other writer and dead-lettered", len(written), len(lettered))
}

// A replay of a topic already mirrored adds nothing and reports every
// entry as present; an entry deleted from the stream since is not
// present, and is reported.
func TestPreserveIDsReplayFindsEntriesPresentOnlyWhenThere(t *testing.T) {
	rc := testenv.Redis(t)
	ctx := context.Background()
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	const n = 50
	var recs []*kgo.Record
	for i := 1; i <= n; i++ {
		recs = append(recs, lineageRecord("src", fmt.Sprintf("1700000000000-%d", i), "v"+strconv.Itoa(i)))
	}
	produce(t, topic, recs)
	delKeys(t, rc, checkpoint.K2RKey(name, stream), checkpoint.K2RKey(name+"-replay", stream),
		checkpoint.K2RKey(name+"-skip", stream))
	args := func(name string) []string {
		return []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--format", "raw", "--preserve-ids", "--output", "json"}
	}
	mustMirror(t, args(name)...)

	r := mustMirror(t, args(name+"-replay")...)
	if !strings.Contains(r.stdout, `"entries":0`) || !strings.Contains(r.stdout, fmt.Sprintf(`"skipped":%d`, n)) ||
		!strings.Contains(r.stderr, "already present") || !strings.Contains(r.stderr, fmt.Sprintf("count=%d", n)) {
		t.Fatalf("replay: summary %s, stderr %s: want all %d present", r.stdout, r.stderr, n)
	}
	if got := len(readStream(t, rc, stream)); got != n {
		t.Fatalf("replay: stream holds %d entries, want %d", got, n)
	}

	// Entry 20 deleted: it is below the top and not there.
	must(t, rc.Do(ctx, rc.B().Xdel().Key(stream).Id("1700000000000-20").Build()).Error())
	r = xmirror(t, args(name+"-skip")...)
	if r.code != 1 || !strings.Contains(r.stderr, "offset 19") || !strings.Contains(r.stderr, "entry ID 1700000000000-20 ") {
		t.Fatalf("replay after XDEL: exit %d, stderr %s; want exit 1 naming offset 19 and the ID", r.code, r.stderr)
	}
	r = mustMirror(t, append(args(name+"-skip"), "--on-error", "skip")...)
	if !strings.Contains(r.stdout, fmt.Sprintf(`"skipped":%d`, n-19)) || !strings.Contains(r.stderr, fmt.Sprintf("count=%d", n-20)) {
		t.Fatalf("replay after XDEL with skip: summary %s, stderr %s: want %d present and 1 skipped", r.stdout, r.stderr, n-20)
	}
	if got := len(readStream(t, rc, stream)); got != n-1 {
		t.Fatalf("stream holds %d entries, want %d", got, n-1)
	}
}
