package cmd_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/checkpoint"
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
	if out := p.stderr.String(); !strings.Contains(out, ", 7 lost") || strings.Count(out, "skipping them, as the gap policy says") != 1 {
		t.Fatalf("stderr %q: want one gap logged and 7 lost in the summary", out)
	}
	want := append(append(append([]string{}, first...), added[7:]...), more...)
	if ids := recordIDs(t, topic); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("topic holds %v, want %v", ids, want)
	}
}

// A gap that leaves nothing to read is counted all the same: the run
// stops waiting for entries, with no later batch to carry the count.
func TestFollowRunPastAGapThatEmptiedTheStreamCountsItLost(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gape")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--on-gap", "skip"}

	addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	p := startXmirror(t, args...)
	testenv.Wait(t, 30*time.Second, "3 records", func() bool { return endOffset(t, adm, topic) == 3 })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("first follow run: exit %d: %s", code, p.stderr.String())
	}
	addTrimmed(t, rc, stream, 3, 10, 0) // every entry trimmed as it is added

	p = startXmirror(t, append(args, "-v")...)
	testenv.Wait(t, 30*time.Second, "the gap logged, and the run mirroring", func() bool {
		out := p.stderr.String()
		return strings.Contains(out, "skipping them, as the gap policy says") && strings.Contains(out, "msg=mirroring")
	})
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("second follow run: exit %d: %s", code, p.stderr.String())
	}
	if out := p.stderr.String(); !strings.Contains(out, "mirrored 0 entries") || !strings.Contains(out, ", 10 lost") {
		t.Fatalf("stderr %q: want 10 lost in the summary", out)
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
	// Nothing was read past the gap: the group is where it stood, so a
	// rerun stops there again, and nothing of the hold is left behind.
	ids := recordIDs(t, topic)
	groups, err := rc.Do(context.Background(), rc.B().XinfoGroups().Key(stream).Build()).ToArray()
	must(t, err)
	g, err := groups[0].AsMap()
	must(t, err)
	lastMsg, pendingMsg := g["last-delivered-id"], g["pending"]
	last, _ := lastMsg.ToString()
	pending, _ := pendingMsg.AsInt64()
	if last != ids[len(ids)-1] || pending != 0 {
		t.Fatalf("after the gap the group stands at %s with %d pending; want %s, the last entry mirrored, and none", last, pending, ids[len(ids)-1])
	}
	if n, err := rc.Do(context.Background(), rc.B().Exists().Key(checkpoint.R2KGapHoldKey(name)).Build()).AsInt64(); err != nil || n != 0 {
		t.Fatalf("hold key left behind: %d, %v", n, err)
	}
	if r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name); r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("%d entries were trimmed", lost)) {
		t.Fatalf("rerun: exit %d, %q; want the same gap", r.code, r.stderr)
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

// groupCaughtUp says whether the stream's only consumer group has
// delivered its last entry and has nothing pending: all a mirror read is
// committed.
func groupCaughtUp(t *testing.T, rc rueidis.Client, stream string) bool {
	t.Helper()
	ctx := context.Background()
	info, err := rc.Do(ctx, rc.B().XinfoStream().Key(stream).Build()).AsMap()
	if err != nil {
		t.Fatalf("XINFO STREAM %s: %v", stream, err)
	}
	lastGenMsg := info["last-generated-id"]
	lastGen, _ := lastGenMsg.ToString()
	groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
	if err != nil || len(groups) != 1 {
		t.Fatalf("XINFO GROUPS %s: %d groups, %v", stream, len(groups), err)
	}
	g, err := groups[0].AsMap()
	if err != nil {
		t.Fatal(err)
	}
	lastMsg, pendingMsg := g["last-delivered-id"], g["pending"]
	last, _ := lastMsg.ToString()
	pending, _ := pendingMsg.AsInt64()
	return last == lastGen && pending == 0
}

// lostInSummary is the count of the summary's "N lost", 0 when it has none.
func lostInSummary(t *testing.T, stderr string) int {
	t.Helper()
	m := regexp.MustCompile(`, (\d+) lost`).FindStringSubmatch(stderr)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestTrimmingRacingTheReadsIsCountedExactly pins that the check for
// entries trimmed before they were read and the read itself are one step:
// an application capping its stream (XADD MAXLEN 10) from several
// connections in tight loops, far faster than a mirror reading 5 entries
// at a time, trims between any two commands the mirror sends. Every entry
// must end up mirrored once or counted lost, and lost must be exactly the
// entries Redis trimmed unread.
func TestTrimmingRacingTheReadsIsCountedExactly(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gaprace")
	const writers, each, maxlen = 4, 4000, 10

	addTrimmed(t, rc, stream, 0, 1, maxlen)
	p := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--on-gap", "skip", "--batch-size", "5")
	testenv.Wait(t, 30*time.Second, "the first record", func() bool { return len(recordIDs(t, topic)) == 1 })

	added := make([][]string, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := range each {
				id, err := rc.Do(ctx, rc.B().Xadd().Key(stream).Maxlen().Exact().Threshold(strconv.Itoa(maxlen)).Id("*").FieldValue().FieldValue("value", fmt.Sprintf("%d-%d", w, i)).Build()).ToString()
				if err != nil {
					t.Errorf("XADD MAXLEN %d: %v", maxlen, err)
					return
				}
				added[w] = append(added[w], id)
			}
		}()
	}
	wg.Wait()
	testenv.Wait(t, 60*time.Second, "the mirror to read the stream's last entry", func() bool { return groupCaughtUp(t, rc, stream) })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("follow run: exit %d: %s", code, p.stderr.String())
	}
	total := 1 + writers*each
	all := map[string]bool{}
	for _, ids := range added {
		for _, id := range ids {
			all[id] = true
		}
	}
	mirrored := map[string]bool{}
	for _, id := range recordIDs(t, topic) {
		if mirrored[id] {
			t.Fatalf("entry %s mirrored twice", id)
		}
		mirrored[id] = true
	}
	// Redis's own view: what the stream still holds was all read (the
	// group caught up); every other entry mirrored or not was trimmed.
	left, err := rc.Do(context.Background(), rc.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	must(t, err)
	for _, e := range left {
		if !mirrored[e.ID] {
			t.Fatalf("entry %s is still in the stream but was not mirrored", e.ID)
		}
	}
	trimmedUnread := total - len(mirrored)
	lost := lostInSummary(t, p.stderr.String())
	t.Logf("%d entries added, %d mirrored, %d trimmed unread, %d counted lost", total, len(mirrored), trimmedUnread, lost)
	if trimmedUnread == 0 {
		t.Fatalf("the mirror kept up with every entry: the test did not race trimming with reads")
	}
	if lost != trimmedUnread {
		t.Fatalf("%d entries were trimmed unread, the mirror counted %d lost; stderr:\n%s", trimmedUnread, lost, p.stderr.String())
	}
}

// TestTrimmingRightBehindTheReadsIsNoGap pins the other side: an
// application that trims everything the mirror's group has delivered
// (XTRIM MINID just above its last delivered ID), in a tight loop while it
// adds entries, leaves the stream starting right after the mirror's
// position time and again, and nothing unread is ever trimmed: a follow
// run with --on-gap fail mirrors every entry once and reports no gap.
func TestTrimmingRightBehindTheReadsIsNoGap(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gapnone")
	const total = 3000

	first := addTrimmed(t, rc, stream, 0, 1, 1000)
	p := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--batch-size", "5")
	testenv.Wait(t, 30*time.Second, "the first record", func() bool { return len(recordIDs(t, topic)) == 1 })
	group := onlyGroup(t, rc, stream)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var trims int
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			select {
			case <-stop:
				return
			default:
			}
			groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
			if err != nil || len(groups) != 1 {
				t.Errorf("XINFO GROUPS: %v", err)
				return
			}
			g, _ := groups[0].AsStrMap()
			last := g["last-delivered-id"]
			ms, seq, _ := strings.Cut(last, "-")
			n, _ := strconv.ParseUint(seq, 10, 64)
			if err := rc.Do(ctx, rc.B().Xtrim().Key(stream).Minid().Threshold(ms+"-"+strconv.FormatUint(n+1, 10)).Build()).Error(); err != nil {
				t.Errorf("XTRIM MINID: %v", err)
				return
			}
			trims++
		}
	}()
	want := append([]string{}, first...)
	ctx := context.Background()
	for i := range total {
		id, err := rc.Do(ctx, rc.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("value", strconv.Itoa(i)).Build()).ToString()
		must(t, err)
		want = append(want, id)
	}
	testenv.Wait(t, 60*time.Second, "the mirror to read the stream's last entry", func() bool { return groupCaughtUp(t, rc, stream) })
	close(stop)
	wg.Wait()
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("follow run: exit %d: %s", code, p.stderr.String())
	}
	if out := p.stderr.String(); strings.Contains(out, "trimmed") || strings.Contains(out, "lost") {
		t.Fatalf("a gap reported where nothing unread was trimmed (group %s, %d trims): %s", group, trims, out)
	}
	if got := recordIDs(t, topic); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("topic holds %d records, want the %d entries added, in order", len(got), len(want))
	}
}

