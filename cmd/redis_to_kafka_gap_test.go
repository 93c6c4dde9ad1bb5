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
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/internal/testenv"
)

// addTrimmed XADDs n entries one by one, each with MAXLEN = maxlen (exact),
// as an application that caps its stream does.
func addTrimmed(t *testing.T, c rueidis.Client, stream string, from, n, maxlen int) []string {
	t.Helper()
	ctx := context.Background()
	ids := make([]string, 0, n)
	for i := from; i < from+n; i++ {
		id, err := c.Do(ctx, c.B().Xadd().Key(stream).Maxlen().Exact().Threshold(strconv.Itoa(maxlen)).Id("*").FieldValue().FieldValue("value", strconv.Itoa(i)).Build()).ToString()
		if err != nil {
			t.Fatalf("XADD %s MAXLEN %d: %v", stream, maxlen, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// recordIDs are the xmirror.id headers of a topic's records, in order.
func recordIDs(t *testing.T, topic string) []string {
	t.Helper()
	var ids []string
	for _, r := range readTopic(t, topic) {
		id, _ := header(r, "xmirror.id")
		ids = append(ids, id)
	}
	return ids
}

func TestEntriesTrimmedBeforeTheyWereMirroredStopTheRunNamingTheGap(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gap")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}

	first := addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	mustMirror(t, args...)
	// The application caps the stream at 3 entries while the mirror is not
	// running: of the 10 it adds, 7 are gone before the mirror reads them.
	added := addTrimmed(t, rc, stream, 3, 10, 3)

	for try := 0; try < 2; try++ { // a rerun stops at the gap again
		r := xmirror(t, args...)
		if r.code != 1 {
			t.Fatalf("run %d after the trim: exit %d, stderr %q; want 1", try+1, r.code, r.stderr)
		}
		for _, want := range []string{strconv.Quote(stream), "7 entries were trimmed", "last delivered " + first[2], "starts at " + added[7], "--on-gap skip"} {
			if !strings.Contains(r.stderr, want) {
				t.Fatalf("run %d: stderr %q does not say %q", try+1, r.stderr, want)
			}
		}
		if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines > 0 {
			t.Fatalf("run %d: want one line, got %q", try+1, r.stderr)
		}
	}
	if ids := recordIDs(t, topic); len(ids) != 3 {
		t.Fatalf("after the refused runs the topic holds %v, want the 3 entries mirrored before", ids)
	}

	r := mustMirror(t, append(args, "--on-gap", "skip")...)
	if !strings.Contains(r.stdout, `"entries":3,`) || !strings.Contains(r.stdout, `"lost":7`) || strings.Contains(r.stdout, "skipped") {
		t.Fatalf("summary %s: want the 3 entries left mirrored and 7 lost", r.stdout)
	}
	if !strings.Contains(r.stderr, "trimmed") || !strings.Contains(r.stderr, "lost=7") {
		t.Fatalf("the skipped gap is not logged with its count: %q", r.stderr)
	}
	want := append(append([]string{}, first...), added[7:]...)
	if ids := recordIDs(t, topic); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("topic holds %v, want %v", ids, want)
	}
	// The gap was accepted once: the next runs see none.
	addTrimmed(t, rc, stream, 13, 2, 3)
	if r := mustMirror(t, args...); !strings.Contains(r.stdout, `"entries":2,`) || strings.Contains(r.stdout, "lost") {
		t.Fatalf("the run after the accepted gap: %s, want 2 entries and nothing lost", r.stdout)
	}
}

func TestFollowRunRestartedAfterATrimSkipsTheGapAndCountsItLost(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gapf")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--on-gap", "skip"}

	first := addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	p := startXmirror(t, args...)
	testenv.Wait(t, 30*time.Second, "3 records", func() bool { return endOffset(t, adm, topic) == 3 })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("first follow run: exit %d: %s", code, p.stderr.String())
	}
	added := addTrimmed(t, rc, stream, 3, 10, 3)

	p = startXmirror(t, args...)
	testenv.Wait(t, 30*time.Second, "the 3 entries left", func() bool { return endOffset(t, adm, topic) == 6 })
	more := addTrimmed(t, rc, stream, 13, 2, 3) // read as they come: no new gap
	testenv.Wait(t, 30*time.Second, "the 2 entries added later", func() bool { return endOffset(t, adm, topic) == 8 })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("second follow run: exit %d: %s", code, p.stderr.String())
	}
	if out := p.stderr.String(); !strings.Contains(out, ", 7 lost") || strings.Count(out, "skipping them (--on-gap skip)") != 1 {
		t.Fatalf("stderr %q: want one gap logged and 7 lost in the summary", out)
	}
	want := append(append(append([]string{}, first...), added[7:]...), more...)
	if ids := recordIDs(t, topic); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("topic holds %v, want %v", ids, want)
	}
}

