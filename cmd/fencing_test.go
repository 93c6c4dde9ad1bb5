package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// frozenRun sets up the split brain of a paused process: a follow run
// (through a proxy) frozen with SIGSTOP while a produce of 10 entries is on
// its way to Kafka, until its lease expired. It returns the run, the proxy
// (frozen) and the IDs of the 11 entries added.
func frozenRun(t *testing.T, rc rueidis.Client, adm *kadm.Client, stream, topic string, args []string) (*started, *kafkaProxy, []string) {
	t.Helper()
	proxy := startKafkaProxy(t)
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
	t.Cleanup(func() { syscall.Kill(first.cmd.Process.Pid, syscall.SIGCONT) })
	waitLeaseExpired(t, rc, "redis-to-kafka", mirrorNameArg(args))
	return first, proxy, ids
}

// mirrorNameArg is the value of --name in args.
func mirrorNameArg(args []string) string {
	for i, a := range args {
		if a == "--name" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// TestFrozenRunIsFencedAndSetsUpAgainAfterASecondRunMirroredItsEntries is
// the split brain of a paused process: a follow run frozen (SIGSTOP) with a
// produce of 10 entries on its way to Kafka, past its lease; a second run
// reads the 10 back as pending, finds none in Kafka, mirrors them and
// exits, deleting the lease. Resumed, the first run must not get its
// records in (Kafka fenced its producer) nor renew the lease: it sets
// itself up again under a new lease and a new producer, reads back, and
// goes on mirroring. Each entry is in the topic once, read_committed by a
// plain consumer.
func TestFrozenRunIsFencedAndSetsUpAgainAfterASecondRunMirroredItsEntries(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "2s"}
	first, proxy, ids := frozenRun(t, rc, adm, stream, topic, args)

	second := mustMirror(t, args...)
	t.Logf("second run: %s", strings.TrimSpace(second.stderr))

	proxy.thaw()
	must(t, syscall.Kill(first.cmd.Process.Pid, syscall.SIGCONT))
	testenv.Wait(t, 20*time.Second, "the resumed first run to say it lost its lease and sets up again", func() bool {
		select {
		case <-first.done:
			exactlyOnce(t, topic, ids)
			t.Fatalf("the resumed first run exited %d; want it to set up again and go on; stderr:\n%s", first.cmd.ProcessState.ExitCode(), first.stderr)
		default:
		}
		return strings.Contains(first.stderr.String(), "sets itself up again")
	})
	// It goes on mirroring, exactly once.
	ids = append(ids, addEntries(t, rc, stream, 11, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })...)
	testenv.Wait(t, 30*time.Second, "the first run, set up again, to mirror 5 more entries", func() bool { return endOffset(t, adm, topic) >= int64(len(ids)) })
	if code, _ := first.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; stderr:\n%s", code, first.stderr)
	}
	exactlyOnce(t, topic, ids)
	if n := strings.Count(first.stderr.String(), "sets itself up again"); n != 1 {
		t.Errorf("the first run set up again %d times; want once; stderr:\n%s", n, first.stderr)
	}
}

// TestFrozenRunStopsWhenASecondRunFollows: the same split brain, with the
// second run still following when the first resumes. Kafka fenced the
// first run's producer and its lease is another's: it stops, as a second
// run of a mirror that is running does, and none of its records land.
func TestFrozenRunStopsWhenASecondRunFollows(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "2s"}
	first, proxy, ids := frozenRun(t, rc, adm, stream, topic, args)

	second := startXmirror(t, append(args, "--follow")...)
	testenv.Wait(t, 30*time.Second, "the second run to mirror the 10 entries", func() bool { return endOffset(t, adm, topic) >= int64(len(ids)) })

	proxy.thaw()
	must(t, syscall.Kill(first.cmd.Process.Pid, syscall.SIGCONT))
	select {
	case <-first.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the first run went on for 20s after it resumed while the second runs; stderr:\n%s", first.stderr)
	}
	if code, stderr := first.cmd.ProcessState.ExitCode(), first.stderr.String(); code != 1 || !strings.Contains(stderr, "already running") {
		t.Fatalf("the resumed first run: exit %d; want 1, the mirror already running; stderr:\n%s", code, stderr)
	}
	ids = append(ids, addEntries(t, rc, stream, 11, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })...)
	testenv.Wait(t, 30*time.Second, "the second run to mirror 5 more entries", func() bool { return endOffset(t, adm, topic) >= int64(len(ids)) })
	if code, _ := second.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("second run, SIGTERM: exit %d; stderr:\n%s", code, second.stderr)
	}
	exactlyOnce(t, topic, ids)
	t.Logf("resumed first run stopped: %s", lastLine(first.stderr.String()))
}

