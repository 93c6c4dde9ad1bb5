package cmd_test

import (
	"context"
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/xmirror/xmirror/internal/testenv"
)

// growTopic raises a topic's partition count and waits until the broker
// reports it.
func growTopic(t *testing.T, adm *kadm.Client, topic string, partitions int) {
	t.Helper()
	resp, err := adm.UpdatePartitions(context.Background(), partitions, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("grow topic %s to %d partitions: %v", topic, partitions, err)
	}
	waitPartitions(t, adm, topic, partitions)
}

// waitPartitions waits until the broker lists the topic with that many
// partitions.
func waitPartitions(t *testing.T, adm *kadm.Client, topic string, partitions int) {
	t.Helper()
	ctx := context.Background()
	testenv.Wait(t, 30*time.Second, "topic "+topic+" to have "+strconv.Itoa(partitions)+" partitions", func() bool {
		d, err := adm.ListTopics(ctx, topic)
		return err == nil && len(d[topic].Partitions) == partitions
	})
}

// partitionsOf maps each value of a record attribute (its key, or its
// stream header) to the partitions holding records with it, read with a
// plain consumer.
func partitionsOf(t *testing.T, topic string, of func(key, stream string) string) map[string]map[int32]bool {
	t.Helper()
	got := map[string]map[int32]bool{}
	for _, r := range readTopic(t, topic) {
		s, _ := header(r, "xmirror.stream")
		k := of(string(r.Key), s)
		if got[k] == nil {
			got[k] = map[int32]bool{}
		}
		got[k][r.Partition] = true
	}
	return got
}

func TestPartitionsAddedDuringAKeyedFollowRunKeepEveryKeyInOnePartition(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 2)
	waitPartitions(t, adm, topic, 2)
	fields := func(i int) []string { return []string{"k", "key" + strconv.Itoa(i%20), "n", strconv.Itoa(i)} }

	p := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--key-field", "k", "--follow", "--name", testenv.Name(t, "m"))
	addEntries(t, rc, stream, 0, 100, fields)
	testenv.Wait(t, 30*time.Second, "100 records in Kafka", func() bool { return endOffset(t, adm, topic) == 100 })

	growTopic(t, adm, topic, 4)
	// The producer refreshes its metadata every 10 s: it knows of the new
	// partitions once it warns about them, at the next record it places.
	n := 100
	var added time.Time
	testenv.Wait(t, 40*time.Second, "the warning that the new partitions stay unused", func() bool {
		if time.Since(added) > 500*time.Millisecond {
			addEntries(t, rc, stream, n, 20, fields)
			n += 20
			added = time.Now()
		}
		return strings.Contains(p.stderr.String(), "more partitions than when this mirror first wrote")
	})
	addEntries(t, rc, stream, n, 100, fields)
	n += 100
	testenv.Wait(t, 30*time.Second, strconv.Itoa(n)+" records in Kafka", func() bool { return endOffset(t, adm, topic) == int64(n) })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr %s", code, p.stderr.String())
	}

	keys := partitionsOf(t, topic, func(key, _ string) string { return key })
	if len(keys) != 20 {
		t.Fatalf("%d keys in the topic, want 20", len(keys))
	}
	for k, parts := range keys {
		if len(parts) != 1 {
			t.Errorf("key %s is in partitions %v, want one", k, parts)
		}
	}
}

func TestPartitionsAddedBeforeAnUnkeyedOneShotKeepEachStreamInOnePartition(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	topic := testenv.Topic(t, kc, 1)
	waitPartitions(t, adm, topic, 1)
	// Streams whose names hash away from partition 0 of 7, so a mirror
	// hashing over the new count would move them.
	var streams []string
	for len(streams) < 3 {
		s := testenv.Stream(t, rc)
		h := fnv.New32a()
		h.Write([]byte(s))
		if h.Sum32()%7 != 0 {
			streams = append(streams, s)
		}
	}
	name := testenv.Name(t, "m")
	args := []string{"r2k", "--topic", topic, "--name", name}
	for _, s := range streams {
		args = append(args, "--stream", s)
	}
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	for _, s := range streams {
		addEntries(t, rc, s, 0, 10, value)
	}
	mustMirror(t, args...)

	growTopic(t, adm, topic, 7)
	for _, s := range streams {
		addEntries(t, rc, s, 10, 10, value)
	}
	r := mustMirror(t, args...)
	if !strings.Contains(r.stderr, "more partitions than when this mirror first wrote") {
		t.Errorf("stderr %q: want the warning that the new partitions stay unused", r.stderr)
	}
	got := partitionsOf(t, topic, func(_, stream string) string { return stream })
	for _, s := range streams {
		if len(got[s]) != 1 || !got[s][0] {
			t.Errorf("stream %s is in partitions %v, want partition 0 only", s, got[s])
		}
	}
	if n := int64(len(readTopic(t, topic))); n != 60 {
		t.Fatalf("%d records, want 60", n)
	}
}

func TestTopicRecreatedWithFewerPartitionsIsRefused(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 3)
	name := testenv.Name(t, "m")
	addEntries(t, rc, stream, 0, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	waitPartitions(t, adm, topic, 3)
	mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name)

	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		t.Fatal(err)
	}
	testenv.Wait(t, 30*time.Second, "topic "+topic+" created again with 1 partition", func() bool {
		resp, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return false
		}
		d, err := adm.ListTopics(ctx, topic)
		if err != nil || d[topic].Err != nil || len(d[topic].Partitions) != 1 {
			return false
		}
		return d[topic].Partitions[0].Leader >= 0
	})
	addEntries(t, rc, stream, 5, 1, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name)
	if r.code != 1 || !strings.Contains(r.stderr, "has 1 partitions, fewer than the 3") || !strings.Contains(r.stderr, "--name") {
		t.Fatalf("exit %d, stderr %q; want exit 1 saying the topic has fewer partitions than the mirror hashes over", r.code, r.stderr)
	}
}
