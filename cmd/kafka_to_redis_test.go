package cmd_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// produce writes records with a plain franz-go producer, each to the
// partition set on it.
func produce(t *testing.T, topic string, recs []*kgo.Record) {
	t.Helper()
	cl := testenv.Kafka(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, r := range recs {
		r.Topic = topic
	}
	const chunk = 10000
	for i := 0; i < len(recs); i += chunk {
		if err := cl.ProduceSync(ctx, recs[i:min(i+chunk, len(recs))]...).FirstErr(); err != nil {
			t.Fatalf("produce to %s: %v", topic, err)
		}
	}
}

// numbered makes n JSON records {"id":"<i>","p":"<partition>","seq":"<j>"},
// spread round-robin over partitions, seq counting per partition.
func numbered(from, n int, partitions int32) []*kgo.Record {
	recs := make([]*kgo.Record, 0, n)
	seq := make([]int, partitions)
	for i := from; i < from+n; i++ {
		p := int32(i % int(partitions))
		v := fmt.Sprintf(`{"id":"%d","p":"%d","seq":"%d"}`, i, p, i/int(partitions))
		seq[p]++
		recs = append(recs, &kgo.Record{Partition: p, Value: []byte(v)})
	}
	return recs
}

// readStream reads a whole stream with plain XRANGE, in chunks.
func readStream(t *testing.T, c rueidis.Client, stream string) []rueidis.XRangeEntry {
	t.Helper()
	ctx := context.Background()
	var all []rueidis.XRangeEntry
	start := "-"
	for {
		es, err := c.Do(ctx, c.B().Xrange().Key(stream).Start(start).End("+").Count(10000).Build()).AsXRange()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", stream, err)
		}
		all = append(all, es...)
		if len(es) < 10000 {
			return all
		}
		start = "(" + es[len(es)-1].ID
	}
}

// checkOnceInOrder fails unless the stream holds ids [0, n) exactly once,
// each partition's records in their production order.
func checkOnceInOrder(t *testing.T, entries []rueidis.XRangeEntry, n int) {
	t.Helper()
	seen := make([]int, n)
	last := map[string]int{}
	for _, e := range entries {
		id, err := strconv.Atoi(e.FieldValues["id"])
		if err != nil || id < 0 || id >= n {
			t.Fatalf("entry %s has id %q", e.ID, e.FieldValues["id"])
		}
		seen[id]++
		seq, _ := strconv.Atoi(e.FieldValues["seq"])
		p := e.FieldValues["p"]
		if prev, ok := last[p]; ok && seq <= prev {
			t.Fatalf("partition %s: seq %d after %d (entry %s): out of order", p, seq, prev, e.ID)
		}
		last[p] = seq
	}
	missing, dup := 0, 0
	for _, k := range seen {
		switch {
		case k == 0:
			missing++
		case k > 1:
			dup++
		}
	}
	if missing > 0 || dup > 0 || len(entries) != n {
		t.Fatalf("stream holds %d entries for %d records: %d missing, %d duplicated", len(entries), n, missing, dup)
	}
}

func delKeys(t *testing.T, c rueidis.Client, keys ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Do(ctx, c.B().Del().Key(keys...).Build())
	})
}

func TestK2ROneShotMirrorsBacklogOnceInOrder(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 3)
	stream := testenv.Stream(t, rc)
	name := testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	const n = 100000
	produce(t, topic, numbered(0, n, 3))

	begin := time.Now()
	r := mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name)
	t.Logf("100k records: %s (%s)", time.Since(begin).Round(time.Millisecond), strings.TrimSpace(r.stderr))
	if !strings.Contains(r.stderr, "mirrored 100000 entries") {
		t.Fatalf("summary: %s", r.stderr)
	}
	checkOnceInOrder(t, readStream(t, rc, stream), n)

	r = mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name)
	if !strings.Contains(r.stderr, "mirrored 0 entries") {
		t.Fatalf("second run mirrored something: %s", r.stderr)
	}
	produce(t, topic, numbered(n, 1000, 3))
	r = mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "-o", "json")
	if !strings.Contains(r.stdout, `"entries":1000,`) {
		t.Fatalf("third run: %s", r.stdout)
	}
	checkOnceInOrder(t, readStream(t, rc, stream), n+1000)
}

// A user that may not chain writes (BLPOP) still mirrors everything, one
// write in flight at a time, and is told what to grant.
func TestK2RWithoutBLPOPKeepsOneWriteInFlight(t *testing.T) {
	rc := testenv.Redis(t)
	ctx := context.Background()
	topic := testenv.Topic(t, testenv.Kafka(t), 2)
	stream := testenv.Stream(t, rc)
	name := testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	const n = 20000
	produce(t, topic, numbered(0, n, 2))
	user := testenv.Name(t, "u")
	must(t, rc.Do(ctx, rc.B().AclSetuser().Username(user).Rule("on", ">pw", "~*", "+@all", "-blpop").Build()).Error())
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().AclDeluser().Username(user).Build()) })
	addr := strings.TrimPrefix(testenv.RedisURL(), "redis://")

	r := mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--batch-size", "500", "--redis", "redis://"+user+":pw@"+addr)
	if !strings.Contains(r.stderr, "one write in flight at a time") || !strings.Contains(r.stderr, "BLPOP") {
		t.Errorf("stderr %q: want the warning naming BLPOP", r.stderr)
	}
	checkOnceInOrder(t, readStream(t, rc, stream), n)
}

