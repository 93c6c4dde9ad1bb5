package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// streamsOnce fails unless topic holds, for each source stream of want
// (its xmirror.stream header), exactly those entry IDs, once each and in
// order, and no record of any other stream.
func streamsOnce(t *testing.T, topic string, want map[string][]string) {
	t.Helper()
	got := map[string][]string{}
	for _, r := range readTopic(t, topic) {
		s, _ := header(r, "xmirror.stream")
		id, _ := header(r, "xmirror.id")
		got[s] = append(got[s], id)
	}
	for s, ids := range got {
		if _, ok := want[s]; !ok {
			t.Errorf("topic %s holds %d records of stream %s, which it should not", topic, len(ids), s)
		}
	}
	for s, ids := range want {
		if !slices.Equal(got[s], ids) {
			t.Errorf("topic %s: stream %s's records are %d entries %v…, want its %d entries once, in order", topic, s, len(got[s]), head(got[s]), len(ids))
		}
	}
}

func head(ids []string) []string { return ids[:min(len(ids), 3)] }

// descriptor reads what a mirror recorded of itself, with a plain client.
func descriptor(t *testing.T, rc rueidis.Client, kind, name string) map[string]string {
	t.Helper()
	d, err := rc.Do(context.Background(), rc.B().Hgetall().Key(checkpoint.DescriptorKey(kind, name)).Build()).AsStrMap()
	if err != nil {
		t.Fatalf("descriptor of %s: %v", name, err)
	}
	return d
}

// deleteTopicsAfter deletes topics xmirror created for the test when it
// ends.
func deleteTopicsAfter(t *testing.T, kc *kgo.Client, topics ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kadm.NewClient(kc).DeleteTopics(ctx, topics...)
	})
}

