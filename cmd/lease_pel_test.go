package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/internal/testenv"
)

func TestSecondProcessUnderOneNameIsRefusedWhileTheFirstRuns(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "2s"}

	first := startXmirror(t, append(args, "--follow")...)
	leaseKey := "xmirror:lease:redis-to-kafka:" + name
	testenv.Wait(t, 10*time.Second, "the first process to take the lease", func() bool {
		n, _ := rc.Do(context.Background(), rc.B().Exists().Key(leaseKey).Build()).AsInt64()
		return n == 1
	})

	second := xmirror(t, args...)
	if second.code != 1 || !strings.Contains(second.stderr, "already running") || !strings.Contains(second.stderr, "held by") ||
		!strings.Contains(second.stderr, "is running on this host") {
		t.Fatalf("second process: exit %d, stderr %q; want exit 1 naming the holder", second.code, second.stderr)
	}

	// Killed, the holder is gone: the next run takes its lease at once.
	first.stop(t, syscall.SIGKILL, 5*time.Second)
	if r := mustMirror(t, args...); !strings.Contains(r.stderr, "took over the lease") {
		t.Fatalf("right after kill -9: stderr %q, want the takeover logged", r.stderr)
	}

	// A lease of a process this host cannot see (another host, another
	// container) is refused until it expires.
	elsewhere := "elsewhere:1:00 start=1 boot=00000000-0000-0000-0000-000000000000 pidns=1"
	must(t, rc.Do(context.Background(), rc.B().Set().Key(leaseKey).Value(elsewhere).Px(2*time.Second).Build()).Error())
	if r := xmirror(t, args...); r.code != 1 || !strings.Contains(r.stderr, "another host") {
		t.Fatalf("lease of another host: exit %d, stderr %q; want 1 while it lasts", r.code, r.stderr)
	}
	testenv.Wait(t, 5*time.Second, "the lease to expire", func() bool {
		n, _ := rc.Do(context.Background(), rc.B().Exists().Key(leaseKey).Build()).AsInt64()
		return n == 0
	})
	mustMirror(t, args...)
}

func TestTrimmedPendingEntriesStopTheRunOrAreCountedLost(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	first := addEntries(t, rc, stream, 0, 100, func(i int) []string { return []string{"value", strconv.Itoa(i)} })

	// An earlier run read 100 entries as this mirror's consumer and died
	// before acknowledging them; then the stream was trimmed under them.
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("xmirror").Id("0").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xreadgroup().Group("xmirror", name).Count(100).Streams().Key(stream).Id(">").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xtrim().Key(stream).Maxlen().Threshold("40").Build()).Error())
	more := addEntries(t, rc, stream, 100, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })

	// They are a gap like entries trimmed before they were read:
	// --on-gap fail (the default) stops, naming them, and leaves them
	// pending, so a rerun stops there again.
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}
	for try := 0; try < 2; try++ {
		r := xmirror(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, strconv.Quote(stream)) || !strings.Contains(r.stderr, "60 pending entries") || !strings.Contains(r.stderr, "--on-gap skip") {
			t.Fatalf("run %d: exit %d, stderr %q: want exit 1 naming the stream, the 60 trimmed pending entries and --on-gap skip", try+1, r.code, r.stderr)
		}
	}
	if n := len(readTopic(t, topic)); n != 0 {
		t.Fatalf("%d records after the refused runs, want 0", n)
	}

	r := mustMirror(t, append(args, "--on-gap", "skip")...)
	if !strings.Contains(r.stdout, `"entries":50`) || !strings.Contains(r.stdout, `"lost":60`) || strings.Contains(r.stdout, "skipped") {
		t.Fatalf("summary %s: want 50 entries mirrored (40 pending + 10 new) and 60 trimmed lost", r.stdout)
	}
	// Reported once, naming the stream and the entries.
	var warned []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.Contains(l, "trimmed") {
			warned = append(warned, l)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], stream) || !strings.Contains(warned[0], first[0]+","+first[1]) || !strings.Contains(warned[0], "count=60") || !strings.Contains(warned[0], "and 40 more") {
		t.Errorf("the trimmed entries are reported %d times, want once with the stream, count and IDs: %q", len(warned), r.stderr)
	}
	pending, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group("xmirror").Build()).ToArray()
	must(t, err)
	if n, _ := pending[0].AsInt64(); n != 0 {
		t.Fatalf("%d entries still pending, want 0", n)
	}
	recs := readTopic(t, topic)
	if len(recs) != 50 {
		t.Fatalf("%d records, want 50", len(recs))
	}
	if id, _ := header(recs[49], "xmirror.id"); id != more[9] {
		t.Fatalf("last record %s, want %s", id, more[9])
	}
}