func TestK2RKillNineLeavesEachRecordOnce(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 3)
	stream := testenv.Stream(t, rc)
	name := testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	const n = 100000
	produce(t, topic, numbered(0, n, 3))
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow", "--batch-size", "500", "--lease-ttl", "1s"}
	xlen := streamLen(rc, stream)
	for i, at := range []int64{1, 12000, 30000, 55000, 80000} {
		p := startXmirror(t, args...)
		testenv.Wait(t, time.Minute, fmt.Sprintf("kill %d: %d entries", i, at), func() bool { return xlen() >= at })
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		t.Logf("kill -9 #%d at %d entries", i+1, xlen())
		waitLeaseExpired(t, rc, "kafka-to-redis", name)
	}
	p := startXmirror(t, args...)
	testenv.Wait(t, time.Minute, "the whole backlog", func() bool { return xlen() >= n })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("follow run stopped with exit %d: %s", code, p.stderr.String())
	}
	checkOnceInOrder(t, readStream(t, rc, stream), n)
}

func TestK2ROnErrorModes(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	produce(t, topic, []*kgo.Record{
		{Value: []byte(`{"n":"1"}`)},
		{Key: []byte("k"), Value: []byte(`not json`), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("hv")}}},
		{Value: []byte(`{"n":"3"}`)},
	})
	fields := func(es []rueidis.XRangeEntry) string {
		var s []string
		for _, e := range es {
			s = append(s, e.FieldValues["n"])
		}
		return strings.Join(s, ",")
	}

	t.Run("fail", func(t *testing.T) {
		stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
		delKeys(t, rc, checkpoint.K2RKey(name, stream))
		r := xmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name)
		if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("topic %q partition 0 offset 1: cannot decode", topic)) {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if got := fields(readStream(t, rc, stream)); got != "1" {
			t.Fatalf("stream holds %q, want the record before the bad one", got)
		}
		pos, _ := rc.Do(context.Background(), rc.B().Hget().Key(checkpoint.K2RKey(name, stream)).Field(topic+":0").Build()).ToString()
		if pos != "1" {
			t.Fatalf("checkpoint at %q, want 1 (the bad record)", pos)
		}
		// Still stuck on it, not past it: the same error again.
		if r := xmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name); r.code != 1 {
			t.Fatalf("rerun: exit %d", r.code)
		}
	})
	t.Run("skip", func(t *testing.T) {
		stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
		delKeys(t, rc, checkpoint.K2RKey(name, stream))
		r := mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--on-error", "skip")
		if !strings.Contains(r.stderr, "mirrored 2 entries") || !strings.Contains(r.stderr, "1 skipped") || !strings.Contains(r.stderr, "offset=1") {
			t.Fatalf("summary: %s", r.stderr)
		}
		if got := fields(readStream(t, rc, stream)); got != "1,3" {
			t.Fatalf("stream holds %q", got)
		}
	})
	t.Run("dead-letter", func(t *testing.T) {
		stream, dlq, name := testenv.Stream(t, rc), testenv.Stream(t, rc), testenv.Name(t, "m")
		delKeys(t, rc, checkpoint.K2RKey(name, stream))
		mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--on-error", "dead-letter", "--dead-letter-stream", dlq)
		if got := fields(readStream(t, rc, stream)); got != "1,3" {
			t.Fatalf("stream holds %q", got)
		}
		dead := readStream(t, rc, dlq)
		if len(dead) != 1 {
			t.Fatalf("dead-letter stream holds %d entries", len(dead))
		}
		f := dead[0].FieldValues
		if f["topic"] != topic || f["partition"] != "0" || f["offset"] != "1" || f["value"] != "not json" || f["key"] != "k" || f["header.h"] != "hv" || !strings.Contains(f["reason"], "not a JSON object") {
			t.Fatalf("dead letter: %v", f)
		}
	})
}