// TestDeletedLeaseMakesAFollowRunTakeANewLease: a lease key gone while a
// follow run holds it (deleted, or expired while Redis or the process was
// paused) means another run may have started: the run stops writing, never
// takes that lease again, and sets itself up again as a new start would —
// a new lease (SET NX), a new transactional producer fencing the old one,
// the read-back — and goes on. Nothing is lost or doubled.
func TestDeletedLeaseMakesAFollowRunTakeANewLease(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "3s", "--follow")
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	ids := addEntries(t, rc, stream, 0, 1, value)
	testenv.Wait(t, 30*time.Second, "the run to mirror an entry", func() bool { return endOffset(t, adm, topic) == 1 })

	key := "xmirror:lease:redis-to-kafka:" + name
	old, err := rc.Do(ctx, rc.B().Get().Key(key).Build()).ToString()
	must(t, err)
	must(t, rc.Do(ctx, rc.B().Del().Key(key).Build()).Error())
	ids = append(ids, addEntries(t, rc, stream, 1, 10, value)...)
	testenv.Wait(t, 20*time.Second, "the run to take a new lease", func() bool {
		select {
		case <-m.done:
			t.Fatalf("the run exited %d after its lease was deleted; want it to set up again; stderr:\n%s", m.cmd.ProcessState.ExitCode(), m.stderr)
		default:
		}
		v, err := rc.Do(ctx, rc.B().Get().Key(key).Build()).ToString()
		if err == nil && v == old {
			t.Fatalf("lease %s was taken again with the old value %q: it was renewed, not taken anew", key, old)
		}
		return err == nil && strings.Contains(m.stderr.String(), "sets itself up again")
	})
	ids = append(ids, addEntries(t, rc, stream, 11, 10, value)...)
	testenv.Wait(t, 30*time.Second, "the run, set up again, to mirror every entry", func() bool { return endOffset(t, adm, topic) >= int64(len(ids)) })
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; stderr:\n%s", code, m.stderr)
	}
	exactlyOnce(t, topic, ids)
	if stderr := m.stderr.String(); strings.Count(stderr, "sets itself up again") != 1 || !strings.Contains(stderr, "gone") {
		t.Errorf("want one warning that the lease is gone and the run sets itself up again; stderr:\n%s", stderr)
	}
}

// TestSigtermWhileSettingUpAgainExitsPromptly: a follow run setting itself
// up again after its lease was lost, against a broker that does not answer,
// stops at SIGTERM within the 6 seconds a stop takes, exit 0.
func TestSigtermWhileSettingUpAgainExitsPromptly(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	proxy := startKafkaProxy(t)
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "3s", "--follow", "--brokers", proxy.addr())
	addEntries(t, rc, stream, 0, 1, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	testenv.Wait(t, 30*time.Second, "the run to mirror an entry", func() bool { return endOffset(t, adm, topic) == 1 })
	proxy.freeze()
	must(t, rc.Do(ctx, rc.B().Del().Key("xmirror:lease:redis-to-kafka:"+name).Build()).Error())
	testenv.Wait(t, 10*time.Second, "the run to set itself up again", func() bool {
		return strings.Contains(m.stderr.String(), "sets itself up again")
	})
	code, took := m.stop(t, syscall.SIGTERM, 10*time.Second)
	if code != 0 || took > 6*time.Second {
		t.Fatalf("SIGTERM while setting up again: exit %d after %s; want 0 within 6s; stderr:\n%s", code, took.Round(time.Millisecond), m.stderr)
	}
	t.Logf("stopped in %s", took.Round(time.Millisecond))
}

