package cmd_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
)

// TestCheckpointResetAndDeleteARedisToKafkaMirror: list shows the mirror;
// reset needs --yes off a terminal, is refused while the mirror runs,
// moves to earliest (the next run mirrors every entry again) and to an
// entry ID (the next run mirrors what follows it), printing before ->
// after; delete removes checkpoint, record and group, and a new run
// starts afresh.
func TestCheckpointResetAndDeleteARedisToKafkaMirror(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	ids := addEntries(t, rc, stream, 0, 50, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	mirrorArgs := []string{"redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name}
	mustMirror(t, mirrorArgs...)

	if r := mustMirror(t, "checkpoint", "list"); !strings.Contains(r.stdout, name) || !strings.Contains(r.stdout, stream+" -> "+topic) {
		t.Errorf("checkpoint list lacks the mirror:\n%s", r.stdout)
	}
	if r := xmirror(t, "checkpoint", "reset", name, "--to", "earliest"); r.code != 2 || !strings.Contains(r.stderr, "--yes is needed") {
		t.Errorf("reset off a terminal without --yes: exit %d, stderr %q; want 2", r.code, r.stderr)
	}
	run := startXmirror(t, append(mirrorArgs, "--follow")...)
	testenv.Wait(t, 20*time.Second, "the follow run's lease", func() bool {
		n, _ := rc.Do(context.Background(), rc.B().Exists().Key("xmirror:lease:redis-to-kafka:"+name).Build()).AsInt64()
		return n == 1
	})
	r := xmirror(t, "checkpoint", "reset", name, "--to", "earliest", "--yes")
	if r.code != 1 || !strings.Contains(r.stderr, "is running (pid "+strconv.Itoa(run.cmd.Process.Pid)) || !strings.Contains(r.stderr, "nothing was changed") {
		t.Errorf("reset while running: exit %d, stderr %q; want 1 naming the holder", r.code, r.stderr)
	}
	if r := xmirror(t, "checkpoint", "delete", name, "--yes"); r.code != 1 || !strings.Contains(r.stderr, "is running") {
		t.Errorf("delete while running: exit %d, stderr %q; want 1", r.code, r.stderr)
	}
	if code, _ := run.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("follow run: exit %d", code)
	}

	r = mustMirror(t, "checkpoint", "reset", name, "--to", "earliest", "--yes")
	if want := fmt.Sprintf("stream %s: %s -> ", stream, ids[49]); !strings.Contains(r.stdout, want) {
		t.Errorf("reset prints %q, want %q", r.stdout, want)
	}
	mustMirror(t, mirrorArgs...)
	if n := len(readTopic(t, topic)); n != 100 {
		t.Errorf("after a reset to earliest the topic holds %d records, want 50 twice", n)
	}
	r = mustMirror(t, "checkpoint", "reset", name, "--to", ids[39], "--yes")
	if want := fmt.Sprintf("stream %s: %s -> %s", stream, ids[49], ids[39]); !strings.Contains(r.stdout, want) {
		t.Errorf("reset prints %q, want %q", r.stdout, want)
	}
	mustMirror(t, mirrorArgs...)
	recs := readTopic(t, topic)
	if len(recs) != 110 {
		t.Fatalf("after a reset to the 40th entry the topic holds %d records, want 110", len(recs))
	}
	if id, _ := header(recs[100], "xmirror.id"); id != ids[40] {
		t.Errorf("the first record after the reset is entry %s, want %s (the one after the ID)", id, ids[40])
	}

	// A time past the last entry moves to the last entry, never past it:
	// entries added later are mirrored.
	mustMirror(t, "checkpoint", "reset", name, "--to-time", "2099-01-01T00:00:00Z", "--yes")
	more := addEntries(t, rc, stream, 50, 3, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	mustMirror(t, mirrorArgs...)
	recs = readTopic(t, topic)
	if id, _ := header(recs[len(recs)-1], "xmirror.id"); len(recs) != 113 || id != more[2] {
		t.Errorf("after a reset to a time to come: %d records, last %s; want 113, the 3 entries added after it", len(recs), id)
	}

	r = mustMirror(t, "checkpoint", "delete", name, "--yes")
	for _, want := range []string{"deleted consumer group", "deleted xmirror:r2k:" + name} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("delete prints %q, want %q", r.stdout, want)
		}
	}
	if r := mustMirror(t, "checkpoint", "list"); strings.Contains(r.stdout, name) {
		t.Errorf("checkpoint list still shows the deleted mirror:\n%s", r.stdout)
	}
	// A new mirror of that name: a new group, from the start.
	mustMirror(t, mirrorArgs...)
	if n := len(readTopic(t, topic)); n != 166 {
		t.Errorf("a run after delete: the topic holds %d records, want 113 + 53", n)
	}
}

// TestCheckpointResetAKafkaToRedisMirror: reset to a partition's offset
// and to a time: the next run mirrors exactly from there.
func TestCheckpointResetAKafkaToRedisMirror(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	dest := testenv.Stream(t, rc)
	name := testenv.Name(t, "m")
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	recs := make([]*kgo.Record, 20)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Value: []byte(fmt.Sprintf(`{"n":"%d"}`, i)), Timestamp: base.Add(time.Duration(i) * time.Second)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kc.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	args := []string{"kafka-to-redis", "--topic", topic, "--stream", dest, "--name", name}
	mustMirror(t, args...)

	r := mustMirror(t, "checkpoint", "reset", name, "--to", "0=15", "--yes")
	if want := fmt.Sprintf("topic %s partition 0: 20 -> 15", topic); !strings.Contains(r.stdout, want) {
		t.Errorf("reset prints %q, want %q", r.stdout, want)
	}
	mustMirror(t, args...)
	if n := streamLen(rc, dest)(); n != 25 {
		t.Errorf("after a reset to offset 15: %d entries, want 20 + 5", n)
	}
	at := base.Add(12 * time.Second).UTC().Format(time.RFC3339)
	r = mustMirror(t, "checkpoint", "reset", name, "--to-time", at, "--yes")
	if want := fmt.Sprintf("topic %s partition 0: 20 -> 12", topic); !strings.Contains(r.stdout, want) {
		t.Errorf("reset --to-time prints %q, want %q", r.stdout, want)
	}
	mustMirror(t, args...)
	if n := streamLen(rc, dest)(); n != 33 {
		t.Errorf("after a reset to the record of %s: %d entries, want 25 + 8", at, n)
	}
	for _, bad := range [][]string{
		{"checkpoint", "reset", name, "--to", "x=1", "--yes"},
		{"checkpoint", "reset", name, "--yes"},
		{"checkpoint", "reset", name, "--to-time", "yesterday", "--yes"},
		{"checkpoint", "reset", name, "--to", "0=999", "--yes"}, // past the partition's end
	} {
		if r := xmirror(t, bad...); r.code != 2 {
			t.Errorf("%v: exit %d, stderr %q; want 2", bad, r.code, r.stderr)
		}
	}
	if r := xmirror(t, "checkpoint", "show", testenv.Name(t, "nobody")); r.code != 1 || !strings.Contains(r.stderr, "no mirror named") {
		t.Errorf("show of an unknown mirror: exit %d, stderr %q", r.code, r.stderr)
	}
}
