package cmd_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/internal/testenv"
)

// xaddAt adds an entry with the given ID and fields.
func xaddAt(t *testing.T, c rueidis.Client, stream, id string, fv ...string) {
	t.Helper()
	cmd := c.B().Xadd().Key(stream).Id(id).FieldValue()
	for i := 0; i < len(fv); i += 2 {
		cmd = cmd.FieldValue(fv[i], fv[i+1])
	}
	must(t, c.Do(context.Background(), cmd.Build()).Error())
}

// topicWithConfigs creates a unique one-partition topic with the given
// topic configs, deleted when the test ends.
func topicWithConfigs(t *testing.T, configs map[string]string) string {
	t.Helper()
	adm := kadm.NewClient(testenv.Kafka(t))
	topic := testenv.Name(t, "t")
	cfg := map[string]*string{}
	for k, v := range configs {
		cfg[k] = &v
	}
	resp, err := adm.CreateTopic(context.Background(), 1, 1, cfg, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), topic) })
	waitPartitions(t, adm, topic, 1)
	return topic
}

// TestEntryTwoHoursAheadIsHandledByOnErrorAndTheRestDelivered: one stream
// ends with an entry whose ID is 2 h ahead (Kafka's default accepts an
// hour), another stream in the same batch holds valid entries only.
func TestEntryTwoHoursAheadIsHandledByOnErrorAndTheRestDelivered(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	now := time.Now().UnixMilli()
	setup := func(t *testing.T) (a, b, topic, bad string, valid []string) {
		a, b = testenv.Stream(t, rc), testenv.Stream(t, rc)
		topic = testenv.Topic(t, kc, 1)
		waitPartitions(t, kadm.NewClient(kc), topic, 1)
		for i := range 3 {
			id := fmt.Sprintf("%d-%d", now-10_000, i)
			xaddAt(t, rc, a, id, "value", "a"+strconv.Itoa(i))
			valid = append(valid, a+"/"+id)
		}
		bad = fmt.Sprintf("%d-0", now+2*time.Hour.Milliseconds())
		xaddAt(t, rc, a, bad, "value", "ahead", "reason", "a field named like a dead-letter field")
		for i := range 3 {
			id := fmt.Sprintf("%d-%d", now-5_000, i)
			xaddAt(t, rc, b, id, "value", "b"+strconv.Itoa(i))
			valid = append(valid, b+"/"+id)
		}
		return a, b, topic, bad, valid
	}
	delivered := func(t *testing.T, topic string) []string {
		var got []string
		for _, rec := range readTopic(t, topic) {
			s, _ := header(rec, "xmirror.stream")
			id, _ := header(rec, "xmirror.id")
			if rec.Timestamp.UnixMilli() < 0 {
				t.Fatalf("record %s/%s has the negative timestamp %d", s, id, rec.Timestamp.UnixMilli())
			}
			got = append(got, s+"/"+id)
		}
		return got
	}
	pendingOf := func(t *testing.T, stream string) int64 {
		n, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group(onlyGroup(t, rc, stream)).Build()).ToArray()
		if err != nil {
			t.Fatal(err)
		}
		count, _ := n[0].AsInt64()
		return count
	}

	t.Run("fail names the entry and delivers the ones before it", func(t *testing.T) {
		a, b, topic, bad, valid := setup(t)
		r := xmirror(t, "r2k", "--stream", a, "--stream", b, "--topic", topic, "--name", testenv.Name(t, "m"), "--timeout", "10s")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1; stderr %s", r.code, r.stderr)
		}
		for _, want := range []string{bad, strconv.Quote(a), strconv.Quote(topic), "INVALID_TIMESTAMP", "message.timestamp.after.max.ms=3600000", "--on-error"} {
			if !strings.Contains(r.stderr, want) {
				t.Fatalf("stderr %q does not name %s", r.stderr, want)
			}
		}
		if got, want := delivered(t, topic), valid[:3]; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("topic holds %v, want the entries before the refused one, %v", got, want)
		}
		if n := pendingOf(t, a); n != 1 {
			t.Fatalf("stream %s has %d pending entries, want the refused one only", a, n)
		}
	})

	t.Run("skip counts it and delivers every valid entry", func(t *testing.T) {
		a, b, topic, bad, valid := setup(t)
		r := mustMirror(t, "r2k", "--stream", a, "--stream", b, "--topic", topic, "--on-error", "skip", "--output", "json")
		if !strings.Contains(r.stdout, `"entries":6`) || !strings.Contains(r.stdout, `"skipped":1`) {
			t.Fatalf("summary %s: want 6 entries, 1 skipped", r.stdout)
		}
		if !strings.Contains(r.stderr, bad) {
			t.Fatalf("stderr %q: want a warning naming %s", r.stderr, bad)
		}
		if got := delivered(t, topic); strings.Join(got, ",") != strings.Join(valid, ",") {
			t.Fatalf("topic holds %v, want %v", got, valid)
		}
		if n := pendingOf(t, a); n != 0 {
			t.Fatalf("stream %s has %d pending entries, want none", a, n)
		}
	})

	t.Run("dead-letter stores it", func(t *testing.T) {
		a, b, topic, bad, valid := setup(t)
		dead := testenv.Stream(t, rc)
		r := mustMirror(t, "r2k", "--stream", a, "--stream", b, "--topic", topic, "--on-error", "dead-letter", "--dead-letter-stream", dead, "--output", "json")
		if !strings.Contains(r.stdout, `"entries":6`) || !strings.Contains(r.stdout, `"skipped":1`) {
			t.Fatalf("summary %s: want 6 entries, 1 skipped", r.stdout)
		}
		if got := delivered(t, topic); strings.Join(got, ",") != strings.Join(valid, ",") {
			t.Fatalf("topic holds %v, want %v", got, valid)
		}
		// Read with redis-cli, which shares no code with xmirror.
		out := redisCLI(t, "XRANGE", dead, "-", "+")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		// ID, then field/value pairs.
		if len(lines) != 1+2*7 {
			t.Fatalf("dead-letter stream %s holds %q, want one entry of 7 fields", dead, out)
		}
		fields := lines[1:]
		want := map[int]string{0: "reason", 2: "stream", 3: a, 4: "id", 5: bad, 6: "topic", 7: topic, 8: "timestamp_ms", 9: strings.TrimSuffix(bad, "-0"),
			10: "field.value", 11: "ahead", 12: "field.reason", 13: "a field named like a dead-letter field"}
		for i, w := range want {
			if fields[i] != w {
				t.Fatalf("dead letter field %d is %q, want %q; all: %q", i, fields[i], w, fields)
			}
		}
		if !strings.Contains(fields[1], "INVALID_TIMESTAMP") {
			t.Fatalf("reason %q does not say why", fields[1])
		}
		if n := pendingOf(t, a); n != 0 {
			t.Fatalf("stream %s has %d pending entries, want none", a, n)
		}
	})
}