// TestDeletedLeaseStopsAOneShotRun: a one-shot run whose lease is lost
// stops (exit 1), saying so and how to go on; it does not take the lease
// again.
func TestDeletedLeaseStopsAOneShotRun(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	// A broker that does not answer keeps the run in its set-up.
	proxy := startKafkaProxy(t)
	proxy.freeze()
	m := startXmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "3s", "--brokers", proxy.addr())
	key := "xmirror:lease:redis-to-kafka:" + name
	testenv.Wait(t, 10*time.Second, "the run to take its lease", func() bool {
		n, err := rc.Do(ctx, rc.B().Exists().Key(key).Build()).AsInt64()
		return err == nil && n == 1
	})
	must(t, rc.Do(ctx, rc.B().Del().Key(key).Build()).Error())
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the one-shot run went on for 10s after its lease was deleted; stderr:\n%s", m.stderr)
	}
	if code, stderr := m.cmd.ProcessState.ExitCode(), m.stderr.String(); code != 1 || !strings.Contains(stderr, "lease lost") || !strings.Contains(stderr, "run it again") {
		t.Fatalf("exit %d; want 1, the lease lost and what to do; stderr:\n%s", code, stderr)
	}
	if n, _ := rc.Do(ctx, rc.B().Exists().Key(key).Build()).AsInt64(); n != 0 {
		t.Fatalf("lease %s exists after the one-shot run stopped: it was taken again", key)
	}
}

// TestGracefulExitWithAProduceInFlightLeavesNoDuplicate is a graceful exit
// with records in flight: a follow run stopped by SIGTERM while its produce
// of 10 entries is held on the way to Kafka (a slow broker) abandons them
// after the drain and deletes its lease. A second run starts at once,
// reads back (nothing of the 10 is in Kafka), mirrors them; then the held
// produce reaches the broker. The second run's InitProducerID fenced it
// and aborted its transaction: read_committed, each entry is there once.
func TestGracefulExitWithAProduceInFlightLeavesNoDuplicate(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name}
	proxy := startKafkaProxy(t)
	first := startXmirror(t, append(args, "--follow", "--brokers", proxy.addr())...)
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	ids := addEntries(t, rc, stream, 0, 1, value)
	testenv.Wait(t, 30*time.Second, "the first run to mirror an entry", func() bool { return endOffset(t, adm, topic) == 1 })
	proxy.freeze()
	ids = append(ids, addEntries(t, rc, stream, 1, 10, value)...)
	produce := (&kmsg.ProduceRequest{}).Key()
	testenv.Wait(t, 10*time.Second, "the first run's produce to reach the stalled broker", func() bool {
		return proxy.heldRequests(produce)+proxy.heldRequests((&kmsg.AddPartitionsToTxnRequest{}).Key()) > 0
	})
	if code, _ := first.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("first run, SIGTERM: exit %d; stderr:\n%s", code, first.stderr)
	}
	second := mustMirror(t, args...)
	t.Logf("second run: %s", strings.TrimSpace(second.stderr))
	// The held requests reach the broker now, after the second run.
	proxy.thaw()
	testenv.Wait(t, 10*time.Second, "the held requests to be forwarded", func() bool {
		return proxy.heldRequests(produce)+proxy.heldRequests((&kmsg.AddPartitionsToTxnRequest{}).Key()) == 0
	})
	third := mustMirror(t, args...) // its read-back waits for anything still open
	t.Logf("third run: %s", strings.TrimSpace(third.stderr))
	exactlyOnce(t, topic, ids)
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestOneShotExitsOnceItsRecordsAreVisibleReadCommitted: a commit returns
// before its transaction's markers are written; a one-shot run exits only
// once they are, so that a read_committed reader started right after it
// (kafka-to-redis's snapshot of the topic, which stops at the last stable
// offset) sees every record it wrote.
func TestOneShotExitsOnceItsRecordsAreVisibleReadCommitted(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	for round := 0; round < 10; round++ {
		addEntries(t, rc, stream, round*5, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
		mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name)
		stable, err := adm.ListCommittedOffsets(ctx, topic)
		must(t, err)
		ends, err := adm.ListEndOffsets(ctx, topic)
		must(t, err)
		s, _ := stable.Lookup(topic, 0)
		e, _ := ends.Lookup(topic, 0)
		if s.Offset != e.Offset {
			t.Fatalf("round %d: right after the one-shot run exited, the last stable offset is %d and the end offset %d: a read_committed reader stops before its last transaction", round, s.Offset, e.Offset)
		}
	}
}

