package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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

// firstEntry is the ID of a stream's first entry, asked of Redis directly
// ("" when it has none).
func firstEntry(t *testing.T, rc rueidis.Client, stream string) string {
	t.Helper()
	entries, err := rc.Do(context.Background(), rc.B().Xrange().Key(stream).Start("-").End("+").Count(1).Build()).ToArray()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", stream, err)
	}
	if len(entries) == 0 {
		return ""
	}
	e, _ := entries[0].ToArray()
	id, _ := e[0].ToString()
	return id
}

// readAs reads up to count new entries of stream through group as
// consumer "app", as an application's consumer does, and acknowledges
// the first ack of them; it returns the IDs read.
func readAs(t *testing.T, rc rueidis.Client, stream, group string, count, ack int) []string {
	t.Helper()
	ctx := context.Background()
	reply, err := rc.Do(ctx, rc.B().Xreadgroup().Group(group, "app").Count(int64(count)).Streams().Key(stream).Id(">").Build()).AsXRead()
	if err != nil {
		t.Fatalf("XREADGROUP %s %s: %v", stream, group, err)
	}
	var ids []string
	for _, e := range reply[stream] {
		ids = append(ids, e.ID)
	}
	if n := min(ack, len(ids)); n > 0 {
		must(t, rc.Do(ctx, rc.B().Xack().Key(stream).Group(group).Id(ids[:n]...).Build()).Error())
	}
	return ids
}

// trimSummary reads a one-shot run's JSON summary.
type trimSummary struct {
	Entries int64 `json:"entries"`
	Trimmed int64 `json:"trimmed"`
}

func trimRunSummary(t *testing.T, r result) trimSummary {
	t.Helper()
	var s trimSummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("summary %q: %v", r.stdout, err)
	}
	return s
}

