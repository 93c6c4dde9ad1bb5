package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
)

// status runs xmirror status -o json for one mirror and returns what it
// says of it.
func status(t *testing.T, name string) mirror.Status {
	t.Helper()
	r := mustMirror(t, "status", "-o", "json", name)
	var sts []mirror.Status
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, r.stdout)
	}
	if len(sts) != 1 || sts[0].Name != name {
		t.Fatalf("status %s: want that one mirror, got %s", name, r.stdout)
	}
	return sts[0]
}

// TestStatusShowsTheLagOfAOneShotMirror: after a one-shot run and entries
// added since, status says what the mirror is, where it stands and how
// far behind: as many entries as the stream holds beyond what the topic
// got, counted with plain clients.
func TestStatusShowsTheLagOfAOneShotMirror(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	ids := addEntries(t, rc, stream, 0, 200, fields)
	mustMirror(t, "redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name)
	addEntries(t, rc, stream, 200, 37, fields)

	st := status(t, name)
	lag := streamLen(rc, stream)() - int64(len(readTopic(t, topic)))
	if st.Lag != lag || !st.LagKnown || lag != 37 {
		t.Errorf("status lag %d (known %v), want %d: the stream's XLEN minus the topic's records", st.Lag, st.LagKnown, lag)
	}
	if st.Kind != "redis-to-kafka" || st.Source != stream || st.Destination != topic || st.Format != "json" || st.Group == "" || !st.Described {
		t.Errorf("status says %+v; want the mirror's direction, source, destination, group and format", st)
	}
	if st.Running || st.Entries != 200 || st.Checkpointed == nil || st.AgeSeconds < 0 {
		t.Errorf("status: running %v, entries %d, checkpointed %v; want not running, 200, a time", st.Running, st.Entries, st.Checkpointed)
	}
	if len(st.Positions) != 1 || st.Positions[0].Stream != stream || st.Positions[0].ID != ids[199] || st.Positions[0].Lag != 37 {
		t.Errorf("positions %+v; want stream %s at %s, lag 37", st.Positions, stream, ids[199])
	}
	r := mustMirror(t, "status", name)
	for _, want := range []string{"redis-to-kafka " + name + ": " + stream + " -> " + topic, "running:     no", "lag:         37 entries", ids[199]} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status table lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestStatusLagEqualsAnIndependentCountDuringFollowRuns: with a follow run
// of each direction and a backlog growing while they are frozen, status
// says of each what plain clients count: for redis-to-kafka the entries
// after the group's last delivered one (XRANGE) plus its pending ones
// (XPENDING), for kafka-to-redis each partition's end offset (kcat) minus
// what the destination stream holds (XLEN).
func TestStatusLagEqualsAnIndependentCountDuringFollowRuns(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	out := testenv.Topic(t, kc, 1)
	in := testenv.Topic(t, kc, 2)
	dest := testenv.Stream(t, rc)
	r2kName, k2rName := testenv.Name(t, "r2k"), testenv.Name(t, "k2r")
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	producer := testenv.Kafka(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(from, n int) {
		t.Helper()
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: in, Partition: int32(i % 2), Value: []byte(fmt.Sprintf(`{"n":"%d"}`, from+i))}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	r2kRun := startXmirror(t, "redis-to-kafka", "--follow", "--stream", stream, "--topic", out, "--name", r2kName, "--batch-size", "50", "--lease-ttl", "1m")
	k2rRun := startXmirror(t, "kafka-to-redis", "--follow", "--topic", in, "--stream", dest, "--name", k2rName, "--batch-size", "50", "--lease-ttl", "1m")
	sent := 0
	for round := 1; round <= 3; round++ {
		addEntries(t, rc, stream, sent, 300, fields)
		produce(sent, 300)
		sent += 300
		// Mirrored in part, then frozen, and more arrives.
		testenv.Wait(t, 30*time.Second, "both runs mirroring", func() bool {
			return streamLen(rc, dest)() > 0 && len(readTopic(t, out)) > 0
		})
		for _, run := range []*started{r2kRun, k2rRun} {
			run.cmd.Process.Signal(syscall.SIGSTOP)
		}
		addEntries(t, rc, stream, sent, 200*round, fields)
		produce(sent, 200*round)
		sent += 200 * round

		st := status(t, r2kName)
		if want := r2kLagCounted(t, rc, stream, st.Group); st.Lag != want || !st.LagKnown {
			t.Errorf("round %d: redis-to-kafka status lag %d (known %v), counted %d", round, st.Lag, st.LagKnown, want)
		}
		if !st.Running || !strings.Contains(st.Holder, strconv.Itoa(r2kRun.cmd.Process.Pid)) {
			t.Errorf("round %d: status says running %v, holder %q; want the run's pid %d", round, st.Running, st.Holder, r2kRun.cmd.Process.Pid)
		}
		st = status(t, k2rName)
		ends := kcatEndOffsets(t, in, 2)
		if want := ends[0] + ends[1] - streamLen(rc, dest)(); st.Lag != want || !st.LagKnown {
			t.Errorf("round %d: kafka-to-redis status lag %d (known %v), counted %d (end offsets %v)", round, st.Lag, st.LagKnown, want, ends)
		}
		if ends[0] == 0 || ends[1] == 0 {
			t.Fatalf("end offsets %v: records should be in both partitions", ends)
		}
		for _, p := range st.Positions {
			if p.End != ends[p.Partition] || p.Lag != p.End-p.Offset || p.Stream != dest {
				t.Errorf("round %d: partition %d: %+v; want end offset %d and its lag, feeding %s", round, p.Partition, p, ends[p.Partition], dest)
			}
		}
		for _, run := range []*started{r2kRun, k2rRun} {
			run.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	// Caught up, both say 0.
	testenv.Wait(t, 60*time.Second, "both runs caught up", func() bool {
		return len(readTopic(t, out)) == sent && streamLen(rc, dest)() == int64(sent)
	})
	for _, name := range []string{r2kName, k2rName} {
		if st := status(t, name); st.Lag != 0 || !st.LagKnown {
			t.Errorf("%s caught up: status lag %d (known %v), want 0", name, st.Lag, st.LagKnown)
		}
	}
	for _, run := range []*started{r2kRun, k2rRun} {
		if code, _ := run.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM\nstderr: %s", code, run.stderr.String())
		}
	}
}

// r2kLagCounted counts with a plain client what a redis-to-kafka mirror
// reading stream through group has yet to mirror: the entries after the
// group's last delivered one and those it holds pending.
func r2kLagCounted(t *testing.T, rc rueidis.Client, stream, group string) int64 {
	t.Helper()
	ctx := context.Background()
	groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	last := ""
	for _, g := range groups {
		m, _ := g.AsStrMap()
		if m["name"] == group {
			last = m["last-delivered-id"]
		}
	}
	if last == "" {
		t.Fatalf("no group %q on stream %s", group, stream)
	}
	after, err := rc.Do(ctx, rc.B().Xrange().Key(stream).Start("("+last).End("+").Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	pending, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group(group).Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	n, _ := pending[0].AsInt64()
	return int64(len(after)) + n
}

// kcatEndOffsets are the end offsets of a topic's partitions as kcat
// reads them (the offset of timestamp -1: the end).
func kcatEndOffsets(t *testing.T, topic string, partitions int) []int64 {
	t.Helper()
	ends := make([]int64, partitions)
	for p := range ends {
		out, err := exec.Command("kcat", "-b", testenv.Brokers(), "-Q", "-t", fmt.Sprintf("%s:%d:-1", topic, p)).Output()
		if err != nil {
			t.Fatalf("kcat -Q %s:%d: %v", topic, p, err)
		}
		// "<topic> [<partition>] offset <offset>"
		f := strings.Fields(string(out))
		if len(f) < 4 || f[2] != "offset" {
			t.Fatalf("kcat -Q: %q", out)
		}
		if ends[p], err = strconv.ParseInt(f[3], 10, 64); err != nil {
			t.Fatalf("kcat -Q: %q", out)
		}
	}
	return ends
}

// TestStatusMaxLagAndMaxAgeFailOneLinePerMirror: --max-lag and --max-age
// make status a check that exits 1 naming each mirror over a limit, and 0
// for mirrors within them; a mirror caught up is never too old.
func TestStatusMaxLagAndMaxAgeFailOneLinePerMirror(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	behind, caughtUp := testenv.Stream(t, rc), testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	nb, nc := testenv.Name(t, "behind"), testenv.Name(t, "caught-up")
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	addEntries(t, rc, behind, 0, 10, fields)
	addEntries(t, rc, caughtUp, 0, 10, fields)
	mustMirror(t, "redis-to-kafka", "--stream", behind, "--topic", topic, "--name", nb)
	mustMirror(t, "redis-to-kafka", "--stream", caughtUp, "--topic", topic, "--name", nc)
	addEntries(t, rc, behind, 10, 5, fields)

	if r := xmirror(t, "status", "--max-lag", "5", nb, nc); r.code != 0 {
		t.Errorf("lag 5 within --max-lag 5: exit %d, stderr %s", r.code, r.stderr)
	}
	r := xmirror(t, "status", "--max-lag", "4", nb, nc)
	if want := fmt.Sprintf("xmirror: mirror %q (redis-to-kafka): lag 5 entries is over --max-lag 4", nb); r.code != 1 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, nc) {
		t.Errorf("--max-lag 4: exit %d, stderr %q; want 1 and the line %q, nothing of %s", r.code, r.stderr, want, nc)
	}
	time.Sleep(1100 * time.Millisecond)
	r = xmirror(t, "status", "--max-age", "1s", nb, nc)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("mirror %q (redis-to-kafka): checkpoint", nb)) || !strings.Contains(r.stderr, "is over --max-age 1s") || strings.Contains(r.stderr, nc) {
		t.Errorf("--max-age 1s: exit %d, stderr %q; want 1 and a line for %s only", r.code, r.stderr, nb)
	}
	if r := xmirror(t, "status", "--max-age", "1s", nc); r.code != 0 {
		t.Errorf("a caught-up mirror with an old checkpoint: exit %d, stderr %s; want 0", r.code, r.stderr)
	}
}

// TestStatusReadsCheckpointsOfMirrorsThatRecordedNothing: a mirror that
// last ran before runs recorded what they are still shows, with what its
// checkpoints hold, in both directions.
func TestStatusReadsCheckpointsOfMirrorsThatRecordedNothing(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	dest := testenv.Stream(t, rc)
	r2kName, k2rName := testenv.Name(t, "r2k"), testenv.Name(t, "k2r")
	addEntries(t, rc, stream, 0, 20, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	mustMirror(t, "redis-to-kafka", "--stream", stream, "--topic", topic, "--name", r2kName)
	mustMirror(t, "kafka-to-redis", "--topic", topic, "--stream", dest, "--name", k2rName)
	ctx := context.Background()
	for _, key := range []string{checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, r2kName), checkpoint.DescriptorKey(checkpoint.KindKafkaToRedis, k2rName)} {
		if err := rc.Do(ctx, rc.B().Del().Key(key).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	addEntries(t, rc, stream, 20, 3, func(i int) []string { return []string{"n", strconv.Itoa(i)} })

	st := status(t, r2kName)
	if st.Described || st.Lag != 3 || st.Entries != 20 || len(st.Positions) != 1 || st.Positions[0].Stream != stream {
		t.Errorf("redis-to-kafka without a record: %+v; want its stream, lag 3, 20 entries", st)
	}
	st = status(t, k2rName)
	if st.Described || st.Entries != 20 || len(st.Positions) != 1 || st.Positions[0].Topic != topic || !st.LagKnown || st.Lag != 0 {
		t.Errorf("kafka-to-redis without a record: %+v; want its partition, caught up, 20 entries", st)
	}
}

// TestStatusErrors: an unknown mirror is a failure naming it; bad flags
// are usage errors.
func TestStatusErrors(t *testing.T) {
	testenv.Redis(t)
	name := testenv.Name(t, "nobody")
	r := xmirror(t, "status", name)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("no mirror named %q", name)) {
		t.Errorf("unknown mirror: exit %d, stderr %q; want 1, naming it", r.code, r.stderr)
	}
	for _, args := range [][]string{
		{"status", "-o", "yaml"},
		{"status", "--max-lag", "-3"},
		{"status", "--max-age", "0s"},
		{"status", "--watch", "--max-lag", "1"},
		{"status", "--interval", "0s", "--watch"},
	} {
		if r := xmirror(t, args...); r.code != 2 || !strings.Contains(r.stderr, "Run 'xmirror status --help'") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and the status help named", args, r.code, r.stderr)
		}
	}
}

// TestStatusWatchRedrawsUntilInterrupted: --watch shows the status again
// every --interval and ends, exit 0, on SIGINT.
func TestStatusWatchRedrawsUntilInterrupted(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	addEntries(t, rc, stream, 0, 5, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	mustMirror(t, "redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name)
	cmd := xmirrorCmd(t, "status", "--watch", "--interval", "100ms", name)
	var out syncBuffer
	cmd.Stdout = &out
	w := startXmirrorCmd(t, cmd)
	testenv.Wait(t, 10*time.Second, "three rounds of the status", func() bool {
		return strings.Count(out.String(), "redis-to-kafka "+name) >= 3
	})
	if code, _ := w.stop(t, syscall.SIGINT, 5*time.Second); code != 0 {
		t.Errorf("--watch after SIGINT: exit %d, want 0; stderr %s", code, w.stderr.String())
	}
}
