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

// Redis restarted from an older snapshot (RDB, AOF everysec, a replica
// promoted) holds the group and the checkpoint as they were before a run
// that mirrored 10 entries: nothing is pending, the group is before them.
// The next run reads Kafka back all the same and sends none of them again.
func TestOneShotAfterRedisRestoredFromAnOlderSnapshotSendsNothingAgain(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name}

	ids := addEntries(t, rc, stream, 0, 5, value)
	mustMirror(t, args...)
	ids = append(ids, addEntries(t, rc, stream, 5, 10, value)...)
	snap := takeSnapshot(t, rc, stream, checkpoint.R2KKey(name))
	mustMirror(t, args...)
	onceEach(t, topic, ids)

	snap.restore(t, rc)
	r := mustMirror(t, append(args, "--output", "json")...)
	onceEach(t, topic, ids)
	if s := parseSummary(t, r.stdout); s.Entries != 0 || s.Skipped != 10 {
		t.Errorf("summary %s: want 0 entries sent and 10 skipped", r.stdout)
	}
	if !strings.Contains(r.stderr, "already_in_kafka=10") {
		t.Errorf("the entries found in Kafka are not reported: %s", r.stderr)
	}
	// And the run after it has nothing to do.
	mustMirror(t, args...)
	onceEach(t, topic, ids)
}

// The same rollback under a follow run that stays up across it.
func TestFollowAcrossRedisRestoredFromAnOlderSnapshotSendsNothingAgain(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	group := "xmirror:" + name
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name}

	ids := addEntries(t, rc, stream, 0, 5, value)
	mustMirror(t, args...)
	ids = append(ids, addEntries(t, rc, stream, 5, 10, value)...)
	snap := takeSnapshot(t, rc, stream, checkpoint.R2KKey(name))

	m := startXmirror(t, append(args, "--follow")...)
	caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	snap.restore(t, rc)
	ids = append(ids, addEntries(t, rc, stream, 15, 5, value)...)
	caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr)
	}
	onceEach(t, topic, ids)
	if !strings.Contains(m.stderr.String(), "read the checkpoint and Kafka back again") {
		t.Errorf("the rollback is not reported: %s", m.stderr)
	}
}

// XGROUP DESTROY behind a follow run's back: it makes the group again
// from the stream's first entry, says so, and sends nothing twice.
func TestFollowSendsNothingAgainWhenItsGroupIsDestroyed(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	group := "xmirror:" + name
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })

	ids := addEntries(t, rc, stream, 0, 100, value)
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow")
	caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	must(t, rc.Do(ctx, rc.B().XgroupDestroy().Key(stream).Group(group).Build()).Error())
	ids = append(ids, addEntries(t, rc, stream, 100, 10, value)...)
	caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr)
	}
	onceEach(t, topic, ids)
	if !strings.Contains(m.stderr.String(), "lost the consumer group") {
		t.Errorf("the lost group is not reported: %s", m.stderr)
	}
}

// XGROUP DESTROY between two one-shot runs: the second makes the group
// again from the stream's first entry and sends only what is new.
func TestOneShotSendsNothingAgainAfterItsGroupWasDestroyed(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}

	ids := addEntries(t, rc, stream, 0, 10, value)
	mustMirror(t, args...)
	must(t, rc.Do(ctx, rc.B().XgroupDestroy().Key(stream).Group("xmirror:"+name).Build()).Error())
	ids = append(ids, addEntries(t, rc, stream, 10, 5, value)...)
	r := mustMirror(t, args...)
	onceEach(t, topic, ids)
	if s := parseSummary(t, r.stdout); s.Entries != 5 || s.Skipped != 10 {
		t.Errorf("summary %s: want 5 entries sent and 10 skipped", r.stdout)
	}
	if !strings.Contains(r.stderr, "already in Kafka") {
		t.Errorf("the entries delivered again are not reported: %s", r.stderr)
	}
}

// XGROUP SETID back to the start, then to an entry in the middle, during
// a follow run: what the group delivers again is acknowledged, not sent.
func TestFollowSendsNothingAgainWhenItsGroupIsMovedBack(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	group := "xmirror:" + name
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })

	ids := addEntries(t, rc, stream, 0, 150, value)
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--batch-size", "20")
	caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	for i, to := range []string{"0", ids[49]} {
		must(t, rc.Do(ctx, rc.B().XgroupSetid().Key(stream).Group(group).Id(to).Build()).Error())
		ids = append(ids, addEntries(t, rc, stream, 150+10*i, 10, value)...)
		caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	}
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr)
	}
	onceEach(t, topic, ids)
	if n := strings.Count(m.stderr.String(), "the consumer group went back"); n < 2 {
		t.Errorf("%d reports of the group moved back, want 2: %s", n, m.stderr)
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