// Two follow runs of one mirror name whose checkpoints and leases are in
// different Redis databases (or servers), producing to one Kafka cluster,
// share its transactional ID: each set-up fences the other. Neither lease
// is lost, so setting up again would go on for ever (it did, dozens of
// times a second); the second time a run that still holds its lease is
// fenced, it stops, exit 1, saying that the mirrors need names of their
// own, and the other goes on.
func TestMirrorsOfOneNameInTwoRedisDatabasesDoNotFenceEachOtherForEver(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	url1 := strings.TrimSuffix(testenv.RedisURL(), "/0") + "/1"
	opt, err := rueidis.ParseURL(url1)
	must(t, err)
	opt.DisableCache = true
	rc1, err := rueidis.NewClient(opt)
	must(t, err)
	defer rc1.Close()
	stream0, stream1 := testenv.Stream(t, rc), testenv.Name(t, "s")
	t.Cleanup(func() {
		rc1.Do(context.Background(), rc1.B().Del().Key(stream1, checkpoint.R2KKey(name), checkpoint.LeaseKey("r2k", name)).Build())
	})
	value := func(i int) []string { return []string{"value", strconv.Itoa(i)} }
	addEntries(t, rc, stream0, 0, 5, value)
	addEntries(t, rc1, stream1, 0, 5, value)

	a := startXmirror(t, "r2k", "--stream", stream0, "--topic", topic, "--name", name, "--follow")
	b := startXmirror(t, "r2k", "--redis", url1, "--stream", stream1, "--topic", topic, "--name", name, "--follow")
	// Both keep producing: each produce of the fenced one meets the fence.
	feed := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := 5; ; i++ {
			select {
			case <-feed:
				return
			case <-time.After(50 * time.Millisecond):
			}
			rc.Do(context.Background(), rc.B().Xadd().Key(stream0).Id("*").FieldValue().FieldValue("value", strconv.Itoa(i)).Build())
			rc1.Do(context.Background(), rc1.B().Xadd().Key(stream1).Id("*").FieldValue().FieldValue("value", strconv.Itoa(i)).Build())
		}
	}()
	defer func() { close(feed); <-fed }()
	var stopped, going *started
	select {
	case <-a.done:
		stopped, going = a, b
	case <-b.done:
		stopped, going = b, a
	case <-time.After(60 * time.Second):
		t.Fatalf("both runs still going after 60s, fencing each other; stderr:\n%s\n---\n%s", a.stderr, b.stderr)
	}
	// It says why: the second fence while it holds its lease, or a
	// commit the broker refused as the other producer took the ID over
	// (INVALID_TXN_STATE) before a second fence came.
	code, stderr := stopped.cmd.ProcessState.ExitCode(), stopped.stderr.String()
	if code != 1 || !strings.Contains(stderr, "need names of their own (--name)") && !strings.Contains(stderr, "INVALID_TXN_STATE") {
		t.Fatalf("the run that stopped: exit %d; want 1, saying the mirrors need names of their own; stderr:\n%s", code, stderr)
	}
	if code, _ := going.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("the other run, SIGTERM: exit %d; stderr:\n%s", code, going.stderr)
	}
	// Neither set itself up again more than twice (it did dozens of
	// times, each a fence of the other and a read-back).
	for _, r := range []*started{stopped, going} {
		if n := strings.Count(r.stderr.String(), "sets itself up again"); n > 2 {
			t.Errorf("a run set itself up again %d times; stderr:\n%s", n, r.stderr)
		}
	}
}
