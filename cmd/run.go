package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
)

// Defaults shared by both directions.
const (
	// defaultBatchSize entries per read: large enough that round trips are
	// a small share of the time, small enough that memory stays a few MiB.
	defaultBatchSize = 2000
	// defaultOneShotTimeout is how long a one-shot run keeps retrying a
	// server that stopped answering before it exits 1.
	defaultOneShotTimeout = 30 * time.Second
)

// runFlags are the flags that shape a mirror run in either direction.
type runFlags struct {
	name        string
	follow      bool
	batchSize   int
	maxInFlight int
	timeout     time.Duration
	output      string
	leaseTTL    time.Duration
}

func (f *runFlags) bind(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.name, "name", "", "mirror name: keys its checkpoint and lease (default derived from the source and destination)")
	fs.BoolVarP(&f.follow, "follow", "f", false, "keep mirroring new data until SIGINT/SIGTERM instead of stopping at what exists at start")
	fs.IntVar(&f.batchSize, "batch-size", defaultBatchSize, "the most entries read, written and confirmed together")
	fs.IntVar(&f.maxInFlight, "max-in-flight", mirror.DefaultMaxInFlight, "batches written but not yet confirmed; more hides latency, costs memory")
	fs.DurationVar(&f.timeout, "timeout", defaultOneShotTimeout, "one-shot: how long to retry an unreachable server before exiting 1 (follow retries forever)")
	fs.StringVarP(&f.output, "output", "o", "text", "summary format: text or json")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", checkpoint.DefaultLeaseTTL, "how long a crashed mirror's lease keeps another process from starting under its name; a run on the same host takes a dead process's lease over at once")
}

// validate reports every problem with the run flags.
func (f *runFlags) validate() []string {
	var problems []string
	if f.batchSize < 1 || f.batchSize > 100000 {
		problems = append(problems, fmt.Sprintf("--batch-size must be from 1 to 100000, got %d", f.batchSize))
	}
	if f.maxInFlight < 1 || f.maxInFlight > 64 {
		problems = append(problems, fmt.Sprintf("--max-in-flight must be from 1 to 64, got %d", f.maxInFlight))
	}
	if f.timeout <= 0 {
		problems = append(problems, fmt.Sprintf("--timeout must be positive, got %s", f.timeout))
	}
	if f.leaseTTL < time.Second {
		problems = append(problems, fmt.Sprintf("--lease-ttl must be at least 1s, got %s", f.leaseTTL))
	}
	if f.output != "text" && f.output != "json" {
		problems = append(problems, fmt.Sprintf("--output must be text or json, got %q", f.output))
	}
	return problems
}

// engineOptions turns the flags into engine options.
func (f *runFlags) engineOptions(a *app) mirror.Options {
	opt := mirror.Options{
		MaxInFlight: f.maxInFlight,
		Logger:      a.logger(),
	}
	if !f.follow {
		opt.RetryFor = f.timeout
	}
	if a.env.Getenv("GOMEMLIMIT") == "" {
		opt.OnCommit = memoryLimitFollower(f.maxInFlight)
	}
	return opt
}

// memoryLimitFollower keeps the garbage collector's soft memory limit (see
// cmd/xmirror) above what the batches in flight actually hold: large
// entries can make large batches (kafka-to-redis, or redis-to-kafka with
// --batch-bytes 0), and a limit below the working set would make the
// collector run without pause. The limit only ever rises.
func memoryLimitFollower(maxInFlight int) func(mirror.Stats) {
	limit := debug.SetMemoryLimit(-1)
	return func(s mirror.Stats) {
		if s.Batches == 0 {
			return
		}
		// Batches in flight, plus the one being read and the copies the
		// clients hold, with room for the collector to work.
		need := 4 * (s.Bytes / s.Batches) * int64(maxInFlight+2)
		if need > limit+limit/4 {
			limit = need
			debug.SetMemoryLimit(limit)
		}
	}
}

// followStopped turns the error of a follow run that a signal stopped
// into success: that is how a follow run ends.
func followStopped(c *cobra.Command, f *runFlags, err error) error {
	if f.follow && err != nil && errors.Is(err, context.Canceled) && c.Context().Err() != nil {
		return nil
	}
	return err
}

// closeBudget bounds the steps of a run's way out once the engine returned
// (finishing the writes to Redis, releasing the lease, closing the
// connections): with the engine's drain timeout (4 s) it keeps a stop
// within the 6 seconds the README promises, with room to spare for the
// process to exit, whatever the servers do.
const closeBudget = 1500 * time.Millisecond

// shutdown bounds the steps a run takes on its way out, after the engine
// returned: what was confirmed is committed by then, and what a step still
// sends when it is given up is what a crash at that moment would leave,
// which the checkpoints are made for. The budget starts with the first
// step; a step that is not done when it runs out is left to the exit.
type shutdown struct {
	log      *slog.Logger
	once     sync.Once
	deadline time.Time
	spawned  []spawned
}

func newShutdown(log *slog.Logger) *shutdown { return &shutdown{log: log} }

// ctx is a context that ends when the budget runs out, which starts now
// unless an earlier step started it.
func (s *shutdown) ctx() (context.Context, context.CancelFunc) {
	s.once.Do(func() { s.deadline = time.Now().Add(closeBudget) })
	return context.WithDeadline(context.Background(), s.deadline)
}

