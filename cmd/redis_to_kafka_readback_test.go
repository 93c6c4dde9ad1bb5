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
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// onceEach checks, with a plain consumer, that the topic holds exactly one
// record of each of ids and nothing else.
func onceEach(t *testing.T, topic string, ids []string) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	seen := map[string]int{}
	for _, id := range recordIDs(t, topic) {
		seen[id]++
	}
	var dup, lost, extra []string
	for id, n := range seen {
		switch {
		case !want[id]:
			extra = append(extra, id)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s x%d", id, n))
		}
	}
	for _, id := range ids {
		if seen[id] == 0 {
			lost = append(lost, id)
		}
	}
	if len(dup)+len(lost)+len(extra) > 0 {
		t.Fatalf("topic %s: %d duplicated %v, %d lost %v, %d unexpected %v", topic, len(dup), dup, len(lost), lost, len(extra), extra)
	}
}

// caughtUp waits until the mirror acknowledged everything up to last:
// its checkpoint records last for the stream and nothing is pending.
func caughtUp(t *testing.T, rc rueidis.Client, name, group, stream, last string) {
	t.Helper()
	ctx := context.Background()
	testenv.Wait(t, 30*time.Second, "the checkpoint to reach "+last, func() bool {
		if hget(t, rc, checkpoint.R2KKey(name), "stream:"+stream) != last {
			return false
		}
		p, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group(group).Build()).ToArray()
		if err != nil || len(p) == 0 {
			return false
		}
		n, _ := p[0].AsInt64()
		return n == 0
	})
}

func value(i int) []string { return []string{"value", strconv.Itoa(i)} }

// rollback is one test's mirror, stream and what it did to them.
type rollback struct {
	rc                  rueidis.Client
	stream, name, topic string
	ids                 []string
	snap                snapshot
}

// mirror runs the test's one-shot mirror to completion.
func (r *rollback) mirror(t *testing.T) result {
	t.Helper()
	return mustMirror(t, "r2k", "--stream", r.stream, "--topic", r.topic, "--name", r.name, "--output", "json")
}

// group is the mirror's consumer group, once a run has made it.
func (r *rollback) group(t *testing.T) string {
	t.Helper()
	testenv.Wait(t, 30*time.Second, "the mirror's consumer group", func() bool {
		groups, err := r.rc.Do(context.Background(), r.rc.B().XinfoGroups().Key(r.stream).Build()).ToArray()
		return err == nil && len(groups) == 1
	})
	return onlyGroup(t, r.rc, r.stream)
}

// Redis or the consumer group forgetting what a one-shot run mirrored:
// the next run reads Kafka back all the same and sends none of it again.
func TestOneShotAfterRedisForgotWhatWasMirroredSendsNothingAgain(t *testing.T) {
	for _, tc := range []struct {
		name string
		// forget runs after a first run mirrored the first entries:
		// it may mirror more, then makes Redis forget, and returns the
		// entries the next run is to find (sent or skipped).
		first            int
		forget           func(t *testing.T, r *rollback) []string
		entries, skipped int
		report           string
	}{
		// Redis restarted from an older snapshot (RDB, AOF everysec, a
		// replica promoted) holds the group and the checkpoint as they
		// were before a run that mirrored 10 entries: nothing is
		// pending, the group is before them.
		{"Redis restored from an older snapshot", 5, func(t *testing.T, r *rollback) []string {
			ids := addEntries(t, r.rc, r.stream, 5, 10, value)
			snap := takeSnapshot(t, r.rc, r.stream, checkpoint.R2KKey(r.name))
			r.mirror(t)
			snap.restore(t, r.rc)
			return ids
		}, 0, 10, "already_in_kafka=10"},
		// XGROUP DESTROY between two one-shot runs: the second makes
		// the group again from the stream's first entry and sends only
		// what is new.
		{"group destroyed", 10, func(t *testing.T, r *rollback) []string {
			must(t, r.rc.Do(context.Background(), r.rc.B().XgroupDestroy().Key(r.stream).Group(r.group(t)).Build()).Error())
			return addEntries(t, r.rc, r.stream, 10, 5, value)
		}, 5, 10, "already in Kafka"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := testenv.Redis(t)
			kc := testenv.Kafka(t)
			r := &rollback{rc: rc, stream: testenv.Stream(t, rc), topic: testenv.Topic(t, kc, 1), name: testenv.Name(t, "m")}
			t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(r.name)).Build()) })
			topic := r.topic

			ids := addEntries(t, rc, r.stream, 0, tc.first, value)
			r.mirror(t)
			ids = append(ids, tc.forget(t, r)...)
			res := r.mirror(t)
			onceEach(t, topic, ids)
			if s := parseSummary(t, res.stdout); s.Entries != tc.entries || s.Skipped != tc.skipped {
				t.Errorf("summary %s: want %d entries sent and %d skipped", res.stdout, tc.entries, tc.skipped)
			}
			if !strings.Contains(res.stderr, tc.report) {
				t.Errorf("stderr does not say %q: %s", tc.report, res.stderr)
			}
			// And the run after it has nothing to do.
			if s := parseSummary(t, r.mirror(t).stdout); s.Entries != 0 || s.Skipped != 0 {
				t.Errorf("the run after: %+v, want nothing to do", s)
			}
			onceEach(t, topic, ids)
		})
	}
}