func TestFollowRunThatFellBehindATrimStopsNamingTheGap(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gapl")

	addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	p := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--lease-ttl", "60s")
	testenv.Wait(t, 30*time.Second, "3 records", func() bool { return endOffset(t, adm, topic) == 3 })
	// The mirror falls behind (frozen here) while the application caps
	// the stream at 3 entries.
	must(t, p.cmd.Process.Signal(syscall.SIGSTOP))
	added := addTrimmed(t, rc, stream, 3, 10, 3)
	must(t, p.cmd.Process.Signal(syscall.SIGCONT))
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the follow run went on past the gap: %s", p.stderr.String())
	}
	// A read blocked when it froze may have been given the first entry
	// added; every other entry but the last 3 was trimmed unread.
	n := int64(len(readTopic(t, topic)))
	lost := 7 - (n - 3)
	out := p.stderr.String()
	if code := p.cmd.ProcessState.ExitCode(); code != 1 || (n != 3 && n != 4) {
		t.Fatalf("exit %d with %d records: want exit 1 with 3 or 4; stderr %q", code, n, out)
	}
	for _, want := range []string{strconv.Quote(stream), fmt.Sprintf("%d entries were trimmed", lost), "starts at " + added[7], "--on-gap skip"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stderr %q does not say %q", out, want)
		}
	}
}

func TestTrimmingWhatTheMirrorAlreadyReadIsNoGap(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "nogap")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}

	// One-shot runs, as from cron, each after the application added 10
	// entries to a stream it caps at exactly 10: every entry the mirror
	// had read is trimmed, every one it had not is there, the edge where
	// the stream starts right after the group's position.
	var want []string
	for round := 0; round < 3; round++ {
		want = append(want, addTrimmed(t, rc, stream, 10*round, 10, 10)...)
		if r := mustMirror(t, args...); !strings.Contains(r.stdout, `"entries":10,`) {
			t.Fatalf("round %d: %s, want 10 entries", round, r.stdout)
		}
	}
	// Entries deleted one by one are no gap either, before the mirror's
	// position or after it (the one deleted after it is not mirrored).
	ids := addTrimmed(t, rc, stream, 30, 10, 15)
	must(t, rc.Do(ctx, rc.B().Xdel().Key(stream).Id(want[len(want)-2]).Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xdel().Key(stream).Id(ids[4]).Build()).Error())
	want = append(append(want, ids[:4]...), ids[5:]...)
	if r := mustMirror(t, args...); !strings.Contains(r.stdout, `"entries":9,`) {
		t.Fatalf("after XDEL: %s, want 9 entries", r.stdout)
	}

	// A follow run that keeps up while the application trims behind it,
	// batch after batch, at the same edge.
	p := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow")
	for round := 0; round < 20; round++ {
		want = append(want, addTrimmed(t, rc, stream, 40+10*round, 10, 10)...)
		n := int64(len(want))
		testenv.Wait(t, 30*time.Second, fmt.Sprintf("%d records", n), func() bool { return endOffset(t, adm, topic) >= n })
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("follow run: exit %d: %s", code, p.stderr.String())
	}
	if out := p.stderr.String(); strings.Contains(out, "trimmed") || strings.Contains(out, "lost") {
		t.Fatalf("a gap reported where there was none: %s", out)
	}
	if got := recordIDs(t, topic); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("topic holds %d records %v, want %d %v", len(got), got, len(want), want)
	}
}