// TestGroupMadeAgainAfterATrimPastWhatWasMirroredStopsNamingTheGap pins
// that a consumer group this run creates is not trusted when the
// checkpoint says the mirror had handled the stream before: the group was
// deleted (XGROUP DESTROY) and the stream trimmed past what was mirrored,
// so entries the mirror never read are gone.
// With --claim-idle, where what the checkpoint says is not a bound of
// everything mirrored, a group this run made is still checked against it.
func TestGroupMadeAgainAfterATrimPastWhatWasMirroredStopsNamingTheGap(t *testing.T) {
	for _, mode := range [][]string{nil, {"--claim-idle", "1m"}} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) { groupMadeAgainAfterATrim(t, mode) })
	}
}

func groupMadeAgainAfterATrim(t *testing.T, mode []string) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gapd")
	args := append([]string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}, mode...)

	first := addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	mustMirror(t, args...)
	added := addEntries(t, rc, stream, 10, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	must(t, rc.Do(ctx, rc.B().XgroupDestroy().Key(stream).Group("xmirror:"+name).Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xtrim().Key(stream).Maxlen().Exact().Threshold("5").Build()).Error())

	for try := 0; try < 2; try++ { // the group this run made stops a rerun too
		r := xmirror(t, args...)
		if r.code != 1 {
			t.Fatalf("run %d after the group was deleted and the stream trimmed: exit %d, stdout %q, stderr %q; want 1", try+1, r.code, r.stdout, r.stderr)
		}
		wants := []string{strconv.Quote(stream), "entries may have been trimmed", "starts at " + added[5], "--on-gap skip"}
		if try == 0 || mode == nil {
			// Under --claim-idle the group the first run made is one
			// like any other to the next: checked from its own position.
			wants = append(wants, "mirrored up to "+first[9])
		}
		for _, want := range wants {
			if !strings.Contains(r.stderr, want) {
				t.Fatalf("run %d: stderr %q does not say %q", try+1, r.stderr, want)
			}
		}
	}
	if ids := recordIDs(t, topic); fmt.Sprint(ids) != fmt.Sprint(first) {
		t.Fatalf("after the refused runs the topic holds %v, want the 10 entries mirrored before", ids)
	}
	r := mustMirror(t, append(args, "--on-gap", "skip")...)
	if !strings.Contains(r.stdout, `"entries":5,`) || !strings.Contains(r.stderr, "lost=unknown") {
		t.Fatalf("with --on-gap skip: stdout %s, stderr %q; want the 5 entries left and a gap of unknown size logged", r.stdout, r.stderr)
	}
	want := append(append([]string{}, first...), added[5:]...)
	if ids := recordIDs(t, topic); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("topic holds %v, want %v", ids, want)
	}
}

