package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/internal/testenv"
)

// TestFrozenRunIsFencedAfterASecondRunMirroredItsEntries is the split
// brain of a paused process: a follow run frozen (SIGSTOP) with a produce
// of 10 entries on its way to Kafka, past its lease; a second run reads
// the 10 back as pending, finds none in Kafka, mirrors them and exits,
// deleting the lease. Resumed, the first run must not get its records in
// (Kafka fences its producer) nor take the lease again: each entry is in
// the topic once, read_committed by a plain consumer.
func TestFrozenRunIsFencedAfterASecondRunMirroredItsEntries(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	proxy := startKafkaProxy(t)
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "2s"}

	first := startXmirror(t, append(args, "--follow", "--brokers", proxy.addr())...)
	ids := addEntries(t, rc, stream, 0, 1, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	testenv.Wait(t, 30*time.Second, "the first run to mirror an entry", func() bool { return endOffset(t, adm, topic) == 1 })
	group := onlyGroup(t, rc, stream)

	// The first run reads 10 entries; its produce stalls on the way.
	proxy.freeze()
	ids = append(ids, addEntries(t, rc, stream, 1, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })...)
	testenv.Wait(t, 10*time.Second, "the first run to read the 10 entries", func() bool {
		summary, err := rc.Do(context.Background(), rc.B().Xpending().Key(stream).Group(group).Build()).ToArray()
		if err != nil || len(summary) == 0 {
			return false
		}
		n, _ := summary[0].AsInt64()
		return n == 10
	})
	testenv.Wait(t, 10*time.Second, "the first run's produce to reach the stalled broker", func() bool {
		return proxy.heldRequests((&kmsg.ProduceRequest{}).Key())+proxy.heldRequests((&kmsg.AddPartitionsToTxnRequest{}).Key()) > 0
	})
	must(t, syscall.Kill(first.cmd.Process.Pid, syscall.SIGSTOP))
	waitLeaseExpired(t, rc, "redis-to-kafka", name)

	second := mustMirror(t, args...)
	t.Logf("second run: %s", strings.TrimSpace(second.stderr))

	proxy.thaw()
	must(t, syscall.Kill(first.cmd.Process.Pid, syscall.SIGCONT))
	select {
	case <-first.done:
	case <-time.After(20 * time.Second):
		first.cmd.Process.Kill()
		<-first.done
		exactlyOnce(t, topic, ids)
		t.Fatalf("the first run went on after it resumed; stderr:\n%s", first.stderr)
	}
	code, stderr := first.cmd.ProcessState.ExitCode(), first.stderr.String()
	if code != 1 || !(strings.Contains(stderr, "another run of mirror") || strings.Contains(stderr, "lease lost")) {
		exactlyOnce(t, topic, ids)
		t.Fatalf("the resumed first run: exit %d; want 1, fenced or its lease lost; stderr:\n%s", code, stderr)
	}
	exactlyOnce(t, topic, ids)
	t.Logf("resumed first run stopped: %s", lastLine(stderr))
}

// TestDeletedLeaseStopsAFollowRun: a lease key gone while a follow run
// holds it (deleted, or expired while the process was paused) means
// another run may have started; the run stops instead of taking it again.
func TestDeletedLeaseStopsAFollowRun(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "3s", "--follow")
	addEntries(t, rc, stream, 0, 1, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	testenv.Wait(t, 30*time.Second, "the run to mirror an entry", func() bool { return endOffset(t, adm, topic) == 1 })

	key := "xmirror:lease:redis-to-kafka:" + name
	must(t, rc.Do(context.Background(), rc.B().Del().Key(key).Build()).Error())
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		n, _ := rc.Do(context.Background(), rc.B().Exists().Key(key).Build()).AsInt64()
		t.Fatalf("the run went on for 10s after its lease was deleted (lease key exists again: %v); stderr:\n%s", n == 1, m.stderr)
	}
	if code, stderr := m.cmd.ProcessState.ExitCode(), m.stderr.String(); code != 1 || !strings.Contains(stderr, "lease lost") || !strings.Contains(stderr, "gone") {
		t.Fatalf("exit %d; want 1 with the lease lost; stderr:\n%s", code, stderr)
	}
	if n, _ := rc.Do(context.Background(), rc.B().Exists().Key(key).Build()).AsInt64(); n != 0 {
		t.Fatalf("lease %s exists after the run stopped: it was taken again", key)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
