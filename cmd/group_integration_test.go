package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

func TestTwoMirrorNamesOnOneStreamEachMirrorEverything(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	var names []string
	for _, m := range []string{"first", "second"} {
		topic := testenv.Topic(t, kc, 1)
		name := testenv.Name(t, m)
		names = append(names, name)
		t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
		r := mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json")
		if !strings.Contains(r.stdout, `"entries":10`) {
			t.Fatalf("mirror %s: summary %s, want all 10 entries", m, r.stdout)
		}
		if recs := readTopic(t, topic); len(recs) != 10 {
			t.Fatalf("mirror %s: %d records in Kafka, want 10", m, len(recs))
		}
	}
	for _, name := range names {
		if group := hget(t, rc, checkpoint.R2KKey(name), "group"); group != "xmirror:"+name {
			t.Fatalf("mirror %s: checkpoint records group %q, want xmirror:%s", name, group, name)
		}
	}
}

func TestAGroupSharedWithAnotherMirrorIsRefused(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	group := testenv.Name(t, "g")
	first, second := testenv.Name(t, "first"), testenv.Name(t, "second")
	t.Cleanup(func() {
		rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(first), checkpoint.R2KKey(second)).Build())
	})
	mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--group", group, "--name", first)
	addEntries(t, rc, stream, 10, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--group", group, "--name", second)
	if r.code != 1 || !strings.Contains(r.stderr, "is also read by") || !strings.Contains(r.stderr, first) {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming the mirror %s that reads the group", r.code, r.stderr, first)
	}
	if recs := readTopic(t, topic); len(recs) != 10 {
		t.Fatalf("%d records, want the first mirror's 10 only", len(recs))
	}
	// The refused run recorded nothing, so the advice it gives works: a
	// group of its own, from where it should begin.
	if g := hget(t, rc, checkpoint.R2KKey(second), "group"); g != "" {
		t.Fatalf("the refused run recorded group %q in its checkpoint, want none", g)
	}
	own := testenv.Topic(t, kc, 1)
	r = mustMirror(t, "r2k", "--stream", stream, "--topic", own, "--group", group+"-own", "--start", "0", "--name", second, "--output", "json")
	if !strings.Contains(r.stdout, `"entries":15`) {
		t.Fatalf("summary %s, want the 15 entries through a group of its own", r.stdout)
	}
}

func TestCheckpointFromBeforeGroupsWereRecordedResumesThroughTheOldGroup(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	key := checkpoint.R2KKey(name)
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(key).Build()) })
	old := addEntries(t, rc, stream, 0, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })

	// What a run of an earlier xmirror left: the 5 entries read and
	// acknowledged in the shared group, a checkpoint without a group.
	must(t, rc.Do(ctx, rc.B().XgroupCreate().Key(stream).Group("xmirror").Id("0").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xreadgroup().Group("xmirror", name).Count(10).Streams().Key(stream).Id(">").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Xack().Key(stream).Group("xmirror").Id(old...).Build()).Error())
	must(t, rc.Do(ctx, rc.B().Hset().Key(key).FieldValue().FieldValue("version", "1").FieldValue("kind", "redis-to-kafka").
		FieldValue("stream:"+stream, old[4]).FieldValue("partition:"+topic+":0", "0").Build()).Error())
	more := addEntries(t, rc, stream, 5, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })

	r := mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json")
	if !strings.Contains(r.stdout, `"entries":3`) {
		t.Fatalf("summary %s: want the 3 entries added since, not the stream again", r.stdout)
	}
	recs := readTopic(t, topic)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	if id, _ := header(recs[0], "xmirror.id"); id != more[0] {
		t.Fatalf("first record %s, want %s", id, more[0])
	}
	if g := hget(t, rc, key, "group"); g != "xmirror" {
		t.Fatalf("checkpoint records group %q, want the old one, xmirror", g)
	}
}

// hget reads one field of a hash ("" when missing).
func hget(t *testing.T, rc rueidis.Client, key, field string) string {
	t.Helper()
	v, err := rc.Do(context.Background(), rc.B().Hget().Key(key).Field(field).Build()).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		t.Fatal(err)
	}
	return v
}

func TestStartAboveTheLastEntryIsRefusedWhereTheGroupIsNew(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	ids := addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	name := testenv.Name(t, "m")
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--output", "json"}

	for _, start := range []string{"9999999999999-0", "9999999999999"} {
		r := xmirror(t, append(args, "--start", start)...)
		if r.code != 1 || !strings.Contains(r.stderr, "is above the last entry ID of stream") || !strings.Contains(r.stderr, ids[2]) {
			t.Fatalf("--start %s: exit %d, stderr %q; want exit 1 naming the stream's last ID %s", start, r.code, r.stderr, ids[2])
		}
	}
	// At the last entry: nothing old, everything new.
	r := mustMirror(t, append(args, "--start", ids[2])...)
	if !strings.Contains(r.stdout, `"entries":0`) {
		t.Fatalf("summary %s: want nothing mirrored from the last entry on", r.stdout)
	}
	more := addEntries(t, rc, stream, 3, 2, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	// The group exists now: --start no longer applies, above the top or not.
	r = mustMirror(t, append(args, "--start", "9999999999999-0")...)
	if !strings.Contains(r.stdout, `"entries":2`) {
		t.Fatalf("summary %s: want the 2 new entries, --start ignored by the existing group", r.stdout)
	}
	recs := readTopic(t, topic)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	if id, _ := header(recs[1], "xmirror.id"); id != more[1] {
		t.Fatalf("last record %s, want %s", id, more[1])
	}
}
