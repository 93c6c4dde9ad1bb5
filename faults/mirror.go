package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/rueidis"
)

// tail keeps the last bytes written to it: the stderr excerpt of a report.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// lines returns the last n lines written.
func (t *tail) lines(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ls := strings.Split(strings.TrimRight(string(t.buf), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// proc is one run of bin/xmirror.
type proc struct {
	cmd      *exec.Cmd
	stderr   *tail
	done     chan struct{}
	begin    time.Time
	signaled bool // the suite signalled it, so its exit is expected
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) code() int { return p.cmd.ProcessState.ExitCode() }

// mirror drives the real binary through one scenario: it starts the
// --follow process, kills, signals and restarts it, and notices when it
// exits on its own.
type mirror struct {
	cfg      config
	g        *guard
	args     []string // the command line without --follow
	redisURL string
	leaseKey string
	rc       rueidis.Client // the Redis holding the lease
	log      *os.File       // every run's stderr, one after the other
	r        *row

	cur    *proc
	starts int
}

func (m *mirror) command(ctx context.Context, follow bool) *exec.Cmd {
	args := append([]string(nil), m.args...)
	args = append(args, "--redis", m.redisURL, "--brokers", m.cfg.brokers)
	if follow {
		args = append(args, "--follow")
	}
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, m.cfg.bin, args...)
	} else {
		cmd = exec.Command(m.cfg.bin, args...)
	}
	cmd.Env = os.Environ()
	// Its own process group: a Ctrl-C on the terminal reaches the suite,
	// which stops the mirror itself, not the mirror behind its back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// start launches the follow process.
func (m *mirror) start() error {
	cmd := m.command(nil, true)
	t := &tail{max: 16 << 10}
	fmt.Fprintf(m.log, "==== %s start %d: %s\n", time.Now().Format(time.TimeOnly), m.starts+1, strings.Join(cmd.Args, " "))
	cmd.Stderr = io.MultiWriter(m.log, t)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.cfg.bin, err)
	}
	m.g.started(cmd.Process, "xmirror")
	p := &proc{cmd: cmd, stderr: t, done: make(chan struct{}), begin: time.Now()}
	go func() {
		cmd.Wait()
		m.g.finished(cmd.Process)
		close(p.done)
	}()
	m.cur = p
	m.starts++
	m.r.logf("mirror started (run %d, pid %d)", m.starts, cmd.Process.Pid)
	return nil
}

// check restarts the follow process if it exited without being told to,
// and reports that as a failure: --follow must ride out every fault here.
func (m *mirror) check(ctx context.Context) error {
	if m.cur == nil || !m.cur.exited() || m.cur.signaled {
		return nil
	}
	m.r.fail("the --follow mirror exited by itself with code %d after %s; its stderr ends with:\n%s",
		m.cur.code(), time.Since(m.cur.begin).Round(100*time.Millisecond), indent(m.cur.stderr.lines(6)))
	m.cur.signaled = true // reported once
	if err := m.waitLeaseGone(ctx); err != nil {
		return err
	}
	return m.start()
}

// sleep waits d while watching the mirror.
func (m *mirror) sleep(ctx context.Context, d time.Duration) error {
	done := make(chan struct{})
	t := time.AfterFunc(d, func() { close(done) })
	defer t.Stop()
	return m.watch(ctx, done)
}

// watch waits for done while watching the mirror.
func (m *mirror) watch(ctx context.Context, done <-chan struct{}) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := m.check(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-done:
			return nil
		case <-tick.C:
		}
	}
}

// waitUp waits until the follow process holds its lease and has run for
// minAge: a signal before that may reach it before Go installed its signal
// handlers, and kill it (exit 143) rather than stop it.
func (m *mirror) waitUp(ctx context.Context, minAge time.Duration) error {
	deadline := time.Now().Add(45 * time.Second)
	for {
		if err := m.check(ctx); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n, err := m.rc.Do(cctx, m.rc.B().Exists().Key(m.leaseKey).Build()).AsInt64()
		cancel()
		if err == nil && n == 1 && time.Since(m.cur.begin) >= minAge {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the mirror did not take its lease %s within 45s of its start; its stderr ends with:\n%s", m.leaseKey, indent(m.cur.stderr.lines(6)))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// kill9 kills the follow process and waits until it is gone.
func (m *mirror) kill9() error {
	p := m.cur
	if p.exited() {
		return m.check(context.Background())
	}
	p.signaled = true
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("xmirror (pid %d) still alive 10s after SIGKILL", p.cmd.Process.Pid)
	}
}

// term sends SIGTERM and waits up to limit (then kills it). It returns the
// exit code and how long the exit took; ok is false if it had to be killed.
func (m *mirror) term(limit time.Duration) (code int, took time.Duration, ok bool) {
	p := m.cur
	p.signaled = true
	begin := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.code(), time.Since(begin), true
	case <-time.After(limit):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return p.code(), time.Since(begin), false
	}
}

// waitLeaseGone waits for the lease of a stopped mirror to be released or
// to expire, as a restarted process would otherwise exit "already running".
func (m *mirror) waitLeaseGone(ctx context.Context) error {
	deadline := time.Now().Add(45 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n, err := m.rc.Do(cctx, m.rc.B().Exists().Key(m.leaseKey).Build()).AsInt64()
		cancel()
		if err == nil && n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lease %s still there 45s after the mirror stopped (last error: %v)", m.leaseKey, err)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// oneShot runs the mirror without --follow to completion and returns the
// entries its summary reports.
func (m *mirror) oneShot(ctx context.Context, limit time.Duration) (entries int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := m.command(ctx, false)
	cmd.Args = append(cmd.Args, "--output", "json")
	var out bytes.Buffer
	t := &tail{max: 16 << 10}
	fmt.Fprintf(m.log, "==== %s one-shot: %s\n", time.Now().Format(time.TimeOnly), strings.Join(cmd.Args, " "))
	cmd.Stdout = &out
	cmd.Stderr = io.MultiWriter(m.log, t)
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return 0, fmt.Errorf("the final one-shot run did not finish within %s; its stderr ends with:\n%s", limit, indent(t.lines(6)))
	}
	if runErr != nil {
		return 0, fmt.Errorf("the final one-shot run failed (%v); its stderr ends with:\n%s", runErr, indent(t.lines(6)))
	}
	var sum struct {
		Entries int64 `json:"entries"`
	}
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		return 0, fmt.Errorf("the final one-shot run printed %q, not its JSON summary: %v", out.String(), err)
	}
	return sum.Entries, nil
}

func indent(s string) string {
	return "      | " + strings.ReplaceAll(s, "\n", "\n      | ")
}