// Redis or the consumer group forgetting what a follow run mirrored while
// it runs: it notices, says so, reads back and sends nothing twice.
func TestFollowSendsNothingAgainWhenRedisForgetsWhatWasMirrored(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before adds the entries there before the follow run starts
		// (and may mirror some of them, one-shot, first).
		before func(t *testing.T, r *rollback) []string
		args   []string
		// forget is each thing done behind the run's back; after each,
		// more entries are added, and the run must catch up.
		forget  []func(t *testing.T, r *rollback, group string)
		more    int
		report  string
		reports int
	}{
		// The rollback of Redis restored from an older snapshot, under
		// a follow run that stays up across it.
		{"Redis restored from an older snapshot", func(t *testing.T, r *rollback) []string {
			ids := addEntries(t, r.rc, r.stream, 0, 5, value)
			r.mirror(t)
			ids = append(ids, addEntries(t, r.rc, r.stream, 5, 10, value)...)
			r.snap = takeSnapshot(t, r.rc, r.stream, checkpoint.R2KKey(r.name))
			return ids
		}, nil, []func(*testing.T, *rollback, string){
			func(t *testing.T, r *rollback, _ string) { r.snap.restore(t, r.rc) },
		}, 5, "read the checkpoint and Kafka back again", 1},
		// XGROUP DESTROY: the run makes the group again from the
		// stream's first entry.
		{"group destroyed", func(t *testing.T, r *rollback) []string {
			return addEntries(t, r.rc, r.stream, 0, 100, value)
		}, nil, []func(*testing.T, *rollback, string){
			func(t *testing.T, r *rollback, group string) {
				must(t, r.rc.Do(context.Background(), r.rc.B().XgroupDestroy().Key(r.stream).Group(group).Build()).Error())
			},
		}, 10, "lost the consumer group", 1},
		// XGROUP SETID back to the start, then to an entry in the
		// middle: what the group delivers again is acknowledged.
		{"group moved back", func(t *testing.T, r *rollback) []string {
			return addEntries(t, r.rc, r.stream, 0, 150, value)
		}, []string{"--batch-size", "20"}, []func(*testing.T, *rollback, string){
			func(t *testing.T, r *rollback, group string) {
				must(t, r.rc.Do(context.Background(), r.rc.B().XgroupSetid().Key(r.stream).Group(group).Id("0").Build()).Error())
			},
			func(t *testing.T, r *rollback, group string) {
				must(t, r.rc.Do(context.Background(), r.rc.B().XgroupSetid().Key(r.stream).Group(group).Id(r.ids[49]).Build()).Error())
			},
		}, 10, "the consumer group went back", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := testenv.Redis(t)
			kc := testenv.Kafka(t)
			r := &rollback{rc: rc, stream: testenv.Stream(t, rc), topic: testenv.Topic(t, kc, 1), name: testenv.Name(t, "m")}
			t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(r.name)).Build()) })
			topic := r.topic

			r.ids = tc.before(t, r)
			m := startXmirror(t, append([]string{"r2k", "--stream", r.stream, "--topic", topic, "--name", r.name, "--follow"}, tc.args...)...)
			group := r.group(t)
			caughtUp(t, rc, r.name, group, r.stream, r.ids[len(r.ids)-1])
			for _, forget := range tc.forget {
				forget(t, r, group)
				r.ids = append(r.ids, addEntries(t, rc, r.stream, len(r.ids), tc.more, value)...)
				caughtUp(t, rc, r.name, group, r.stream, r.ids[len(r.ids)-1])
			}
			if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, m.stderr)
			}
			onceEach(t, topic, r.ids)
			if n := strings.Count(m.stderr.String(), tc.report); n < tc.reports {
				t.Errorf("%d reports of %q, want %d: %s", n, tc.report, tc.reports, m.stderr)
			}
		})
	}
}

// A checkpoint written before partition counts were kept, for a topic to
// which partitions were added: an earlier version wrote 10 entries into
// the new partitions and died before acknowledging them. A run that
// records where partitions start and then stops during its read-back
// (here: --timeout too short for it) must leave the next run the whole
// of those partitions to read back, not their ends.
func TestRunStoppedDuringItsReadBackLeavesPartitionsAddedBeforeCountsWereKeptToReadBack(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 4)
	waitPartitions(t, adm, topic, 4)
	name := testenv.Name(t, "m")
	key := checkpoint.R2KKey(name)
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(key).Build()) })
	// The group the old run read through, made here before any run: the
	// name xmirror gives a mirror's group.
	group := "xmirror:" + name

	// The old run: its checkpoint knows partition 0 only, no counts;
	// its 10 entries are pending, their records in partitions 1 to 3.
	ids := addEntries(t, rc, stream, 0, 10, value)
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group(group).Id("0").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xreadgroup().Group(group, name).Count(10).Streams().Key(stream).Id(">").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Hset().Key(key).FieldValue().FieldValue("version", "1").FieldValue("kind", "redis-to-kafka").
		FieldValue("group", group).FieldValue("partition:"+topic+":0", "0").Build()).Error())
	var written []*kgo.Record
	for i, id := range ids {
		r := lineageRecord(stream, id, strconv.Itoa(i))
		r.Partition = int32(1 + i%3)
		written = append(written, r)
	}
	produce(t, topic, written)

	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}
	if r := xmirror(t, append(args, "--timeout", "1ms")...); r.code != 1 {
		t.Fatalf("run stopped during its read-back: exit %d, stderr %s; want 1", r.code, r.stderr)
	}
	r := mustMirror(t, args...)
	onceEach(t, topic, ids)
	if s := parseSummary(t, r.stdout); s.Entries != 0 || s.Skipped != 10 {
		t.Errorf("summary %s: want 0 entries sent and 10 skipped", r.stdout)
	}
}
