package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
)

// entryMs is the millisecond part of an entry ID.
func entryMs(t *testing.T, id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		t.Fatalf("entry ID %q: %v", id, err)
	}
	return n
}

func TestOneShotMirrorsBacklogInOrderThenOnlyWhatIsNew(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	mirrorName := testenv.Name(t, "m")
	fields := func(i int) []string { return []string{"value", "v" + strconv.Itoa(i), "n", strconv.Itoa(i)} }

	ids := addEntries(t, rc, stream, 0, 100_000, fields)
	r := mustMirror(t, "redis-to-kafka", "--stream", stream, "--topic", topic, "--key-field", "n", "--name", mirrorName, "--output", "json")
	var sum struct {
		Entries int64  `json:"entries"`
		Stopped string `json:"stopped"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
		t.Fatalf("summary %q: %v", r.stdout, err)
	}
	if sum.Entries != 100_000 || sum.Stopped != "done" {
		t.Fatalf("summary says %d entries, stopped %q; want 100000, done", sum.Entries, sum.Stopped)
	}

	recs := readTopic(t, topic)
	if len(recs) != len(ids) {
		t.Fatalf("topic holds %d records, want %d", len(recs), len(ids))
	}
	for i, rec := range recs {
		wantValue := fmt.Sprintf(`{"value":"v%d","n":"%d"}`, i, i)
		if string(rec.Value) != wantValue {
			t.Fatalf("record %d value %q, want %q", i, rec.Value, wantValue)
		}
		if string(rec.Key) != strconv.Itoa(i) {
			t.Fatalf("record %d key %q, want %q", i, rec.Key, strconv.Itoa(i))
		}
		if s, _ := header(rec, "xmirror.stream"); s != stream {
			t.Fatalf("record %d stream header %q, want %q", i, s, stream)
		}
		if id, _ := header(rec, "xmirror.id"); id != ids[i] {
			t.Fatalf("record %d id header %q, want %q (order or content differs)", i, id, ids[i])
		}
		if got := rec.Timestamp.UnixMilli(); got != entryMs(t, ids[i]) {
			t.Fatalf("record %d timestamp %d, want the ID's milliseconds %d", i, got, entryMs(t, ids[i]))
		}
	}

	more := addEntries(t, rc, stream, 100_000, 1_000, fields)
	r = mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--key-field", "n", "--name", mirrorName, "--output", "json")
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Entries != 1_000 {
		t.Fatalf("second run summary %q: want 1000 entries", r.stdout)
	}
	recs = readTopic(t, topic)
	if len(recs) != 101_000 {
		t.Fatalf("topic holds %d records after the second run, want 101000", len(recs))
	}
	for i, rec := range recs[100_000:] {
		if id, _ := header(rec, "xmirror.id"); id != more[i] {
			t.Fatalf("second run record %d: id %q, want %q", i, id, more[i])
		}
	}

	r = mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--key-field", "n", "--name", mirrorName, "--output", "json")
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Entries != 0 {
		t.Fatalf("third run with nothing new: summary %q, want 0 entries", r.stdout)
	}
}

// exactlyOnce checks that the topic holds each of ids exactly once and in
// stream order.
func exactlyOnce(t *testing.T, topic string, ids []string) {
	t.Helper()
	recs := readTopic(t, topic)
	seen := make(map[string]int, len(recs))
	last := -1
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	var dups, outOfOrder int
	for _, rec := range recs {
		id, _ := header(rec, "xmirror.id")
		seen[id]++
		if seen[id] > 1 {
			dups++
		}
		if i := index[id]; i < last {
			outOfOrder++
		} else {
			last = i
		}
	}
	lost := 0
	for _, id := range ids {
		if seen[id] == 0 {
			lost++
		}
	}
	if lost > 0 || dups > 0 || outOfOrder > 0 || len(recs) != len(ids) {
		t.Fatalf("topic %s: %d records for %d entries: %d lost, %d duplicated, %d out of order", topic, len(recs), len(ids), lost, dups, outOfOrder)
	}
}

func TestKillNineLeavesNothingLostNorDuplicated(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	mirrorName := testenv.Name(t, "m")
	ids := addEntries(t, rc, stream, 0, 100_000, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", mirrorName, "--follow", "--batch-size", "500", "--lease-ttl", "1s"}

	for _, at := range []int64{5_000, 30_000, 60_000} {
		m := startXmirror(t, args...)
		testenv.Wait(t, time.Minute, fmt.Sprintf("%d records in Kafka", at), func() bool { return endOffset(t, adm, topic) >= at })
		m.stop(t, syscall.SIGKILL, 10*time.Second)
		t.Logf("killed at %d records in Kafka", endOffset(t, adm, topic))
		waitLeaseExpired(t, rc, "redis-to-kafka", mirrorName)
	}
	m := startXmirror(t, args...)
	testenv.Wait(t, 2*time.Minute, "the whole backlog in Kafka", func() bool { return endOffset(t, adm, topic) >= int64(len(ids)) })
	if code, took := m.stop(t, syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d after %s; stderr:\n%s", code, took, m.stderr)
	}
	// A last one-shot run finds nothing left to do.
	r := mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", mirrorName, "--output", "json")
	if !strings.Contains(r.stdout, `"entries":0`) {
		t.Fatalf("one-shot after the follow runs mirrored something: %s", r.stdout)
	}
	exactlyOnce(t, topic, ids)
}

func TestSigtermStopsFollowWithinFiveSecondsAndResumes(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	mirrorName := testenv.Name(t, "m")
	ids := addEntries(t, rc, stream, 0, 50_000, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", mirrorName, "--batch-size", "200"}

	m := startXmirror(t, append(args, "--follow")...)
	testenv.Wait(t, time.Minute, "mirroring to start", func() bool { return endOffset(t, adm, topic) >= 1_000 })
	code, took := m.stop(t, syscall.SIGTERM, 5*time.Second)
	if code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0; stderr:\n%s", code, m.stderr)
	}
	t.Logf("stopped %s after SIGTERM with %d records in Kafka", took, endOffset(t, adm, topic))
	more := addEntries(t, rc, stream, 50_000, 100, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	mustMirror(t, args...)
	exactlyOnce(t, topic, append(ids, more...))
}

func TestEntriesSurviveByteForByte(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	many := make([]string, 0, 2000)
	for i := 0; i < 1000; i++ {
		many = append(many, "f"+strconv.Itoa(i), strconv.Itoa(i))
	}
	entries := [][]string{
		{"value", ""}, // empty value
		{"value", "héllo wörld ✓ 日本語 🎉"},           // unicode
		{"value", "\xff\xfe\x00bin\x80ary\xc3"},    // not UTF-8, with NUL
		{"\xffname", "v", "quote\"back\\", "\n\t"}, // odd names
		{"a", "1", "a", "2"},                       // duplicate field names
		many,                                       // 1000 fields
	}
	ids := addEntries(t, rc, stream, 0, len(entries), func(i int) []string { return entries[i] })

	t.Run("json", func(t *testing.T) {
		topic := testenv.Topic(t, kc, 1)
		mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--group", "json", "--name", testenv.Name(t, "m"))
		recs := readTopic(t, topic)
		if len(recs) != len(entries) {
			t.Fatalf("%d records, want %d", len(recs), len(entries))
		}
		want := []string{
			`{"value":""}`,
			`{"value":"héllo wörld ✓ 日本語 🎉"}`,
			"{\"value\":\"\xff\xfe\\u0000bin\x80ary\xc3\"}",
			"{\"\xffname\":\"v\",\"quote\\\"back\\\\\":\"\\n\\t\"}",
			`{"a":"1","a":"2"}`,
		}
		for i, w := range want {
			if string(recs[i].Value) != w {
				t.Errorf("entry %d: value %q, want %q", i, recs[i].Value, w)
			}
		}
		if !strings.HasPrefix(string(recs[5].Value), `{"f0":"0","f1":"1",`) || !strings.HasSuffix(string(recs[5].Value), `"f999":"999"}`) {
			t.Errorf("1000-field entry: value starts %q", recs[5].Value[:40])
		}
		for i, rec := range recs {
			if id, _ := header(rec, "xmirror.id"); id != ids[i] {
				t.Errorf("record %d: id header %q, want %q", i, id, ids[i])
			}
		}
	})

	t.Run("raw", func(t *testing.T) {
		topic := testenv.Topic(t, kc, 1)
		mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--group", "raw", "--format", "raw", "--name", testenv.Name(t, "m"))
		recs := readTopic(t, topic)
		if len(recs) != len(entries) {
			t.Fatalf("%d records, want %d", len(recs), len(entries))
		}
		for i, e := range entries[:3] {
			if recs[i].Value == nil || string(recs[i].Value) != e[1] {
				t.Errorf("entry %d: value %q, want %q", i, recs[i].Value, e[1])
			}
		}
		// An entry without the value field: null value, fields as headers.
		if recs[3].Value != nil {
			t.Errorf("entry without a value field: value %q, want null", recs[3].Value)
		}
		if v, _ := header(recs[3], "\xffname"); v != "v" {
			t.Errorf("header \\xffname = %q, want v", v)
		}
		var as []string
		for _, h := range recs[4].Headers {
			if h.Key == "a" {
				as = append(as, string(h.Value))
			}
		}
		if strings.Join(as, ",") != "1,2" {
			t.Errorf("duplicate fields as headers: %v, want [1 2]", as)
		}
		if n := len(recs[5].Headers); n != 1002 {
			t.Errorf("1000-field entry: %d headers, want 1002 (1000 fields and 2 lineage)", n)
		}
	})
}

func TestRedisToKafkaRefusesBadInput(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	notStream := testenv.Stream(t, rc)
	rc.Do(context.Background(), rc.B().Set().Key(notStream).Value("x").Build())
	missing := testenv.Name(t, "missing")

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no stream flag", []string{"r2k"}, 2, "--stream or --stream-pattern is required"},
		{"bad format and batch size", []string{"r2k", "--stream", stream, "--format", "xml", "--batch-size", "0"}, 2, "--batch-size must be"},
		{"unknown placeholder", []string{"r2k", "--stream", stream, "--topic", "{steam}"}, 2, "unknown placeholder {steam}"},
		{"invalid topic name", []string{"r2k", "--stream", "a:b"}, 2, "invalid topic"},
		{"bad start", []string{"r2k", "--stream", stream, "--start", "yesterday"}, 2, "--start must be"},
		{"empty name", []string{"r2k", "--stream", stream, "--name", ""}, 2, "--name must not be empty"},
		{"empty group", []string{"r2k", "--stream", stream, "--group", ""}, 2, "--group must not be empty"},
		{"negative batch bytes", []string{"r2k", "--stream", stream, "--batch-bytes", "-1"}, 2, "--batch-bytes must not be negative, got -1 (0 turns the byte bound off)"},
		{"malformed redis url", []string{"r2k", "--stream", stream, "--redis", "localhost:6379"}, 2, "redis URL"},
		{"missing stream", []string{"r2k", "--stream", missing, "--topic", topic}, 1, fmt.Sprintf("stream %q does not exist", missing)},
		{"not a stream", []string{"r2k", "--stream", notStream, "--topic", topic}, 1, "is not a stream"},
		{"missing topic", []string{"r2k", "--stream", stream, "--topic", testenv.Name(t, "nope")}, 1, "--create-topic"},
		{"unreachable kafka", []string{"r2k", "--stream", stream, "--topic", topic, "--brokers", "127.0.0.1:1"}, 1, "127.0.0.1:1"},
		{"unreachable redis", []string{"r2k", "--stream", stream, "--topic", topic, "--redis", "redis://127.0.0.1:1"}, 1, "127.0.0.1:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := xmirror(t, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tc.code, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); tc.code == 1 && lines > 0 {
				t.Errorf("error takes %d lines, want one: %q", lines+1, r.stderr)
			}
		})
	}

	t.Run("allow missing", func(t *testing.T) {
		mustMirror(t, "r2k", "--stream", missing, "--stream", stream, "--topic", topic, "--allow-missing")
	})
}

func TestTooLargeEntryStopsTheMirrorRightBeforeIt(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	big := strings.Repeat("x", 2<<20)
	ids := addEntries(t, rc, stream, 0, 5, func(i int) []string {
		if i == 2 {
			return []string{"value", big}
		}
		return []string{"value", strconv.Itoa(i)}
	})
	name := testenv.Name(t, "m")
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name)
	if r.code != 1 || !strings.Contains(r.stderr, ids[2]) {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming entry %s", r.code, r.stderr, ids[2])
	}
	recs := readTopic(t, topic)
	if len(recs) < 2 {
		t.Fatalf("the %d entries before the large one should be in Kafka; found %d records", 2, len(recs))
	}
	// Everything from the large entry on is still pending, nothing before.
	pending, err := rc.Do(context.Background(), rc.B().Xpending().Key(stream).Group(onlyGroup(t, rc, stream)).Start("-").End("+").Count(10).Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	first, _ := pending[0].ToArray()
	if id, _ := first[0].ToString(); id != ids[2] {
		t.Fatalf("first pending entry %s, want the large one %s", id, ids[2])
	}
}

func TestSmallTopicLimitFailsOnlyTheEntryTooLargeForIt(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Name(t, "t")
	limit := "2000"
	ctx := context.Background()
	resp, err := kadm.NewClient(kc).CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &limit}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kadm.NewClient(kc).DeleteTopics(context.Background(), topic) })

	// 200 small entries together exceed the topic's limit, each fits.
	small := addEntries(t, rc, stream, 0, 200, func(i int) []string { return []string{"value", strings.Repeat("s", 60)} })
	mustMirror(t, "r2k", "--stream", stream, "--topic", topic)
	if n := len(readTopic(t, topic)); n != len(small) {
		t.Fatalf("%d records, want %d", n, len(small))
	}
	big := addEntries(t, rc, stream, 200, 3, func(i int) []string {
		if i == 201 {
			return []string{"value", strings.Repeat("b", 5000)}
		}
		return []string{"value", "ok"}
	})
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic)
	if r.code != 1 || !strings.Contains(r.stderr, big[1]) || !strings.Contains(r.stderr, "MESSAGE_TOO_LARGE") {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming entry %s", r.code, r.stderr, big[1])
	}
	recs := readTopic(t, topic)
	if id, _ := header(recs[len(recs)-1], "xmirror.id"); id != big[0] {
		t.Fatalf("last record in Kafka is %s, want the entry before the large one, %s", id, big[0])
	}
}

func TestReadBackFinishesWhenATransactionMarkerEndsThePartition(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	ids := addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name)

	// Another producer writes a transaction: the partition now ends with
	// a commit marker.
	tx := testenv.Kafka(t, kgo.TransactionalID(testenv.Name(t, "tx")), kgo.DefaultProduceTopic(topic))
	must(t, tx.BeginTransaction())
	must(t, tx.ProduceSync(ctx, &kgo.Record{Value: []byte("other")}).FirstErr())
	must(t, tx.EndTransaction(ctx, kgo.TryCommit))

	// An interrupted run left two entries pending: the restart reads the
	// topic back to its end, marker included, and must finish.
	more := addEntries(t, rc, stream, 3, 2, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	must(t, rc.Do(ctx, rc.B().Xreadgroup().Group("xmirror:"+name, name).Count(10).Streams().Key(stream).Id(">").Build()).Error())
	r := mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--timeout", "10s", "--output", "json")
	if !strings.Contains(r.stdout, `"entries":2`) {
		t.Fatalf("summary %s: want the 2 pending entries", r.stdout)
	}
	var got []string
	for _, rec := range readTopic(t, topic) {
		if id, ok := header(rec, "xmirror.id"); ok {
			got = append(got, id)
		}
	}
	if want := append(ids, more...); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("mirrored %v, want %v", got, want)
	}
}

func TestOneShotMirrorsEntriesOlderThanItsTimeout(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	old := time.Now().Add(-time.Hour).UnixMilli()
	must(t, rc.Do(context.Background(), rc.B().Xadd().Key(stream).Id(fmt.Sprintf("%d-0", old)).FieldValue().FieldValue("value", "from an hour ago").Build()).Error())
	addEntries(t, rc, stream, 0, 1, func(int) []string { return []string{"value", "now"} })
	r := mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--timeout", "5s", "--output", "json")
	if !strings.Contains(r.stdout, `"entries":2`) {
		t.Fatalf("summary %s: want both entries", r.stdout)
	}
	if recs := readTopic(t, topic); len(recs) != 2 || recs[0].Timestamp.UnixMilli() != old {
		t.Fatalf("records %d, first timestamp %v; want 2, the entry's time", len(recs), recs[0].Timestamp)
	}
}

func TestARedisErrorReplyFailsAtOnceInsteadOfBeingRetried(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	// A user that may do everything but read streams through a group.
	user := testenv.Name(t, "u")
	must(t, rc.Do(ctx, rc.B().AclSetuser().Username(user).Rule("on", ">pw", "~*", "+@all", "-xreadgroup").Build()).Error())
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().AclDeluser().Username(user).Build()) })
	addr := strings.TrimPrefix(testenv.RedisURL(), "redis://")

	begin := time.Now()
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--redis", "redis://"+user+":pw@"+addr, "--timeout", "20s")
	if r.code != 1 || !strings.Contains(r.stderr, "NOPERM") {
		t.Fatalf("exit %d, stderr %q; want exit 1 with the server's NOPERM", r.code, r.stderr)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("took %s: a refusal by Redis was retried as if the connection had failed", took)
	}
}
