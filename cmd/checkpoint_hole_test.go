package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// A partition's position deleted from a kafka-to-redis checkpoint is
// damage: the next run exits 1 naming the key and the partition and writes
// nothing, instead of mirroring that partition again from offset 0.
func TestK2RCheckpointWithAPartitionDeletedIsRefusedNotRestarted(t *testing.T) {
	rc := testenv.Redis(t)
	ctx := context.Background()
	topic := testenv.Topic(t, testenv.Kafka(t), 3)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	produce(t, topic, numbered(0, 150, 3))
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name}
	mustMirror(t, args...)

	must(t, rc.Do(ctx, rc.B().Hdel().Key(key).Field(topic+":1").Build()).Error())
	produce(t, topic, numbered(150, 30, 3))
	for _, extra := range [][]string{nil, {"--follow"}} {
		r := xmirror(t, append(args, extra...)...)
		if r.code != 1 || !strings.Contains(r.stderr, key) || !strings.Contains(r.stderr, `partition 1`) || !strings.Contains(r.stderr, topic+":1") {
			t.Fatalf("rerun %v after HDEL of %s: exit %d, stderr %q; want exit 1 naming the key and partition", extra, topic+":1", r.code, r.stderr)
		}
	}
	if n, _ := rc.Do(ctx, rc.B().Xlen().Key(stream).Build()).AsInt64(); n != 150 {
		t.Fatalf("stream holds %d entries after the refused runs, want the 150 of the first", n)
	}
}

// A version 1 checkpoint (before the partitions field) still resumes where
// it stood, and the first run upgrades it: from then on a hole is caught.
func TestK2RVersionOneCheckpointResumesAndIsUpgraded(t *testing.T) {
	rc := testenv.Redis(t)
	ctx := context.Background()
	topic := testenv.Topic(t, testenv.Kafka(t), 3)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	produce(t, topic, numbered(0, 150, 3))
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name}
	mustMirror(t, args...)
	// What a version 1 run left: the same fields, without the list.
	must(t, rc.Do(ctx, rc.B().Hdel().Key(key).Field("partitions").Build()).Error())
	must(t, rc.Do(ctx, rc.B().Hset().Key(key).FieldValue().FieldValue("version", "1").Build()).Error())

	produce(t, topic, numbered(150, 30, 3))
	mustMirror(t, args...)
	checkOnceInOrder(t, readStream(t, rc, stream), 180)
	ck, err := rc.Do(ctx, rc.B().Hgetall().Key(key).Build()).AsStrMap()
	want := topic + ":0," + topic + ":1," + topic + ":2"
	if err != nil || ck["version"] != "2" || ck["partitions"] != want {
		t.Fatalf("checkpoint after the first run on version 1: %v %v; want version 2 listing %s", ck, err, want)
	}
	must(t, rc.Do(ctx, rc.B().Hdel().Key(key).Field(topic+":2").Build()).Error())
	if r := xmirror(t, args...); r.code != 1 || !strings.Contains(r.stderr, "partition 2") {
		t.Fatalf("hole in the upgraded checkpoint: exit %d, stderr %q", r.code, r.stderr)
	}
}

// The same for redis-to-kafka: a partition's position bounds the read-back
// after a crash; deleted, it would be set to the partition's current end,
// above records an interrupted run may have written there, so the next run
// exits 1 naming it and produces nothing. A checkpoint written before the
// covered counts still resumes, and gets them.
func TestR2KCheckpointWithAPartitionDeletedIsRefused(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 2)
	name := testenv.Name(t, "m")
	key := checkpoint.R2KKey(name)
	delKeys(t, rc, key)
	entry := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	ids := addEntries(t, rc, stream, 0, 20, entry)
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name}
	mustMirror(t, args...)
	ck, err := rc.Do(ctx, rc.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil || ck["covered:"+topic] != "2" {
		t.Fatalf("checkpoint %v %v: want covered:%s = 2", ck, err, topic)
	}

	// Written before the covered counts: resumes, and gets them.
	must(t, rc.Do(ctx, rc.B().Hdel().Key(key).Field("covered:"+topic).Build()).Error())
	ids = append(ids, addEntries(t, rc, stream, 20, 10, entry)...)
	mustMirror(t, args...)
	if v, _ := rc.Do(ctx, rc.B().Hget().Key(key).Field("covered:"+topic).Build()).ToString(); v != "2" {
		t.Fatalf("covered:%s = %q after a run on the old format, want 2", topic, v)
	}
	exactlyOnce(t, topic, ids)

	for _, p := range []string{"0", "1"} {
		field := "partition:" + topic + ":" + p
		pos, err := rc.Do(ctx, rc.B().Hget().Key(key).Field(field).Build()).ToString()
		must(t, err)
		must(t, rc.Do(ctx, rc.B().Hdel().Key(key).Field(field).Build()).Error())
		addEntries(t, rc, stream, 30, 5, entry)
		before := len(readTopic(t, topic))
		r := xmirror(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, key) || !strings.Contains(r.stderr, "partition "+p) || !strings.Contains(r.stderr, field) {
			t.Fatalf("run after HDEL of %s: exit %d, stderr %q; want exit 1 naming the key and partition", field, r.code, r.stderr)
		}
		if after := len(readTopic(t, topic)); after != before {
			t.Fatalf("the refused run wrote %d records", after-before)
		}
		must(t, rc.Do(ctx, rc.B().Hset().Key(key).FieldValue().FieldValue(field, pos).Build()).Error())
	}
}
