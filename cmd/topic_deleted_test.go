package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

func TestTopicDeletedDuringAFollowRunWithCreateTopicSaysSo(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Name(t, "t")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		adm.DeleteTopics(ctx, topic)
	})
	addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	name := testenv.Name(t, "m")
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--create-topic", "--follow", "--name", name)
	testenv.Wait(t, 30*time.Second, "3 records", func() bool { return endOffset(t, adm, topic) >= 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		t.Fatal(err)
	}
	addEntries(t, rc, stream, 3, 1, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	select {
	case <-m.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("still running 90s after the topic was deleted; stderr:\n%s", m.stderr.String())
	}
	stderr := m.stderr.String()
	if code := m.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr, "deleted during the run") || strings.Contains(stderr, "(--create-topic creates it)") {
		t.Fatalf("exit %d, stderr %q; want exit 1 saying the topic was deleted during the run", code, stderr)
	}
}