// TestStreamPatternOneShotMirrorsEachMatchingStreamOnce: three streams
// matching a pattern are mirrored, each entry once, one that does not
// match never; a stream an explicit --stream and two patterns all name
// is mirrored once; a pattern that matches nothing is said so, and is no
// error. The descriptor records the patterns and the streams taken on.
// Run again, only what was added since is mirrored.
func TestStreamPatternOneShotMirrorsEachMatchingStreamOnce(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	prefix := testenv.Name(t, "p")
	a, b, c, other := prefix+".a", prefix+".b", prefix+".c", prefix+"_other"
	name := testenv.Name(t, "m")
	delKeys(t, rc, a, b, c, other, checkpoint.R2KKey(name), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, name))
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	want := map[string][]string{
		a: addEntries(t, rc, a, 0, 100, fields),
		b: addEntries(t, rc, b, 0, 200, fields),
		c: addEntries(t, rc, c, 0, 300, fields),
	}
	addEntries(t, rc, other, 0, 50, fields)

	args := []string{"r2k", "--stream", a, "--stream-pattern", prefix + ".*", "--stream-pattern", prefix + ".[ab]",
		"--stream-pattern", prefix + "-none-*", "--topic", topic, "--name", name, "-o", "json"}
	r := mustMirror(t, args...)
	var sum struct {
		Entries int64 `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Entries != 600 {
		t.Fatalf("summary %q (%v): want 600 entries\nstderr: %s", r.stdout, err, r.stderr)
	}
	if !strings.Contains(r.stderr, `msg="no stream matches the pattern; nothing to mirror for it"`) || !strings.Contains(r.stderr, prefix+"-none-*") {
		t.Errorf("a pattern matching nothing is not reported:\n%s", r.stderr)
	}
	streamsOnce(t, topic, want)

	d := descriptor(t, rc, checkpoint.KindRedisToKafka, name)
	if src := d["source"]; src != a+",~"+prefix+".*,~"+prefix+".[ab],~"+prefix+"-none-*" {
		t.Errorf("descriptor source %q: want the stream and each pattern", src)
	}
	var streams []string
	if err := json.Unmarshal([]byte(d["streams"]), &streams); err != nil || !slices.Equal(streams, []string{a, b, c}) {
		t.Errorf("descriptor streams %q (%v): want [%s %s %s]", d["streams"], err, a, b, c)
	}

	want[c] = append(want[c], addEntries(t, rc, c, 300, 10, fields)...)
	addEntries(t, rc, other, 50, 10, fields)
	r = mustMirror(t, args...)
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Entries != 10 {
		t.Fatalf("second run: summary %q: want 10 entries", r.stdout)
	}
	streamsOnce(t, topic, want)
}

// TestStreamPatternMatchingNothingMirrorsNothing: a one-shot run whose only
// pattern matches no stream exits 0, says so and mirrors nothing.
func TestStreamPatternMatchingNothingMirrorsNothing(t *testing.T) {
	testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	pattern := testenv.Name(t, "none") + "*"
	r := mustMirror(t, "r2k", "--stream-pattern", pattern, "--topic", topic, "--name", testenv.Name(t, "m"))
	for _, want := range []string{`msg="no stream matches the pattern; nothing to mirror for it"`, "mirrored 0 entries"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if n := len(readTopic(t, topic)); n != 0 {
		t.Errorf("topic holds %d records, want none", n)
	}
}

// TestStreamPatternFollowMirrorsANewStreamFromItsFirstEntry: a follow run
// with --start latest takes on a stream created during the run within
// the rescan interval, from its first entry, into a topic --create-topic
// makes for it; every entry once.
func TestStreamPatternFollowMirrorsANewStreamFromItsFirstEntry(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	prefix := testenv.Name(t, "p")
	a, b := prefix+".a", prefix+".b"
	name := testenv.Name(t, "m")
	delKeys(t, rc, a, b, checkpoint.R2KKey(name), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, name))
	deleteTopicsAfter(t, kc, a, b)
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	addEntries(t, rc, a, 0, 20, fields) // before the start: latest leaves them

	run := startXmirror(t, "r2k", "--follow", "--stream-pattern", prefix+".*", "--create-topic", "--start", "latest",
		"--rescan", "1s", "--name", name, "--lease-ttl", "5s")
	testenv.Wait(t, 30*time.Second, "the group on the stream there at start", func() bool {
		groups, err := rc.Do(context.Background(), rc.B().XinfoGroups().Key(a).Build()).ToArray()
		return err == nil && len(groups) == 1
	})
	wantA := addEntries(t, rc, a, 20, 30, fields)
	testenv.Wait(t, 30*time.Second, "the entries added after the start", func() bool { return endOffset(t, nil, a) == 30 })

	created := time.Now()
	wantB := addEntries(t, rc, b, 0, 40, fields)
	testenv.Wait(t, 30*time.Second, "the new stream's entries", func() bool { return endOffset(t, nil, b) == 40 })
	t.Logf("the new stream's entries arrived %s after it was created (--rescan 1s)", time.Since(created).Round(10*time.Millisecond))
	if !strings.Contains(run.stderr.String(), `msg="new streams match the patterns; setting the mirror up again to mirror them from their first entry"`) {
		t.Errorf("taking the new stream on is not logged:\n%s", run.stderr.String())
	}
	wantA = append(wantA, addEntries(t, rc, a, 50, 10, fields)...)
	wantB = append(wantB, addEntries(t, rc, b, 40, 10, fields)...)
	testenv.Wait(t, 30*time.Second, "more entries of both", func() bool {
		return endOffset(t, nil, a) == 40 && endOffset(t, nil, b) == 50
	})
	if code, _ := run.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\nstderr: %s", code, run.stderr.String())
	}
	exactlyOnce(t, a, wantA)
	exactlyOnce(t, b, wantB)
}

// TestStreamPatternFollowLeavesOutANewStreamUntilItsTopicExists: without
// --create-topic, a new stream whose topic is missing is left out with a
// warning naming it, the other stream goes on, and once the topic exists
// the new stream is mirrored from its first entry.
func TestStreamPatternFollowLeavesOutANewStreamUntilItsTopicExists(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	prefix := testenv.Name(t, "p")
	a, b := prefix+".a", prefix+".b"
	testenv.NamedTopic(t, kc, a, 1)
	name := testenv.Name(t, "m")
	delKeys(t, rc, a, b, checkpoint.R2KKey(name), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, name))
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	wantA := addEntries(t, rc, a, 0, 20, fields)

	run := startXmirror(t, "r2k", "--follow", "--stream-pattern", prefix+".*", "--rescan", "1s", "--name", name, "--lease-ttl", "5s")
	testenv.Wait(t, 30*time.Second, "the stream there at start", func() bool { return endOffset(t, nil, a) == 20 })
	wantB := addEntries(t, rc, b, 0, 30, fields)
	testenv.Wait(t, 30*time.Second, "the warning about the new stream's topic", func() bool {
		s := run.stderr.String()
		return strings.Contains(s, `msg="stream matches a pattern but is left out; the other streams are mirrored" mirror=`+name+" stream="+b) &&
			strings.Contains(s, "pass --create-topic")
	})
	wantA = append(wantA, addEntries(t, rc, a, 20, 10, fields)...)
	testenv.Wait(t, 30*time.Second, "the other stream going on", func() bool { return endOffset(t, nil, a) == 30 })

	testenv.NamedTopic(t, kc, b, 1)
	testenv.Wait(t, 30*time.Second, "the new stream once its topic exists", func() bool { return endOffset(t, nil, b) == 30 })
	if code, _ := run.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\nstderr: %s", code, run.stderr.String())
	}
	exactlyOnce(t, a, wantA)
	exactlyOnce(t, b, wantB)
	if n := strings.Count(run.stderr.String(), "is left out"); n != 1 {
		t.Errorf("the missing topic was warned about %d times, want once:\n%s", n, run.stderr.String())
	}
}

// ns reads the "n" fields of a stream's entries, with a plain client.
func ns(t *testing.T, rc rueidis.Client, stream string) []int {
	t.Helper()
	var out []int
	for _, e := range readStream(t, rc, stream) {
		n, err := strconv.Atoi(e.FieldValues["n"])
		if err != nil {
			t.Fatalf("stream %s entry %s: n %q", stream, e.ID, e.FieldValues["n"])
		}
		out = append(out, n)
	}
	return out
}

// exactlyNs fails unless the stream holds records from..to-1 once each.
func exactlyNs(t *testing.T, rc rueidis.Client, stream string, from, to int) {
	t.Helper()
	got := ns(t, rc, stream)
	slices.Sort(got)
	want := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		want = append(want, i)
	}
	if !slices.Equal(got, want) {
		t.Errorf("stream %s holds %d entries (%v…), want records %d to %d once each", stream, len(got), got[:min(len(got), 5)], from, to-1)
	}
}

// TestTopicRegexFollowMirrorsANewTopicOnce: kafka-to-redis with an
// explicit --topic that two regexes match too, --start latest and a
// {topic} stream template: the explicit topic is mirrored once, from the
// start of the run; a topic created during the run that matches is taken
// on within the rescan interval and mirrored from its first record, every
// record once; a topic that does not match never.
func TestTopicRegexFollowMirrorsANewTopicOnce(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	prefix := testenv.Name(t, "t")
	a, b, other := prefix+".a", prefix+".b", prefix+"_other"
	testenv.NamedTopic(t, kc, a, 1)
	testenv.NamedTopic(t, kc, other, 1)
	name := testenv.Name(t, "m")
	delKeys(t, rc, "c:"+a, "c:"+b, "c:"+other, checkpoint.K2RKey(name, "c:"+a), checkpoint.K2RKey(name, "c:"+b),
		checkpoint.DescriptorKey(checkpoint.KindKafkaToRedis, name))
	produceN(t, kc, a, 0, 20) // before the start: latest leaves them
	produceN(t, kc, other, 0, 20)

	re, re2 := "^"+regexp.QuoteMeta(prefix)+`\.`, "^"+regexp.QuoteMeta(prefix)+`\.[ab]$`
	run := startXmirror(t, "k2r", "--follow", "--topic", a, "--topic-regex", re, "--topic-regex", re2,
		"--stream", "c:{topic}", "--start", "latest", "--rescan", "1s", "--name", name, "--lease-ttl", "5s")
	testenv.Wait(t, 30*time.Second, "the start of the topic there at start", func() bool {
		n, err := rc.Do(context.Background(), rc.B().Hexists().Key(checkpoint.K2RKey(name, "c:"+a)).Field(a+":0").Build()).AsBool()
		return err == nil && n
	})
	produceN(t, kc, a, 20, 30)
	testenv.Wait(t, 30*time.Second, "the records produced after the start", func() bool { return streamLen(rc, "c:"+a)() == 30 })

	testenv.NamedTopic(t, kc, b, 2)
	produceN(t, kc, b, 0, 40)
	produced := time.Now()
	testenv.Wait(t, 30*time.Second, "the new topic's records", func() bool { return streamLen(rc, "c:"+b)() == 40 })
	t.Logf("the new topic's records arrived %s after they were produced (--rescan 1s)", time.Since(produced).Round(10*time.Millisecond))
	produceN(t, kc, a, 50, 10)
	produceN(t, kc, b, 40, 10)
	testenv.Wait(t, 30*time.Second, "more records of both", func() bool {
		return streamLen(rc, "c:"+a)() == 40 && streamLen(rc, "c:"+b)() == 50
	})
	if code, _ := run.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\nstderr: %s", code, run.stderr.String())
	}
	if !strings.Contains(run.stderr.String(), `msg="mirroring new topics matching the regexes from their first record"`) {
		t.Errorf("taking the new topic on is not logged:\n%s", run.stderr.String())
	}
	exactlyNs(t, rc, "c:"+a, 20, 60)
	exactlyNs(t, rc, "c:"+b, 0, 50)
	if n := streamLen(rc, "c:"+other)(); n != 0 {
		t.Errorf("the topic that matches no regex was mirrored: %d entries", n)
	}
	d := descriptor(t, rc, checkpoint.KindKafkaToRedis, name)
	if src := d["source"]; src != a+",~"+re+",~"+re2 {
		t.Errorf("descriptor source %q: want the topic and each regex", src)
	}
	var topics []string
	if err := json.Unmarshal([]byte(d["topics"]), &topics); err != nil || !slices.Equal(topics, []string{a, b}) {
		t.Errorf("descriptor topics %q (%v): want [%s %s]", d["topics"], err, a, b)
	}
}

// TestTopicRegexOneShotMirrorsMatchingTopicsOnce: a one-shot run mirrors
// the topics a regex matches to their end, each record once, and leaves
// the others; a regex that matches nothing is said so.
func TestTopicRegexOneShotMirrorsMatchingTopicsOnce(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	prefix := testenv.Name(t, "t")
	a, b, other := prefix+".a", prefix+".b", prefix+"_other"
	for _, topic := range []string{a, b, other} {
		testenv.NamedTopic(t, kc, topic, 2)
		produceN(t, kc, topic, 0, 100)
	}
	name := testenv.Name(t, "m")
	delKeys(t, rc, a, b, other, checkpoint.K2RKey(name, a), checkpoint.K2RKey(name, b), checkpoint.DescriptorKey(checkpoint.KindKafkaToRedis, name))
	r := mustMirror(t, "k2r", "--topic-regex", "^"+regexp.QuoteMeta(prefix)+`\.`, "--topic-regex", "^"+regexp.QuoteMeta(prefix)+"-none", "--name", name)
	for _, want := range []string{"mirrored 200 entries", `msg="no topic matches the regex; nothing to mirror for it"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	exactlyNs(t, rc, a, 0, 100)
	exactlyNs(t, rc, b, 0, 100)
	if n := streamLen(rc, other)(); n != 0 {
		t.Errorf("the topic that matches no regex was mirrored: %d entries", n)
	}
}