// TestFollowRunThatLosesItsGroupToATrimStopsNamingTheGap pins the same for
// a follow run: its group deleted, entries added and the stream trimmed
// past what it mirrored, all in one step, it makes the group again and
// stops at the gap rather than mirroring on from the stream's head.
func TestFollowRunThatLosesItsGroupToATrimStopsNamingTheGap(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "gapdf")

	first := addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	p := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--lease-ttl", "60s")
	testenv.Wait(t, 30*time.Second, "10 records", func() bool { return endOffset(t, adm, topic) == 10 })
	testenv.Wait(t, 30*time.Second, "the 10 entries committed", func() bool { return groupCaughtUp(t, rc, stream) })

	cmds := rueidis.Commands{rc.B().Multi().Build(), rc.B().XgroupDestroy().Key(stream).Group("xmirror:" + name).Build()}
	for i := 10; i < 20; i++ {
		cmds = append(cmds, rc.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("value", strconv.Itoa(i)).Build())
	}
	cmds = append(cmds, rc.B().Xtrim().Key(stream).Maxlen().Exact().Threshold("5").Build(), rc.B().Exec().Build())
	replies := rc.DoMulti(ctx, cmds...)
	exec, err := replies[len(replies)-1].ToArray()
	must(t, err)
	var added []string
	for _, m := range exec[1:11] {
		id, err := m.ToString()
		must(t, err)
		added = append(added, id)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the follow run went on past the gap: %s", p.stderr.String())
	}
	out := p.stderr.String()
	if code := p.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d; want 1; stderr %q", code, out)
	}
	for _, want := range []string{strconv.Quote(stream), "entries may have been trimmed", "mirrored up to " + first[9], "starts at " + added[5], "--on-gap skip"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stderr %q does not say %q", out, want)
		}
	}
	if ids := recordIDs(t, topic); fmt.Sprint(ids) != fmt.Sprint(first) {
		t.Fatalf("topic holds %v, want only the 10 entries mirrored before the gap", ids)
	}
}