// TestTrimSourceStopsAtALaggingGroupThenAtTheMirrorOnceItIsGone: with
// another consumer group of the stream behind the mirror, --trim-source
// trims only what that group has read and acknowledged, keeping the last
// entry it was delivered; once it catches up, the next run trims on, and
// once it is deleted, a run with nothing new to mirror trims the stream
// up to the mirror's last entry. Every entry is in Kafka once, no run
// takes its own trims for a gap, and status counts what was trimmed.
func TestTrimSourceStopsAtALaggingGroupThenAtTheMirrorOnceItIsGone(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "trim")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--trim-source", "--output", "json"}
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }

	ids := addEntries(t, rc, stream, 0, 20, value)
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("app").Id("0").Build()).Error())
	readAs(t, rc, stream, "app", 8, 8)

	if s := trimRunSummary(t, mustMirror(t, args...)); s.Entries != 20 || s.Trimmed != 7 {
		t.Fatalf("first run: %+v, want 20 entries mirrored and 7 trimmed (those before the group's last entry)", s)
	}
	if first, n := firstEntry(t, rc, stream), streamLen(rc, stream)(); first != ids[7] || n != 13 {
		t.Fatalf("the stream starts at %s with %d entries, want %s (the group's last delivered entry) and 13", first, n, ids[7])
	}

	ids = append(ids, addEntries(t, rc, stream, 20, 5, value)...)
	readAs(t, rc, stream, "app", 4, 4)
	if s := trimRunSummary(t, mustMirror(t, args...)); s.Entries != 5 || s.Trimmed != 4 {
		t.Fatalf("second run: %+v, want 5 entries mirrored and 4 trimmed", s)
	}
	if first := firstEntry(t, rc, stream); first != ids[11] {
		t.Fatalf("the stream starts at %s, want %s", first, ids[11])
	}

	must(t, rc.Do(ctx, rc.B().XgroupDestroy().Key(stream).Group("app").Build()).Error())
	if s := trimRunSummary(t, mustMirror(t, args...)); s.Entries != 0 || s.Trimmed != 13 {
		t.Fatalf("run after the group was deleted: %+v, want nothing mirrored and 13 trimmed", s)
	}
	if first, n := firstEntry(t, rc, stream), streamLen(rc, stream)(); first != ids[24] || n != 1 {
		t.Fatalf("the stream starts at %s with %d entries, want only the last one mirrored, %s", first, n, ids[24])
	}
	if got := recordIDs(t, topic); !slices.Equal(got, ids) {
		t.Fatalf("topic holds %v, want every entry once: %v", got, ids)
	}

	r := mustMirror(t, "status", name, "-o", "json")
	var st []struct {
		Trimmed   int64 `json:"trimmed"`
		Positions []struct {
			Stream  string `json:"stream"`
			Trimmed int64  `json:"trimmed"`
		} `json:"positions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st) != 1 || st[0].Trimmed != 24 || len(st[0].Positions) != 1 || st[0].Positions[0].Trimmed != 24 {
		t.Fatalf("status -o json: %s (%v), want 24 trimmed, from the one stream", r.stdout, err)
	}
	if r := mustMirror(t, "status", name); !strings.Contains(r.stdout, "trimmed:     24 entries from the source") || !strings.Contains(r.stdout, "TRIMMED") {
		t.Fatalf("status does not show what was trimmed:\n%s", r.stdout)
	}
}

// TestTrimSourceNeverPassesAnotherGroupsPendingEntries: entries another
// group was delivered and has not acknowledged stay, bodies and all,
// however far the mirror is; acknowledged, they go at the next run.
func TestTrimSourceNeverPassesAnotherGroupsPendingEntries(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "trimp")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--trim-source", "--output", "json"}

	ids := addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("app").Id("0").Build()).Error())
	readAs(t, rc, stream, "app", 6, 2) // the 3rd to 6th pending

	if s := trimRunSummary(t, mustMirror(t, args...)); s.Entries != 10 || s.Trimmed != 2 {
		t.Fatalf("run: %+v, want 10 mirrored and 2 trimmed (up to the group's first pending entry)", s)
	}
	if first := firstEntry(t, rc, stream); first != ids[2] {
		t.Fatalf("the stream starts at %s, want the group's first pending entry %s", first, ids[2])
	}
	// The group reads its pending entries again: all there, with bodies.
	pel, err := rc.Do(ctx, rc.B().Xreadgroup().Group("app", "app").Streams().Key(stream).Id("0").Build()).AsXRead()
	must(t, err)
	var again []string
	for _, e := range pel[stream] {
		if e.FieldValues == nil {
			t.Fatalf("pending entry %s lost its body", e.ID)
		}
		again = append(again, e.ID)
	}
	if !slices.Equal(again, ids[2:6]) {
		t.Fatalf("the group's pending entries are %v, want %v", again, ids[2:6])
	}
	must(t, rc.Do(ctx, rc.B().Xack().Key(stream).Group("app").Id(ids[2:6]...).Build()).Error())
	if s := trimRunSummary(t, mustMirror(t, args...)); s.Entries != 0 || s.Trimmed != 3 {
		t.Fatalf("run after the acks: %+v, want nothing mirrored and 3 trimmed (up to the group's last entry)", s)
	}
	if first := firstEntry(t, rc, stream); first != ids[5] {
		t.Fatalf("the stream starts at %s, want %s", first, ids[5])
	}
	if got := recordIDs(t, topic); !slices.Equal(got, ids) {
		t.Fatalf("topic holds %v, want %v", got, ids)
	}
}

// TestTrimSourceInAFollowRunTrimsOnlyWhatKafkaHolds: a follow run with
// --trim-source while entries are added and another group reads them at
// its own pace: every entry reaches Kafka exactly once (read back with a
// plain consumer), the other group is delivered every entry (none was
// trimmed before it read it), and the stream shrinks to what that group
// and the mirror have not passed.
func TestTrimSourceInAFollowRunTrimsOnlyWhatKafkaHolds(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "trimf")
	const n = 3000
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("app").Id("0").Mkstream().Build()).Error())

	p := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--trim-source", "--follow", "--batch-size", "100")
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	// Half the entries, mirrored before the other group reads any: it
	// holds the whole stream meanwhile.
	added := addEntries(t, rc, stream, 0, n/2, value)
	testenv.Wait(t, 60*time.Second, "the first half in Kafka", func() bool { return endOffset(t, adm, topic) >= n/2 })
	if got := streamLen(rc, stream)(); got != n/2 {
		t.Fatalf("the stream holds %d entries, want all %d: the other group has read none", got, n/2)
	}
	// The other group then reads and acknowledges, in small reads,
	// concurrently with the mirror and the writes: behind the mirror.
	var (
		mu      sync.Mutex
		appRead []string
	)
	stopApp := make(chan struct{})
	appDone := make(chan struct{})
	go func() {
		defer close(appDone)
		for {
			select {
			case <-stopApp:
				return
			default:
			}
			reply, err := rc.Do(ctx, rc.B().Xreadgroup().Group("app", "app").Count(10).Block(100).Streams().Key(stream).Id(">").Build()).AsXRead()
			if err != nil {
				continue // nothing new within the block
			}
			var ids []string
			for _, e := range reply[stream] {
				ids = append(ids, e.ID)
			}
			if len(ids) > 0 {
				rc.Do(ctx, rc.B().Xack().Key(stream).Group("app").Id(ids...).Build())
			}
			mu.Lock()
			appRead = append(appRead, ids...)
			mu.Unlock()
		}
	}()
	for i := n / 2; i < n; i += 100 {
		added = append(added, addEntries(t, rc, stream, i, 100, value)...)
	}
	testenv.Wait(t, 60*time.Second, "every entry in Kafka and read by the other group", func() bool {
		mu.Lock()
		read := len(appRead)
		mu.Unlock()
		return read >= n && endOffset(t, adm, topic) >= n
	})
	close(stopApp)
	<-appDone
	if !slices.Equal(appRead, added) {
		t.Fatalf("the other group was delivered %d entries, not the %d added, in order: the trim passed it", len(appRead), n)
	}
	// One more entry, which the other group does not read: the commit
	// that carries it trims all but the other group's last entry and it.
	added = append(added, addEntries(t, rc, stream, n, 1, value)...)
	testenv.Wait(t, 30*time.Second, "the new entry checkpointed and the stream trimmed to the other group's last entry and it", func() bool {
		ck, _, err := checkpoint.LoadR2K(ctx, rc, name)
		return err == nil && ck.Streams[stream] == added[n] && streamLen(rc, stream)() == 2
	})
	if first := firstEntry(t, rc, stream); first != added[n-1] {
		t.Fatalf("the stream starts at %s, want %s (the other group's last entry)", first, added[n-1])
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("follow run: exit %d: %s", code, p.stderr.String())
	}
	if want := fmt.Sprintf("%d trimmed from the source", n-1); !strings.Contains(p.stderr.String(), want) {
		t.Fatalf("the summary does not say %q:\n%s", want, p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), "level=WARN") {
		t.Fatalf("the run warned:\n%s", p.stderr.String())
	}
	got := recordIDs(t, topic)
	if !slices.Equal(got, added) {
		t.Fatalf("topic holds %d records, want the %d entries added, each once, in order", len(got), len(added))
	}
	ck, _, err := checkpoint.LoadR2K(ctx, rc, name)
	must(t, err)
	if ck.Trimmed[stream] != n-1 {
		t.Fatalf("checkpoint counts %d trimmed, want %d", ck.Trimmed[stream], n-1)
	}
}

// TestTrimSourceIsNoGapEvenWhenRedisCannotCount: the trim keeps the last
// entry the mirror confirmed, so the stream never starts after the
// group's position and the gap check (--on-gap fail, the default) finds
// no gap in the mirror's own trims, even when Redis does not know the
// group's entries-read and cannot count what was removed (as after an
// XGROUP SETID without ENTRIESREAD).
func TestTrimSourceIsNoGapEvenWhenRedisCannotCount(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "trimgap")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--trim-source", "--output", "json"}
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	ids := addEntries(t, rc, stream, 0, 10, value)
	if s := trimRunSummary(t, mustMirror(t, args...)); s.Trimmed != 9 {
		t.Fatalf("first run: %+v, want 9 trimmed", s)
	}
	ids = append(ids, addEntries(t, rc, stream, 10, 5, value)...)
	group := onlyGroup(t, rc, stream)
	must(t, rc.Do(ctx, rc.B().XgroupSetid().Key(stream).Group(group).Id(ids[9]).Build()).Error())
	groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
	must(t, err)
	info, _ := groups[0].AsMap()
	if read := info["entries-read"]; !read.IsNil() {
		t.Fatalf("entries-read is %v after XGROUP SETID without ENTRIESREAD; the test needs Redis not to know it", read.String())
	}
	if s := trimRunSummary(t, mustMirror(t, args...)); s.Entries != 5 || s.Trimmed != 5 {
		t.Fatalf("run after the trim: %+v, want the 5 new entries mirrored and 5 trimmed, no gap", s)
	}
	if got := recordIDs(t, topic); !slices.Equal(got, ids) {
		t.Fatalf("topic holds %v, want %v", got, ids)
	}
}

// TestWithoutTrimSourceNothingIsTrimmed: a mirror without --trim-source
// leaves its stream whole, whatever it mirrored, and counts nothing.
func TestWithoutTrimSourceNothingIsTrimmed(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "notrim")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}
	ids := addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	for range 2 {
		if r := mustMirror(t, args...); strings.Contains(r.stdout, "trimmed") {
			t.Fatalf("summary %s counts trimmed entries", r.stdout)
		}
	}
	if first, n := firstEntry(t, rc, stream), streamLen(rc, stream)(); first != ids[0] || n != 10 {
		t.Fatalf("the stream starts at %s with %d entries, want all 10 from %s", first, n, ids[0])
	}
	fields, err := rc.Do(ctx, rc.B().Hkeys().Key(checkpoint.R2KKey(name)).Build()).AsStrSlice()
	must(t, err)
	for _, f := range fields {
		if strings.HasPrefix(f, "trimmed:") {
			t.Fatalf("checkpoint holds %s", f)
		}
	}
	if r := mustMirror(t, "status", name, "-o", "json"); strings.Contains(r.stdout, "trimmed") {
		t.Fatalf("status -o json counts trimmed entries: %s", r.stdout)
	}
}

// TestTrimSourceNeedsXtrim: a user the server refuses XTRIM is refused at
// start with --trim-source, one line saying what to grant, before
// anything is written; without the flag it mirrors; check --for names
// XTRIM only with --trim-source.
func TestTrimSourceNeedsXtrim(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "trimacl")
	user := testenv.Name(t, "u")
	testenv.RedisUser(t, rc, user, "-xtrim")
	addr := strings.TrimPrefix(testenv.RedisURL(), "redis://")
	env := []string{"XMIRROR_REDIS=redis://" + user + ":pw@" + addr}
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}
	ids := addEntries(t, rc, stream, 0, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	mustMirror(t, args...) // a checkpoint to trim up to

	r := xmirrorEnv(t, env, append(args, "--trim-source")...)
	if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("--trim-source without XTRIM: exit %d, stderr %q; want 1 and one line", r.code, r.stderr)
	}
	for _, want := range []string{"+xtrim", "--trim-source"} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("stderr %q does not say %q", r.stderr, want)
		}
	}
	if n := streamLen(rc, stream)(); n != 5 {
		t.Fatalf("the refused run left %d entries of 5", n)
	}
	addEntries(t, rc, stream, 5, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	if r := xmirrorEnv(t, env, args...); r.code != 0 || !strings.Contains(r.stdout, `"entries":3,`) {
		t.Fatalf("without --trim-source: exit %d, %s %s; want the 3 new entries mirrored", r.code, r.stdout, r.stderr)
	}
	if got := recordIDs(t, topic); len(got) != 8 || got[0] != ids[0] {
		t.Fatalf("topic holds %v, want the 8 entries", got)
	}

	check := []string{"check", "--for", "redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name}
	if r := xmirrorEnv(t, env, check...); r.code != 0 {
		t.Fatalf("check --for without --trim-source: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = xmirrorEnv(t, env, append(check, "--trim-source")...)
	if want := "may not run XTRIM on stream " + stream; r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "+xtrim") {
		t.Fatalf("check --for --trim-source: exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
}

// TestTrimSourceInAMirrorsFile: the mirrors file takes trim-source as
// the flag, and refuses it with a start other than earliest, as the
// command does.
func TestTrimSourceInAMirrorsFile(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", `redis: redis://127.0.0.1:1/0
brokers: 127.0.0.1:1
mirrors:
  - name: buffer
    direction: r2k
    stream: events
    trim-source: true
`)
	if r := xmirror(t, "run", "--config", good, "--check"); r.code != 0 {
		t.Fatalf("trim-source: true: exit %d, stderr %q; want 0", r.code, r.stderr)
	}
	bad := writeFile(t, dir, "bad.yaml", `mirrors:
  - name: buffer
    direction: r2k
    stream: events
    start: latest
    trim-source: true
  - name: back
    direction: k2r
    topic: events
    trim-source: true
`)
	r := xmirror(t, "run", "--config", bad, "--check")
	for _, want := range []string{`mirror "buffer": trim-source with start latest`, `unknown key "trim-source" for a kafka-to-redis mirror`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("--check lacks %q:\n%s", want, r.stderr)
		}
	}
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	if r := xmirror(t, "r2k", "--stream", "events", "--start", "latest", "--trim-source"); r.code != 2 || !strings.Contains(r.stderr, "--trim-source with --start latest") {
		t.Errorf("r2k --start latest --trim-source: exit %d, stderr %q; want 2", r.code, r.stderr)
	}
}
