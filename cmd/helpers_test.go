package cmd_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
)

// result is what a finished xmirror process left behind.
type result struct {
	code   int
	stdout string
	stderr string
}

// xmirrorCmd prepares the real binary against the test servers.
func xmirrorCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Env = append(os.Environ(), "XMIRROR_REDIS="+testenv.RedisURL(), "XMIRROR_BROKERS="+testenv.Brokers())
	return cmd
}

// xmirror runs the binary to completion, bounded by a minute.
func xmirror(t *testing.T, args ...string) result {
	t.Helper()
	cmd := xmirrorCmd(t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("xmirror %s did not finish within 2 minutes; stderr:\n%s", strings.Join(args, " "), errb.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

// mustMirror runs xmirror and fails the test unless it exits 0.
func mustMirror(t *testing.T, args ...string) result {
	t.Helper()
	r := xmirror(t, args...)
	if r.code != 0 {
		t.Fatalf("xmirror %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// started is a running xmirror process.
type started struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

func startXmirror(t *testing.T, args ...string) *started {
	t.Helper()
	return startXmirrorCmd(t, xmirrorCmd(t, args...))
}

// startXmirrorCmd starts a prepared command of the binary.
func startXmirrorCmd(t *testing.T, cmd *exec.Cmd) *started {
	t.Helper()
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &started{cmd: cmd, stderr: errb, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// stop signals the process and waits up to limit for it to exit.
func (s *started) stop(t *testing.T, sig syscall.Signal, limit time.Duration) (int, time.Duration) {
	t.Helper()
	begin := time.Now()
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(limit):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("xmirror did not exit within %s of %v; stderr:\n%s", limit, sig, s.stderr.String())
	}
	return s.cmd.ProcessState.ExitCode(), time.Since(begin)
}

// addEntries XADDs n entries built by fields(i), pipelined.
func addEntries(t *testing.T, c rueidis.Client, stream string, from, n int, fields func(i int) []string) []string {
	t.Helper()
	ctx := context.Background()
	ids := make([]string, 0, n)
	const chunk = 1000
	for start := from; start < from+n; start += chunk {
		end := min(start+chunk, from+n)
		cmds := make(rueidis.Commands, 0, end-start)
		for i := start; i < end; i++ {
			fv := c.B().Xadd().Key(stream).Id("*").FieldValue()
			f := fields(i)
			for j := 0; j < len(f); j += 2 {
				fv = fv.FieldValue(f[j], f[j+1])
			}
			cmds = append(cmds, fv.Build())
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			id, err := r.ToString()
			if err != nil {
				t.Fatalf("XADD %s: %v", stream, err)
			}
			ids = append(ids, id)
		}
	}
	return ids
}

// readTopic reads every committed record of a topic, read_committed to the
// end offsets, with a plain franz-go consumer that shares no code with
// xmirror. Transaction markers take offsets but are no records; they are
// written just after a commit returns, and read_committed waits for them,
// as it waits for a transaction still open (a killed run's, until the next
// run aborts it): for a final count, not for progress (see endOffset).
func readTopic(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	return testenv.ReadTopicTo(t, topic, false)
}

// header returns a record header's value.
func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// endOffset is how many committed records a topic holds, for progress:
// its records as a read_committed consumer sees them to the last stable
// offsets (transaction markers take offsets too, so the sum of the end
// offsets is no count). It never waits for an open transaction.
func endOffset(t *testing.T, adm *kadm.Client, topic string) int64 {
	t.Helper()
	return int64(len(testenv.ReadTopicTo(t, topic, true)))
}

// waitLeaseExpired waits for the lease of a killed mirror to run out, as a
// restarted process would have to.
func waitLeaseExpired(t *testing.T, rc rueidis.Client, kind, name string) {
	t.Helper()
	key := "xmirror:lease:" + kind + ":" + name
	testenv.Wait(t, 30*time.Second, "lease "+key+" to expire", func() bool {
		n, err := rc.Do(context.Background(), rc.B().Exists().Key(key).Build()).AsInt64()
		return err == nil && n == 0
	})
}

// syncBuffer is a bytes.Buffer a test may read while the process is still
// writing to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// onlyGroup is the one consumer group of a stream a mirror read (each
// mirror has a group of its own), asked of Redis directly.
func onlyGroup(t *testing.T, rc rueidis.Client, stream string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
	if err != nil || len(groups) != 1 {
		t.Fatalf("groups of stream %s: %d, %v; want exactly one", stream, len(groups), err)
	}
	info, err := groups[0].AsStrMap()
	if err != nil {
		t.Fatalf("XINFO GROUPS %s: %v", stream, err)
	}
	return info["name"]
}

// streamLen returns a function that reads stream's XLEN with rc (0 when it
// cannot), for tests that wait for entries to arrive.
func streamLen(rc rueidis.Client, stream string) func() int64 {
	return func() int64 {
		n, _ := rc.Do(context.Background(), rc.B().Xlen().Key(stream).Build()).AsInt64()
		return n
	}
}