// TestPatternFlagsRefuseBadValues: a regex that does not compile, an
// empty pattern, a rescan that is not positive and neither names nor
// patterns are usage errors (exit 2) naming the flag.
func TestPatternFlagsRefuseBadValues(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"k2r", "--topic-regex", "orders.("}, `--topic-regex "orders.(" is not a regular expression`},
		{[]string{"k2r", "--topic", "t", "--topic-regex", ""}, "--topic-regex must not be empty"},
		{[]string{"k2r", "--topic-regex", "^t", "--rescan", "0s"}, "--rescan must be positive"},
		{[]string{"k2r"}, "--topic or --topic-regex is required"},
		{[]string{"r2k", "--stream-pattern", ""}, "--stream-pattern must not be empty"},
		{[]string{"r2k", "--stream-pattern", "o:*", "--rescan", "-1s"}, "--rescan must be positive"},
		{[]string{"r2k"}, "--stream or --stream-pattern is required"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := xmirror(t, tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 naming %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

// TestRunConfigMirrorsAStreamPattern: a mirrors file's stream-pattern key
// is --stream-pattern.
func TestRunConfigMirrorsAStreamPattern(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	prefix := testenv.Name(t, "p")
	a, b := prefix+":a", prefix+":b"
	name := testenv.Name(t, "m")
	delKeys(t, rc, a, b, checkpoint.R2KKey(name), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, name))
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	want := map[string][]string{a: addEntries(t, rc, a, 0, 30, fields), b: addEntries(t, rc, b, 0, 40, fields)}
	file := writeFile(t, t.TempDir(), "mirrors.yaml", fmt.Sprintf(`redis: ${XMIRROR_REDIS}
brokers: ${XMIRROR_BROKERS}
mirrors:
  - name: %s
    direction: redis-to-kafka
    stream-pattern: ["%s:*"]
    topic: %s
`, name, prefix, topic))
	r := mustMirror(t, "run", "--config", file, "--once", "-o", "json")
	if !strings.Contains(r.stdout, `"entries": 70,`) {
		t.Fatalf("run --once: %s\nstderr: %s", r.stdout, r.stderr)
	}
	streamsOnce(t, topic, want)
}

// TestStreamPatternOneShotRefusesAMatchItCannotMirror: a one-shot run
// stops before mirroring anything when a matching stream's name makes no
// valid topic, or its topic does not exist, naming the stream.
func TestStreamPatternOneShotRefusesAMatchItCannotMirror(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	prefix := testenv.Name(t, "p")
	good, colon := prefix+".a", prefix+":b"
	testenv.NamedTopic(t, kc, good, 1)
	name := testenv.Name(t, "m")
	delKeys(t, rc, good, colon, checkpoint.R2KKey(name), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, name))
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	addEntries(t, rc, good, 0, 10, fields)
	addEntries(t, rc, colon, 0, 10, fields)

	r := xmirror(t, "r2k", "--stream-pattern", prefix+"*", "--name", name)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("stream %q (matching --stream-pattern %q) maps to an invalid topic", colon, prefix+"*")) {
		t.Errorf("a match without a valid topic name: exit %d, stderr %q; want exit 1 naming the stream", r.code, r.stderr)
	}
	rc.Do(context.Background(), rc.B().Del().Key(colon).Build())
	addEntries(t, rc, prefix+".c", 0, 10, fields)
	delKeys(t, rc, prefix+".c")
	r = xmirror(t, "r2k", "--stream-pattern", prefix+"*", "--name", name)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("topic %q does not exist; create it, or pass --create-topic", prefix+".c")) {
		t.Errorf("a match whose topic is missing: exit %d, stderr %q; want exit 1 naming the topic", r.code, r.stderr)
	}
	if n := len(readTopic(t, good)); n != 0 {
		t.Errorf("%d records mirrored by runs that stopped at their start, want none", n)
	}
}

