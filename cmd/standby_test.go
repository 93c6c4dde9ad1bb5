package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// TestStandbyTakesOverAfterAKill: a second follow run of a mirror started
// with --standby waits while the first holds the lease, says so, and
// takes the mirror over within the lease's TTL and a second of a kill -9
// of the first; every entry reaches the topic exactly once.
func TestStandbyTakesOverAfterAKill(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Name(t, "s")
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	t.Cleanup(func() {
		ctx := context.Background()
		rc.Do(ctx, rc.B().Del().Key(stream, checkpoint.R2KKey(name)).Build())
	})
	const ttl = 3 * time.Second
	args := []string{"r2k", "--follow", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", ttl.String()}
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	active := startXmirror(t, args...)
	addEntries(t, rc, stream, 0, 50, fields)
	testenv.Wait(t, 30*time.Second, "the active run mirroring", func() bool { return len(readTopic(t, topic)) == 50 })

	standby := startXmirror(t, append(args, "--standby")...)
	testenv.Wait(t, 10*time.Second, "the standby saying it waits", func() bool {
		return strings.Contains(standby.stderr.String(), "standing by: the mirror runs elsewhere")
	})
	addEntries(t, rc, stream, 50, 50, fields)
	testenv.Wait(t, 30*time.Second, "the active run mirroring more", func() bool { return len(readTopic(t, topic)) == 100 })
	// A standby that waits stops on SIGTERM as a follow run does.
	other := startXmirror(t, append(args, "--standby")...)
	testenv.Wait(t, 10*time.Second, "the second standby waiting", func() bool {
		return strings.Contains(other.stderr.String(), "standing by")
	})
	if code, _ := other.stop(t, syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("a waiting standby: exit %d after SIGTERM, want 0\nstderr: %s", code, other.stderr.String())
	}

	active.cmd.Process.Signal(syscall.SIGKILL)
	<-active.done
	killed := time.Now()
	addEntries(t, rc, stream, 100, 50, fields)
	testenv.Wait(t, ttl+10*time.Second, "the standby mirroring", func() bool { return len(readTopic(t, topic)) >= 150 })
	// The takeover itself: the lease's TTL and a second at most, plus the
	// time to set up and mirror 50 entries.
	if took := time.Since(killed); took > ttl+5*time.Second {
		t.Errorf("the standby took %s to mirror after the kill, want within the lease TTL %s and a second (and its set-up)", took, ttl)
	}
	if code, _ := standby.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("standby: exit %d after SIGTERM\nstderr: %s", code, standby.stderr.String())
	}
	eachEntryOnce(t, topic, 150)
}

// eachEntryOnce fails the test unless topic holds n records, no entry
// twice.
func eachEntryOnce(t *testing.T, topic string, n int) {
	t.Helper()
	recs := readTopic(t, topic)
	seen := map[string]bool{}
	for _, r := range recs {
		id, _ := header(r, "xmirror.id")
		if seen[id] {
			t.Fatalf("entry %s mirrored twice", id)
		}
		seen[id] = true
	}
	if len(recs) != n {
		t.Fatalf("topic holds %d records, want %d", len(recs), n)
	}
}

// TestStandbyPairSurvivesAFailover: the active run of a --standby pair,
// frozen past its lease while the other took over, stands by in turn when
// it wakes, instead of exiting; what the new active run mirrors reaches
// the topic exactly once.
func TestStandbyPairSurvivesAFailover(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Name(t, "s")
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	t.Cleanup(func() {
		ctx := context.Background()
		rc.Do(ctx, rc.B().Del().Key(stream, checkpoint.R2KKey(name)).Build())
	})
	const ttl = 2 * time.Second
	args := []string{"r2k", "--follow", "--standby", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", ttl.String()}
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	a := startXmirror(t, args...)
	addEntries(t, rc, stream, 0, 20, fields)
	testenv.Wait(t, 30*time.Second, "the first run mirroring", func() bool { return len(readTopic(t, topic)) == 20 })
	b := startXmirror(t, args...)
	testenv.Wait(t, 10*time.Second, "the second run standing by", func() bool {
		return strings.Contains(b.stderr.String(), "standing by")
	})
	// Frozen past its lease: the standby takes over once it expires.
	a.cmd.Process.Signal(syscall.SIGSTOP)
	addEntries(t, rc, stream, 20, 20, fields)
	testenv.Wait(t, ttl+15*time.Second, "the standby mirroring", func() bool { return len(readTopic(t, topic)) == 40 })
	a.cmd.Process.Signal(syscall.SIGCONT)
	testenv.Wait(t, 15*time.Second, "the first run standing by in turn", func() bool {
		return strings.Contains(a.stderr.String(), "standing by")
	})
	addEntries(t, rc, stream, 40, 20, fields)
	testenv.Wait(t, 30*time.Second, "the new active run mirroring", func() bool { return len(readTopic(t, topic)) >= 60 })
	for _, p := range []*started{a, b} {
		if code, _ := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM, want 0\nstderr: %s", code, p.stderr.String())
		}
	}
	eachEntryOnce(t, topic, 60)
}