func TestK2RStopsWhenCheckpointMovedOrDamaged(t *testing.T) {
	rc := testenv.Redis(t)
	ctx := context.Background()
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	produce(t, topic, numbered(0, 10, 1))
	mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name)

	// Moved behind the mirror's back while it runs: it stops, naming both
	// offsets and the likely cause.
	p := startXmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow")
	// Once it mirrored a new record, it runs with its position (11) in hand.
	produce(t, topic, numbered(10, 1, 1))
	testenv.Wait(t, 30*time.Second, "the follow run to mirror a record", func() bool {
		n, _ := rc.Do(ctx, rc.B().Xlen().Key(stream).Build()).AsInt64()
		return n == 11
	})
	rc.Do(ctx, rc.B().Hset().Key(key).FieldValue().FieldValue(topic+":0", "7").Build())
	produce(t, topic, numbered(11, 5, 1))
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("mirror did not stop on a moved checkpoint: %s", p.stderr.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.stderr.String(), "holds offset 7, but this mirror continues from offset 11") ||
		!strings.Contains(p.stderr.String(), "another process") {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}

	// A restart goes on from the moved position only if told so; a run
	// against a garbage checkpoint refuses to start.
	rc.Do(ctx, rc.B().Hset().Key(key).FieldValue().FieldValue(topic+":0", "ten").Build())
	r := xmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name)
	if r.code != 1 || !strings.Contains(r.stderr, "not an offset") {
		t.Fatalf("garbage offset: exit %d: %s", r.code, r.stderr)
	}
	rc.Do(ctx, rc.B().Del().Key(key).Build())
	rc.Do(ctx, rc.B().Set().Key(key).Value("junk").Build())
	r = xmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name)
	if r.code != 1 || !strings.Contains(r.stderr, "is not a hash") {
		t.Fatalf("string checkpoint: exit %d: %s", r.code, r.stderr)
	}
}

func TestK2RRawPreserveIDsIsIdempotent(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream), checkpoint.K2RKey(name+"2", stream))
	var recs []*kgo.Record
	for i := 1; i <= 5; i++ {
		recs = append(recs, &kgo.Record{Key: []byte("c"), Value: []byte(fmt.Sprintf("v%d", i)), Headers: []kgo.RecordHeader{
			{Key: "customer", Value: []byte("c")},
			{Key: "xmirror.stream", Value: []byte("src")},
			{Key: "xmirror.id", Value: []byte(fmt.Sprintf("1700000000000-%d", i))},
		}})
	}
	produce(t, topic, recs)
	mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--format", "raw", "--preserve-ids")
	es := readStream(t, rc, stream)
	if len(es) != 5 || es[0].ID != "1700000000000-1" || es[4].ID != "1700000000000-5" ||
		len(es[0].FieldValues) != 2 || es[0].FieldValues["value"] != "v1" || es[0].FieldValues["customer"] != "c" {
		t.Fatalf("entries: %+v", es)
	}
	// A replay under another name finds every ID already there.
	mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name+"2", "--format", "raw", "--preserve-ids")
	if n := len(readStream(t, rc, stream)); n != 5 {
		t.Fatalf("replay added entries: %d", n)
	}
}

func TestK2RBadInput(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 2)
	r := xmirror(t, "k2r", "--topic", topic, "--stream", "x{topc}", "--batch-size", "0", "--on-error", "drop", "--start", "middle", "--on-topic-recreated", "skip")
	if r.code != 2 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"unknown placeholder {topc}", "--batch-size", "--on-error", "--start", "--on-topic-recreated"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r.stderr)
		}
	}
	if r := xmirror(t, "k2r", "--topic", topic, "--name", ""); r.code != 2 || !strings.Contains(r.stderr, "--name must not be empty") {
		t.Errorf("--name given empty: exit %d: %s", r.code, r.stderr)
	}
	// The raw format's field names are refused with another format, given
	// at their defaults too, and beside a format's own problem.
	for _, args := range [][]string{{"--value-field", "value"}, {"--key-field", "other"}, {"--format", "xml", "--value-field", "v"}} {
		r := xmirror(t, append([]string{"k2r", "--topic", topic}, args...)...)
		if r.code != 2 || strings.Count(r.stderr, "--value-field and --key-field are for --format raw") != 1 {
			t.Errorf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		if args[0] == "--format" && !strings.Contains(r.stderr, "--format must be json or raw") {
			t.Errorf("%v: the format's problem is not reported: %s", args, r.stderr)
		}
	}
	if r := xmirror(t, "k2r", "--topic", topic, "--topic", "other", "--stream", "p{partition}"); r.code != 2 {
		t.Errorf("{partition} without {topic} for two topics: exit %d", r.code)
	}
	if r := xmirror(t, "k2r", "--topic", topic, "--stream", "one", "--preserve-ids"); r.code != 2 || !strings.Contains(r.stderr, "one partition per stream") {
		t.Errorf("--preserve-ids into a merged stream: exit %d: %s", r.code, r.stderr)
	}
	missing := testenv.Name(t, "nope")
	if r := xmirror(t, "k2r", "--topic", missing); r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("topic %q", missing)) {
		t.Errorf("missing topic: exit %d: %s", r.code, r.stderr)
	}
	key := testenv.Stream(t, rc)
	rc.Do(context.Background(), rc.B().Set().Key(key).Value("x").Build())
	if r := xmirror(t, "k2r", "--topic", topic, "--stream", key); r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("key %q holds a string", key)) {
		t.Errorf("WRONGTYPE: exit %d: %s", r.code, r.stderr)
	}
	r = xmirror(t, "k2r", "--topic", topic, "--redis", "redis://127.0.0.1:1", "--timeout", "2s")
	if r.code != 1 || !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("unreachable redis: exit %d: %s", r.code, r.stderr)
	}
}