// TestEntriesDeletedBeforeATrimAreNoExactGap pins that entries removed
// with XDEL after the mirror's position are not counted as trimmed: one
// inside the stream is known deleted (no gap), one below its head makes
// the count an upper bound.
func TestEntriesDeletedBeforeATrimAreNoExactGap(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }

	t.Run("deleted inside the stream", func(t *testing.T) {
		stream := testenv.Stream(t, rc)
		topic := testenv.Topic(t, kc, 1)
		args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", testenv.Name(t, "xdel"), "--output", "json"}
		first := addEntries(t, rc, stream, 0, 10, value)
		mustMirror(t, args...)
		added := addEntries(t, rc, stream, 10, 10, value)
		must(t, rc.Do(ctx, rc.B().Xdel().Key(stream).Id(added[4]).Build()).Error())
		must(t, rc.Do(ctx, rc.B().Xtrim().Key(stream).Minid().Threshold(added[0]).Build()).Error())
		r := xmirror(t, args...)
		if r.code != 0 || !strings.Contains(r.stdout, `"entries":9,`) {
			t.Fatalf("exit %d, stdout %s, stderr %q; want the 9 entries left mirrored, no gap", r.code, r.stdout, r.stderr)
		}
		want := append(append(append([]string{}, first...), added[:4]...), added[5:]...)
		if ids := recordIDs(t, topic); fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Fatalf("topic holds %v, want %v", ids, want)
		}
	})
	t.Run("deleted below the head", func(t *testing.T) {
		stream := testenv.Stream(t, rc)
		topic := testenv.Topic(t, kc, 1)
		args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", testenv.Name(t, "xdelh"), "--output", "json"}
		addEntries(t, rc, stream, 0, 10, value)
		mustMirror(t, args...)
		added := addEntries(t, rc, stream, 10, 10, value)
		must(t, rc.Do(ctx, rc.B().Xdel().Key(stream).Id(added[0]).Build()).Error())
		must(t, rc.Do(ctx, rc.B().Xtrim().Key(stream).Minid().Threshold(added[1]).Build()).Error())
		r := xmirror(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "up to 1 entries were trimmed") || !strings.Contains(r.stderr, "deleted with XDEL") {
			t.Fatalf("exit %d, stderr %q; want exit 1 with an upper bound of 1 that may be an XDEL", r.code, r.stderr)
		}
	})
}

// TestOnGapFailWithoutXgroupSetidIsRefusedAtStart pins that --on-gap fail,
// which holds a read at a gap with XGROUP SETID, is refused at start for a
// user the server refuses XGROUP SETID, rather than passing a gap found
// mid-run; --on-gap skip does not need it, and the check moves nothing.
func TestOnGapFailWithoutXgroupSetidIsRefusedAtStart(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "setid")
	user := testenv.Name(t, "u")
	testenv.RedisUser(t, rc, user, "-xgroup|setid")
	addr := strings.TrimPrefix(testenv.RedisURL(), "redis://")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}
	// In the environment: a password in --redis is warned about.
	env := []string{"XMIRROR_REDIS=redis://" + user + ":pw@" + addr}

	ids := addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	for _, extra := range [][]string{nil, {"--on-gap", "fail"}} {
		r := xmirrorEnv(t, env, append(append([]string{}, args...), extra...)...)
		if r.code != 1 {
			t.Fatalf("%v: exit %d, stderr %q; want 1", extra, r.code, r.stderr)
		}
		for _, want := range []string{strconv.Quote(stream), "XGROUP SETID", "+xgroup|setid", "--on-gap skip"} {
			if !strings.Contains(r.stderr, want) {
				t.Fatalf("stderr %q does not say %q", r.stderr, want)
			}
		}
		if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines > 0 {
			t.Fatalf("want one line, got %q", r.stderr)
		}
	}
	if n := len(readTopic(t, topic)); n != 0 {
		t.Fatalf("%d records written by a refused run", n)
	}
	r := xmirrorEnv(t, env, append(args, "--on-gap", "skip")...)
	if r.code != 0 || !strings.Contains(r.stdout, `"entries":10,`) {
		t.Fatalf("--on-gap skip: %s, want 10 entries", r.stdout)
	}
	// The check leaves the group as it stood, entries-read included.
	before, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
	must(t, err)
	r = xmirror(t, args...) // as a user that may: passes the check
	if r.code != 0 {
		t.Fatalf("as the default user: exit %d, stderr %q", r.code, r.stderr)
	}
	after, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
	must(t, err)
	b, _ := before[0].AsMap()
	a, _ := after[0].AsMap()
	for _, k := range []string{"last-delivered-id", "entries-read", "lag", "pending"} {
		bm, am := b[k], a[k]
		if bm.String() != am.String() {
			t.Fatalf("%s moved across a run that read nothing: %v, then %v", k, bm.String(), am.String())
		}
	}
	lastMsg := b["last-delivered-id"]
	if last, _ := lastMsg.ToString(); last != ids[9] {
		t.Fatalf("group at %s, want %s", last, ids[9])
	}
}