// redisCLI runs redis-cli --raw against the test Redis and returns its
// output: one line per element of the reply.
func redisCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("redis-cli", append([]string{"-u", testenv.RedisURL(), "--raw"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestEntryIDBeyond2262NeverGetsANegativeTimestamp(t *testing.T) {
	rc := testenv.Redis(t)
	const huge = "9999999999999-0"

	t.Run("a topic that accepts any timestamp gets the largest one", func(t *testing.T) {
		stream := testenv.Stream(t, rc)
		topic := topicWithConfigs(t, map[string]string{"message.timestamp.after.max.ms": "9223372036854775807"})
		xaddAt(t, rc, stream, "1-0", "value", "first")
		xaddAt(t, rc, stream, huge, "value", "far future")
		mustMirror(t, "r2k", "--stream", stream, "--topic", topic)
		recs := readTopic(t, topic)
		if len(recs) != 2 {
			t.Fatalf("%d records, want 2", len(recs))
		}
		if got := recs[1].Timestamp.UnixMilli(); got != 9223372036854 {
			t.Fatalf("entry %s got the timestamp %d, want it clamped to 9223372036854", huge, got)
		}
	})

	t.Run("log append time", func(t *testing.T) {
		stream := testenv.Stream(t, rc)
		topic := topicWithConfigs(t, map[string]string{"message.timestamp.type": "LogAppendTime"})
		xaddAt(t, rc, stream, huge, "value", "far future")
		before := time.Now().Add(-time.Minute)
		mustMirror(t, "r2k", "--stream", stream, "--topic", topic)
		recs := readTopic(t, topic)
		if len(recs) != 1 || recs[0].Timestamp.Before(before) {
			t.Fatalf("records %d, timestamp %v; want 1, stamped by the broker", len(recs), recs)
		}
	})

	t.Run("skip on a topic with the default bounds", func(t *testing.T) {
		stream := testenv.Stream(t, rc)
		topic := testenv.Topic(t, testenv.Kafka(t), 1)
		waitPartitions(t, kadm.NewClient(testenv.Kafka(t)), topic, 1)
		now := time.Now().UnixMilli()
		xaddAt(t, rc, stream, fmt.Sprintf("%d-0", now), "value", "now")
		xaddAt(t, rc, stream, huge, "value", "far future")
		r := mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--on-error", "skip", "--output", "json")
		if !strings.Contains(r.stdout, `"entries":1`) || !strings.Contains(r.stdout, `"skipped":1`) {
			t.Fatalf("summary %s: want 1 entry, 1 skipped", r.stdout)
		}
		recs := readTopic(t, topic)
		if len(recs) != 1 || recs[0].Timestamp.UnixMilli() != now {
			t.Fatalf("records %v; want only the entry of now", recs)
		}
	})

	t.Run("timestamp now", func(t *testing.T) {
		stream := testenv.Stream(t, rc)
		topic := testenv.Topic(t, testenv.Kafka(t), 1)
		waitPartitions(t, kadm.NewClient(testenv.Kafka(t)), topic, 1)
		xaddAt(t, rc, stream, huge, "value", "far future")
		before := time.Now().Add(-time.Second)
		mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--timestamp", "now")
		recs := readTopic(t, topic)
		if len(recs) != 1 || recs[0].Timestamp.Before(before) || recs[0].Timestamp.After(time.Now().Add(time.Second)) {
			t.Fatalf("records %v; want one stamped with the time it was produced", recs)
		}
	})
}

// TestFollowGoesPastAnEntryTwoHoursAheadWithSkip: the check is against the
// clock of each batch, and a follow run keeps going.
func TestFollowGoesPastAnEntryTwoHoursAheadWithSkip(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	a, b := testenv.Stream(t, rc), testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	waitPartitions(t, adm, topic, 1)
	p := startXmirror(t, "r2k", "--stream", a, "--stream", b, "--topic", topic, "--on-error", "skip", "--follow", "--output", "json")
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	addEntries(t, rc, a, 0, 5, value)
	testenv.Wait(t, 30*time.Second, "5 records in Kafka", func() bool { return endOffset(t, adm, topic) == 5 })
	bad := fmt.Sprintf("%d-0", time.Now().Add(2*time.Hour).UnixMilli())
	xaddAt(t, rc, a, bad, "value", "ahead")
	addEntries(t, rc, b, 0, 5, value)
	testenv.Wait(t, 30*time.Second, "10 records in Kafka", func() bool { return endOffset(t, adm, topic) == 10 })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr %s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), bad) {
		t.Fatalf("stderr %q: want a warning naming %s", p.stderr.String(), bad)
	}
	for _, rec := range readTopic(t, topic) {
		if id, _ := header(rec, "xmirror.id"); id == bad {
			t.Fatalf("the entry 2 h ahead was written")
		}
	}
}

func TestRedisToKafkaOnErrorAndTimestampFlagsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--on-error", "ignore"}, "--on-error must be fail, skip or dead-letter"},
		{[]string{"--on-error", "dead-letter"}, "--on-error dead-letter needs --dead-letter-stream"},
		{[]string{"--dead-letter-stream", "d"}, "--dead-letter-stream needs --on-error dead-letter"},
		{[]string{"--on-error", "dead-letter", "--dead-letter-stream", "s"}, "is also a --stream"},
		{[]string{"--timestamp", "log"}, "--timestamp must be id or now"},
	} {
		r := xmirror(t, append([]string{"r2k", "--stream", "s"}, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 saying %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

func TestDeadLetterKeyThatIsNotAStreamIsRefusedAtStart(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	dead := testenv.Stream(t, rc)
	must(t, rc.Do(context.Background(), rc.B().Set().Key(dead).Value("x").Build()).Error())
	addEntries(t, rc, stream, 0, 1, func(int) []string { return []string{"value", "v"} })
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--on-error", "dead-letter", "--dead-letter-stream", dead)
	if r.code != 1 || !strings.Contains(r.stderr, strconv.Quote(dead)) || !strings.Contains(r.stderr, "not a stream") {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming the dead-letter key", r.code, r.stderr)
	}
}
