package cmd_test

import (
	"context"
	"encoding/base64"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// topicID is the topic's ID as Kafka's tools print it, asked of the broker
// with a plain admin client.
func topicID(t *testing.T, adm *kadm.Client, topic string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	details, err := adm.ListTopics(ctx, topic)
	if err != nil || details[topic].Err != nil {
		t.Fatalf("topic %s: %v %v", topic, err, details[topic].Err)
	}
	id := details[topic].ID
	return base64.RawURLEncoding.EncodeToString(id[:])
}

// recreateTopic deletes topic and creates it again under its name with
// partitions partitions, and waits until the broker lists the new one.
func recreateTopic(t *testing.T, adm *kadm.Client, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := topicID(t, adm, topic)
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
	createAgain(t, adm, topic, partitions)
	testenv.Wait(t, 30*time.Second, "the new topic "+topic+" in the metadata", func() bool {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d, err := adm.ListTopics(c, topic)
		if err != nil || d[topic].Err != nil || len(d[topic].Partitions) != int(partitions) {
			return false
		}
		id := d[topic].ID
		return base64.RawURLEncoding.EncodeToString(id[:]) != old
	})
}

// createAgain creates a deleted topic under its name again, waiting out
// the deletion (a create meanwhile is refused).
func createAgain(t *testing.T, adm *kadm.Client, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testenv.Wait(t, time.Minute, "topic "+topic+" created again", func() bool {
		resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		return err == nil
	})
}

// A topic deleted and created again under its name starts its offsets
// over: a checkpoint of the old topic says nothing about the new one. 500
// records mirrored, the topic recreated and 800 produced: a rerun refuses
// by name and writes nothing (it used to mirror offsets 500-799 and lose
// 0-499, exit 0); with --on-topic-recreated restart all 800 arrive, once.
func TestK2RRecreatedTopicIsRefusedThenMirroredFromItsStartWithRestart(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	topic := testenv.Topic(t, kc, 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name}
	produce(t, topic, numbered(0, 500, 1))
	mustMirror(t, args...)
	oldID := topicID(t, adm, topic)

	recreateTopic(t, adm, topic, 1)
	newID := topicID(t, adm, topic)
	produce(t, topic, numbered(500, 800, 1))
	r := xmirror(t, args...)
	if r.code != 1 {
		t.Fatalf("rerun against the recreated topic: exit %d, want 1; stderr: %s", r.code, r.stderr)
	}
	for _, want := range []string{`topic "` + topic + `"`, oldID, newID, key, "--on-topic-recreated restart"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not name %q: %s", want, r.stderr)
		}
	}
	if n := len(readStream(t, rc, stream)); n != 500 {
		t.Fatalf("the refused run wrote: the stream holds %d entries, want 500", n)
	}
	if got, _ := rc.Do(context.Background(), rc.B().Hget().Key(key).Field(topic+":topic_id").Build()).ToString(); got != oldID {
		t.Fatalf("checkpoint records topic ID %q, want the old topic's %q", got, oldID)
	}

	r = mustMirror(t, append(args, "--on-topic-recreated", "restart")...)
	if !strings.Contains(r.stderr, "deleted and created again") || !strings.Contains(r.stderr, "mirrored 800 entries") {
		t.Errorf("restart run: stderr %s", r.stderr)
	}
	checkOnceInOrder(t, readStream(t, rc, stream), 1300)
	ck, _ := rc.Do(context.Background(), rc.B().Hgetall().Key(key).Build()).AsStrMap()
	if ck[topic+":0"] != "800" || ck[topic+":topic_id"] != newID {
		t.Fatalf("checkpoint after the restart: %v", ck)
	}
	// The new topic is the checkpoint's now: a plain rerun goes on.
	produce(t, topic, numbered(1300, 10, 1))
	mustMirror(t, args...)
	checkOnceInOrder(t, readStream(t, rc, stream), 1310)
}

