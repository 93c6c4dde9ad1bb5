package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// summary is the part of xmirror's --output json summary the bench reads.
type summary struct {
	Entries int64   `json:"entries"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"entries_per_second"`
	Stopped string  `json:"stopped"`
}

// k2rAvailable says whether the binary has the kafka-to-redis command.
func k2rAvailable(ctx context.Context, bin string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, bin, "kafka-to-redis", "--help").Run() == nil
}

// xmirrorArgs completes a command line with the servers and JSON output.
func xmirrorArgs(cfg *config, args []string) []string {
	return append(append([]string{}, args...),
		"--redis", cfg.redisURL, "--brokers", cfg.brokers, "--output", "json", "--quiet")
}

// process is a finished xmirror run.
type process struct {
	summary summary
	wall    time.Duration
	// rssKiB is the peak RSS (VmHWM) of xmirror itself.
	rssKiB int64
	// rusageKiB is ru_maxrss from wait4, which on Linux also counts the
	// parent's memory at the exec (see rusageMaxRSS).
	rusageKiB int64
	// cpu is what each party used while xmirror ran.
	cpu *cpuCores
}

// runXmirror runs xmirror to its end and reads its summary and peak RSS.
func runXmirror(ctx context.Context, cfg *config, e *env, args []string) (process, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.bin, xmirrorArgs(cfg, args)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cpu := e.startCPU()
	start := time.Now()
	err := cmd.Start()
	var hwm *hwmWatch
	if err == nil {
		hwm = watchHWM(cmd.Process.Pid)
		err = cmd.Wait()
	}
	p := process{wall: time.Since(start)}
	if hwm != nil {
		p.rssKiB = hwm.stop()
		p.rusageKiB = rusageMaxRSS(cmd.ProcessState)
		p.cpu = cpu.stop(cmd.ProcessState)
	}
	if err != nil {
		return p, fmt.Errorf("xmirror %s: %w: %s", args[0], err, tail(errb.String()))
	}
	if p.summary, err = parseSummary(out.Bytes()); err != nil {
		return p, fmt.Errorf("xmirror %s: %w", args[0], err)
	}
	return p, nil
}

// oneShot measures a one-shot run on a backlog.
func oneShot(ctx context.Context, cfg *config, e *env, caseName string, args []string, size int, tag string) (measurement, error) {
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return measurement{}, err
		}
		tag += "-" + strconv.Itoa(size)
		args = append(args, "--cpuprofile", profilePath(cfg, tag, "cpu"), "--memprofile", profilePath(cfg, tag, "mem"))
	}
	p, err := runXmirror(ctx, cfg, e, args)
	if err != nil {
		return measurement{}, err
	}
	m := measured(caseName, size, p.summary.Entries, p.wall)
	m.PeakRSSKiB, m.RusageKiB, m.CPU = p.rssKiB, p.rusageKiB, p.cpu
	m.Reported = p.summary.Rate
	return m, nil
}

// idleRun measures a one-shot run with nothing new: the same command line
// again, right after it mirrored everything.
func idleRun(ctx context.Context, cfg *config, e *env, caseName string, args []string, size int) (measurement, error) {
	p, err := runXmirror(ctx, cfg, e, args)
	if err != nil {
		return measurement{}, err
	}
	return measurement{Case: caseName, Size: size, Records: p.summary.Entries, Seconds: p.wall.Seconds(), PeakRSSKiB: p.rssKiB, RusageKiB: p.rusageKiB}, nil
}

func parseSummary(out []byte) (summary, error) {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var s summary
	if len(lines) == 0 || len(lines[len(lines)-1]) == 0 {
		return s, fmt.Errorf("printed no JSON summary")
	}
	if err := json.Unmarshal(lines[len(lines)-1], &s); err != nil {
		return s, fmt.Errorf("summary %q: %w", lines[len(lines)-1], err)
	}
	return s, nil
}

// rusageMaxRSS is ru_maxrss of a finished child in KiB. On Linux it is
// not xmirror's own peak: exec records the high-water RSS of the memory
// image it replaces, and Go starts children with CLONE_VM, so that image
// is this harness's. It is kept in the JSON for reference; PeakRSSKiB
// comes from VmHWM instead.
func rusageMaxRSS(ps *os.ProcessState) int64 {
	if ps == nil {
		return 0
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

// hwmWatch samples a process's VmHWM (peak RSS of its own memory image)
// from /proc every few milliseconds until stopped; the last reading before
// the exit is the peak unless memory grew in the final milliseconds.
type hwmWatch struct {
	pid  int
	peak atomic.Int64
	quit chan struct{}
	done chan struct{}
}

const hwmInterval = 5 * time.Millisecond

func watchHWM(pid int) *hwmWatch {
	w := &hwmWatch{pid: pid, quit: make(chan struct{}), done: make(chan struct{})}
	w.sample()
	go func() {
		defer close(w.done)
		t := time.NewTicker(hwmInterval)
		defer t.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w
}

func (w *hwmWatch) sample() {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(w.pid) + "/status")
	if err != nil {
		return
	}
	i := bytes.Index(b, []byte("VmHWM:"))
	if i < 0 {
		return
	}
	f := bytes.Fields(b[i+len("VmHWM:"):])
	if len(f) == 0 {
		return
	}
	if kib, err := strconv.ParseInt(string(f[0]), 10, 64); err == nil && kib > w.peak.Load() {
		w.peak.Store(kib)
	}
}

// stop ends sampling (call it once the process exited) and returns the
// peak seen, in KiB.
func (w *hwmWatch) stop() int64 {
	close(w.quit)
	<-w.done
	return w.peak.Load()
}

// follower is an xmirror --follow process.
type follower struct {
	cmd  *exec.Cmd
	hwm  *hwmWatch
	out  bytes.Buffer
	errb bytes.Buffer
	done chan error
}

// startFollow starts xmirror with --follow; stop ends it.
func startFollow(cfg *config, args []string) (*follower, error) {
	f := &follower{done: make(chan error, 1)}
	f.cmd = exec.Command(cfg.bin, xmirrorArgs(cfg, append(args, "--follow"))...)
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.errb
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start xmirror %s --follow: %w", args[0], err)
	}
	f.hwm = watchHWM(f.cmd.Process.Pid)
	go func() { f.done <- f.cmd.Wait() }()
	return f, nil
}

// exited reports an early exit of the follower, if any.
func (f *follower) exited() error {
	select {
	case err := <-f.done:
		f.done <- err
		return fmt.Errorf("xmirror --follow exited early (%v): %s", err, tail(f.errb.String()))
	default:
		return nil
	}
}

// stop sends SIGTERM, as a service manager would, and waits for a clean
// exit (SIGKILL after 20s).
func (f *follower) stop() (process, error) {
	f.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-f.done:
	case <-time.After(20 * time.Second):
		f.cmd.Process.Kill()
		<-f.done
		err = fmt.Errorf("did not stop within 20s of SIGTERM; killed")
	}
	p := process{rssKiB: f.hwm.stop(), rusageKiB: rusageMaxRSS(f.cmd.ProcessState)}
	if err != nil {
		return p, fmt.Errorf("xmirror --follow: %w: %s", err, tail(f.errb.String()))
	}
	p.summary, err = parseSummary(f.out.Bytes())
	return p, err
}