func TestClaimIdleTakesOverEntriesOfADeadConsumer(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	addEntries(t, rc, stream, 0, 30, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("xmirror").Id("0").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xreadgroup().Group("xmirror", "dead-consumer").Count(20).Streams().Key(stream).Id(">").Build()).Error())

	// Without --claim-idle a group another consumer has read is refused:
	// it would leave that consumer's 20 entries where they are.
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--group", "xmirror", "--output", "json")
	if r.code != 1 || !strings.Contains(r.stderr, `"dead-consumer"`) || !strings.Contains(r.stderr, "--claim-idle") {
		t.Fatalf("exit %d, stderr %q: want exit 1 naming the other consumer and --claim-idle", r.code, r.stderr)
	}
	r = mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--group", "xmirror", "--output", "json", "--claim-idle", "1ms")
	if !strings.Contains(r.stdout, `"entries":30`) {
		t.Fatalf("summary %s: want the dead consumer's 20 entries and the 10 undelivered ones", r.stdout)
	}
	if recs := readTopic(t, topic); len(recs) != 30 {
		t.Fatalf("%d records, want 30", len(recs))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFollowClaimsOtherConsumersEntriesButNeverItsOwnInFlight(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	addEntries(t, rc, stream, 0, 80, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("xmirror").Id("0").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xreadgroup().Group("xmirror", "dead-consumer").Count(20).Streams().Key(stream).Id(">").Build()).Error())

	// A slow Kafka (a long linger) keeps this mirror's own entries pending
	// for longer than --claim-idle: they must not be claimed and re-sent.
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--group", "xmirror", "-f", "--batch-size", "10", "--linger", "1500ms", "--claim-idle", "300ms")
	testenv.Wait(t, 30*time.Second, "80 records", func() bool { return endOffset(t, adm, topic) >= 80 })
	time.Sleep(2 * time.Second) // room for a wrong re-send to show
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr)
	}
	recs := readTopic(t, topic)
	seen := map[string]bool{}
	for _, r := range recs {
		id, _ := header(r, "xmirror.id")
		if seen[id] {
			t.Fatalf("entry %s mirrored twice (%d records)", id, len(recs))
		}
		seen[id] = true
	}
	if len(seen) != 80 {
		t.Fatalf("%d distinct entries, want 80", len(seen))
	}
}

func TestFollowRidesOutAStreamDeletedAndCreatedAgain(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	addEntries(t, rc, stream, 0, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "-f")
	testenv.Wait(t, 30*time.Second, "5 records", func() bool { return endOffset(t, adm, topic) >= 5 })

	must(t, rc.Do(ctx, rc.B().Del().Key(stream).Build()).Error())
	time.Sleep(1500 * time.Millisecond) // the mirror notices the stream is gone
	addEntries(t, rc, stream, 5, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	testenv.Wait(t, 30*time.Second, "the 3 entries of the new stream", func() bool { return endOffset(t, adm, topic) >= 8 })
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr)
	}
	if !strings.Contains(m.stderr.String(), "lost the consumer group") {
		t.Errorf("the lost group is not reported: %s", m.stderr)
	}
}

func TestFollowLatestMirrorsAStreamCreatedAfterTheStartFromItsFirstEntry(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "-f", "--start", "latest")
	testenv.Wait(t, 10*time.Second, "the mirror to wait for the stream", func() bool {
		return strings.Contains(m.stderr.String(), "does not exist yet")
	})
	// Every entry of a stream created after the start is new: the one that
	// creates the stream too.
	addEntries(t, rc, stream, 0, 2, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	testenv.Wait(t, 30*time.Second, "both entries in Kafka", func() bool { return endOffset(t, adm, topic) >= 2 })
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr)
	}
	if n := len(readTopic(t, topic)); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
}