// A follow run whose topic is deleted and created again stops naming the
// topic and both IDs; with --on-topic-recreated restart it mirrors the new
// topic from its start and keeps going.
func TestK2RFollowRunMeetsARecreatedTopic(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	topic := testenv.Topic(t, kc, 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	xlen := streamLen(rc, stream)
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow", "--partition-check", "1s"}
	produce(t, topic, numbered(0, 500, 1))

	oldID := topicID(t, adm, topic)
	p := startXmirror(t, args...)
	testenv.Wait(t, 30*time.Second, "500 entries", func() bool { return xlen() == 500 })
	recreateTopic(t, adm, topic, 1)
	newID := topicID(t, adm, topic)
	produce(t, topic, numbered(500, 5, 1))
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("follow run still going 90s after its topic was recreated: %s", p.stderr.String())
	}
	stderr := p.stderr.String()
	if code := p.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	for _, want := range []string{`topic "` + topic + `"`, oldID, newID, key, "--on-topic-recreated restart"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not name %q: %s", want, stderr)
		}
	}
	if n := xlen(); n != 500 {
		t.Fatalf("the stream holds %d entries, want 500", n)
	}

	// With restart, the run mirrors the new topic's 5 records, then what
	// follows.
	p = startXmirror(t, append(args, "--on-topic-recreated", "restart")...)
	testenv.Wait(t, 30*time.Second, "the new topic's 5 records", func() bool { return xlen() >= 505 })
	produce(t, topic, numbered(505, 295, 1))
	testenv.Wait(t, 30*time.Second, "800 entries", func() bool { return xlen() >= 800 })
	recreateTopic(t, adm, topic, 1)
	produce(t, topic, numbered(800, 300, 1))
	testenv.Wait(t, 90*time.Second, "the recreated topic's 300 records", func() bool { return xlen() >= 1100 })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("follow run with restart: exit %d: %s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "deleted and created again") {
		t.Errorf("no warning of the restart: %s", p.stderr.String())
	}
	checkOnceInOrder(t, readStream(t, rc, stream), 1100)
}

// A follow run with --on-topic-recreated restart whose topic is deleted
// and created again only later waits for it (it used to exit 1 at the
// first fetch after the deletion), then mirrors the new topic from its
// start; SIGTERM while it waits stops it at once.
func TestK2RFollowRunWithRestartWaitsForADeletedTopic(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	topic := testenv.Topic(t, kc, 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	xlen := streamLen(rc, stream)
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow", "--on-topic-recreated", "restart"}
	produce(t, topic, numbered(0, 50, 1))
	p := startXmirror(t, args...)
	testenv.Wait(t, 30*time.Second, "50 entries", func() bool { return xlen() == 50 })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
	testenv.Wait(t, 60*time.Second, "the run waiting for the topic", func() bool {
		return strings.Contains(p.stderr.String(), "waiting for it to be created again")
	})
	select {
	case <-p.done:
		t.Fatalf("the follow run exited while its topic was deleted: %s", p.stderr.String())
	case <-time.After(2 * time.Second):
	}
	createAgain(t, adm, topic, 1)
	produce(t, topic, numbered(50, 20, 1))
	testenv.Wait(t, 60*time.Second, "the new topic's 20 records", func() bool { return xlen() >= 70 })
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	checkOnceInOrder(t, readStream(t, rc, stream), 70)

	// SIGTERM while it waits: exit 0, promptly.
	p = startXmirror(t, args...)
	produce(t, topic, numbered(70, 1, 1))
	testenv.Wait(t, 30*time.Second, "the run following", func() bool { return xlen() == 71 })
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
	testenv.Wait(t, 60*time.Second, "the run waiting for the topic", func() bool {
		return strings.Contains(p.stderr.String(), "waiting for it to be created again")
	})
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM while waiting for the topic: exit %d: %s", code, p.stderr.String())
	}
}
