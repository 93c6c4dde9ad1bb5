package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// guard remembers what the suite did to the machine that must be undone
// whatever happens: processes it SIGSTOPped, processes it started, a Kafka
// broker it stopped. cleanup undoes all of it; it is safe to call twice and
// from the watchdog goroutine.
type guard struct {
	mu          sync.Mutex
	stopped     map[int]string
	procs       map[*os.Process]string
	kafkaTouch  bool
	cleanedOnce bool
}

func newGuard() *guard {
	return &guard{stopped: map[int]string{}, procs: map[*os.Process]string{}}
}

// pause SIGSTOPs pid and returns the function that resumes it; the guard
// resumes it too if the suite ends first.
func (g *guard) pause(pid int, what string) (resume func(), err error) {
	g.mu.Lock()
	g.stopped[pid] = what
	g.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		g.mu.Lock()
		delete(g.stopped, pid)
		g.mu.Unlock()
		return nil, fmt.Errorf("SIGSTOP %s (pid %d): %w", what, pid, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			syscall.Kill(pid, syscall.SIGCONT)
			g.mu.Lock()
			delete(g.stopped, pid)
			g.mu.Unlock()
		})
	}, nil
}

// started records a child process; finished forgets it.
func (g *guard) started(p *os.Process, what string) {
	g.mu.Lock()
	g.procs[p] = what
	g.mu.Unlock()
}

func (g *guard) finished(p *os.Process) {
	g.mu.Lock()
	delete(g.procs, p)
	g.mu.Unlock()
}

// touchKafka notes that the broker was stopped or paused, so cleanup makes
// sure it answers again.
func (g *guard) touchKafka() {
	g.mu.Lock()
	g.kafkaTouch = true
	g.mu.Unlock()
}

func (g *guard) cleanup(cfg config) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for pid, what := range g.stopped {
		fmt.Fprintf(os.Stderr, "faults: resuming %s (pid %d)\n", what, pid)
		syscall.Kill(pid, syscall.SIGCONT)
		delete(g.stopped, pid)
	}
	for p, what := range g.procs {
		fmt.Fprintf(os.Stderr, "faults: killing %s (pid %d) left running\n", what, p.Pid)
		p.Kill()
		delete(g.procs, p)
	}
	if g.kafkaTouch && !g.cleanedOnce {
		g.cleanedOnce = true
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
		defer cancel()
		// `start` is a no-op when the broker answers; otherwise it starts
		// it again (a scenario may have failed between stop and start).
		out, err := servicesCmd(ctx, cfg, "start", "kafka").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "faults: could not make sure Kafka runs again (%s start kafka): %v\n%s", cfg.services, err, out)
		}
	}
}

// servicesCmd runs scripts/services.sh. `make` exports REDIS_URL and
// KAFKA_BROKERS for the local servers, which the script would take for
// external ones it must not touch; they are dropped when they name the
// local broker the script manages.
func servicesCmd(ctx context.Context, cfg config, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, cfg.services, args...)
	for _, kv := range os.Environ() {
		if cfg.brokers == localBrokers && (strings.HasPrefix(kv, "KAFKA_BROKERS=") || strings.HasPrefix(kv, "REDIS_URL=")) {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	return cmd
}