// step runs fn and waits for it within the budget, which fn's ctx carries.
// Steps run in the order they are called.
func (s *shutdown) step(what string, fn func(ctx context.Context)) {
	ctx, cancel := s.ctx()
	defer cancel()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		fn(ctx)
	}()
	select {
	case <-ended:
	case <-ctx.Done():
		s.log.Warn("stopping without waiting any longer for a step of the way out: a server does not answer in time", "step", what, "budget", closeBudget)
	}
}

// spawn starts fn, a step no later one depends on (closing a Kafka
// client), at once; wait waits for every spawned step within the budget.
func (s *shutdown) spawn(what string, fn func()) {
	s.ctx() // the budget starts
	st := spawned{what: what, ended: make(chan struct{})}
	go func() {
		defer close(st.ended)
		fn()
	}()
	s.spawned = append(s.spawned, st)
}

type spawned struct {
	what  string
	ended chan struct{}
}

// wait waits for the spawned steps until the budget runs out; the last
// step on the way out.
func (s *shutdown) wait() {
	ctx, cancel := s.ctx()
	defer cancel()
	for _, st := range s.spawned {
		select {
		case <-st.ended:
			continue // without a race with a budget run out meanwhile
		default:
		}
		select {
		case <-st.ended:
		case <-ctx.Done():
			s.log.Warn("stopping without waiting any longer for a step of the way out: its time ran out", "step", st.what, "budget", closeBudget)
		}
	}
}

// holdLease takes the mirror's lease and returns a context that ends when
// the lease is lost (then context.Cause says why) and a release function,
// a step of sd: a lease it cannot release in time expires after ttl, as a
// crashed mirror's does.
func holdLease(ctx context.Context, c rueidis.Client, log *slog.Logger, kind, name string, ttl time.Duration, sd *shutdown) (context.Context, func(), error) {
	lease, err := checkpoint.AcquireLease(ctx, c, kind, name, ttl)
	if err != nil {
		return nil, nil, err
	}
	if old := lease.TookOver(); old != "" {
		log.Info("took over the lease of a process of this host that is gone", "lease", lease.Key(), "old_holder", old)
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case err := <-lease.Lost():
			// Another process may already be taking over: abandon what
			// is in flight rather than draining it.
			cancel(abandonCause{err})
		case <-runCtx.Done():
		}
	}()
	release := func() {
		cancel(nil)
		// Release first waits for a renewal in flight, which a stalled
		// Redis holds for up to a third of ttl: the step's budget bounds
		// both.
		sd.step("release the lease", func(ctx context.Context) { lease.Release(ctx) })
	}
	return runCtx, release, nil
}

// abandonCause stops a run without draining (mirror.ErrAbandon) and
// reads as the error that caused it.
type abandonCause struct{ error }

func (a abandonCause) Is(target error) bool { return target == mirror.ErrAbandon }
func (a abandonCause) Unwrap() error        { return a.error }

// leaseError turns a run stopped by a lost lease into that error, unless
// Kafka fenced the run, which says more precisely why it stops.
func leaseError(runCtx context.Context, err error) error {
	if errors.As(err, new(*mirror.FencedError)) {
		return err
	}
	if cause := context.Cause(runCtx); err != nil && cause != nil && errors.Is(cause, checkpoint.ErrLeaseLost) {
		return cause
	}
	return err
}

// problemsError joins validation problems into one usage error.
func problemsError(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	msg := problems[0]
	for _, p := range problems[1:] {
		msg += "; " + p
	}
	return usageErrorf("%s", msg)
}

// summary is the one-line report of a finished run.
type summary struct {
	Mirror    string  `json:"mirror"`
	Direction string  `json:"direction"`
	Entries   int64   `json:"entries"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"entries_per_second"`
	Skipped   int64   `json:"skipped,omitempty"`
	// Lost counts entries the source lost before they were mirrored and
	// the run went past (redis-to-kafka --on-gap skip).
	Lost    int64  `json:"lost,omitempty"`
	Stopped string `json:"stopped"`
}

// finish prints the summary of a run and turns its error into the command's.
// A follow run stopped by a signal succeeded; a one-shot run stopped by one
// did not finish, which is exit 130.
func finish(a *app, c *cobra.Command, f *runFlags, s summary, stats mirror.Stats, err error) error {
	s.Entries, s.Bytes = stats.Entries, stats.Bytes
	s.Seconds = stats.Elapsed.Seconds()
	s.Rate = stats.Rate()
	interrupted := err != nil && errors.Is(err, context.Canceled) && c.Context().Err() != nil
	switch {
	case err == nil:
		s.Stopped = "done"
	case interrupted && f.follow:
		s.Stopped = "signal"
		err = nil
	case interrupted:
		s.Stopped = "interrupted"
	default:
		s.Stopped = "error"
	}
	if err != nil {
		a.logger().Debug("stopped", "mirror", s.Mirror, "reason", s.Stopped, "err", err)
	} else {
		a.logger().Debug("stopped", "mirror", s.Mirror, "reason", s.Stopped)
	}
	if !a.global.quiet || f.output == "json" {
		if f.output == "json" {
			json.NewEncoder(a.env.Stdout).Encode(s)
		} else {
			line := fmt.Sprintf("%s: mirrored %d entries (%s) in %.2fs, %.0f entries/s", s.Mirror, s.Entries, humanBytes(s.Bytes), s.Seconds, s.Rate)
			if s.Skipped > 0 {
				line += fmt.Sprintf(", %d skipped", s.Skipped)
			}
			if s.Lost > 0 {
				line += fmt.Sprintf(", %d lost", s.Lost)
			}
			if s.Stopped != "done" {
				line += "; stopped: " + s.Stopped
			}
			fmt.Fprintln(a.env.Stderr, line)
		}
	}
	return err
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