// TestPatternFollowRunsStartedBeforeAnyMatchWaitForOne: a follow run whose
// pattern (regex) matches nothing yet waits, and mirrors the first
// matching stream (topic) once it appears, from its first entry.
func TestPatternFollowRunsStartedBeforeAnyMatchWaitForOne(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	prefix := testenv.Name(t, "p")
	stream, topic := prefix+".s", prefix+".t"
	r2kName, k2rName := testenv.Name(t, "m"), testenv.Name(t, "m")
	delKeys(t, rc, stream, "c:"+topic, checkpoint.R2KKey(r2kName), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, r2kName),
		checkpoint.K2RKey(k2rName, "c:"+topic), checkpoint.DescriptorKey(checkpoint.KindKafkaToRedis, k2rName))
	out := testenv.Topic(t, kc, 1)

	r2k := startXmirror(t, "r2k", "--follow", "--stream-pattern", prefix+".*", "--topic", out, "--start", "latest",
		"--rescan", "1s", "--name", r2kName, "--lease-ttl", "5s")
	k2r := startXmirror(t, "k2r", "--follow", "--topic-regex", "^"+regexp.QuoteMeta(prefix)+`\.`, "--stream", "c:{topic}",
		"--start", "latest", "--rescan", "1s", "--name", k2rName, "--lease-ttl", "5s")
	testenv.Wait(t, 30*time.Second, "both runs waiting", func() bool {
		return strings.Contains(r2k.stderr.String(), "no stream matches the pattern yet") &&
			strings.Contains(k2r.stderr.String(), "no topic matches the regex yet")
	})
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	ids := addEntries(t, rc, stream, 0, 25, fields)
	testenv.NamedTopic(t, kc, topic, 1)
	produceN(t, kc, topic, 0, 25)
	testenv.Wait(t, 30*time.Second, "the first matches mirrored", func() bool {
		return endOffset(t, nil, out) == 25 && streamLen(rc, "c:"+topic)() == 25
	})
	for _, run := range []*started{r2k, k2r} {
		if code, _ := run.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM\nstderr: %s", code, run.stderr.String())
		}
	}
	exactlyOnce(t, out, ids)
	exactlyNs(t, rc, "c:"+topic, 0, 25)
}
