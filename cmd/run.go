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

	changed func(flag string) bool // tells a flag given empty from one not given
}

func (f *runFlags) bind(c *cobra.Command) {
	fs := c.Flags()
	f.changed = fs.Changed
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
	if f.changed != nil && f.changed("name") && f.name == "" {
		// Not the default name: an empty one would be a mistake in a
		// script (an unset variable), and keys every mirror alike.
		problems = append(problems, "--name must not be empty")
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

// heldLease is a mirror's lease while a run holds it: ctx ends when the
// lease is lost (then context.Cause says why).
type heldLease struct {
	lease  *checkpoint.Lease
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// holdLease takes the mirror's lease (failing with checkpoint.ErrLeaseHeld
// while another process holds it) and renews it until release or drop.
func holdLease(ctx context.Context, c rueidis.Client, log *slog.Logger, kind, name string, ttl time.Duration) (*heldLease, error) {
	return holdLeaseAfter(ctx, c, log, kind, name, ttl, nil)
}

// holdLeaseAfter is holdLease for a run set up again after prev (nil: a
// first start), which may take over a key still holding prev's value.
func holdLeaseAfter(ctx context.Context, c rueidis.Client, log *slog.Logger, kind, name string, ttl time.Duration, prev *checkpoint.Lease) (*heldLease, error) {
	var lease *checkpoint.Lease
	var err error
	if prev != nil {
		lease, err = prev.Reacquire(ctx)
	} else {
		lease, err = checkpoint.AcquireLease(ctx, c, kind, name, ttl)
	}
	if err != nil {
		return nil, err
	}
	if old := lease.TookOver(); old != "" {
		log.Info("took over the lease of a process of this host that is gone", "lease", lease.Key(), "old_holder", old)
	}
	log.Debug("lease taken", "mirror", name, "key", lease.Key(), "ttl", ttl)
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
	return &heldLease{lease: lease, ctx: runCtx, cancel: cancel}, nil
}

// release stops renewing and deletes the lease if this process still
// holds it, a step of sd: a lease it cannot release in time expires after
// its TTL, as a crashed mirror's does.
func (h *heldLease) release(sd *shutdown) {
	h.cancel(nil)
	// Release first waits for a renewal in flight, which a stalled Redis
	// holds for up to a third of the TTL: the step's budget bounds both.
	sd.step("release the lease", func(ctx context.Context) { h.lease.Release(ctx) })
}

// drop stops renewing a lease before the mirror is set up again, within
// closeBudget; the lease is deleted only if it is still this process's.
func (h *heldLease) drop() {
	h.cancel(nil)
	ctx, cancel := context.WithTimeout(context.Background(), closeBudget)
	defer cancel()
	h.lease.Release(ctx)
}

// runResult is what a run did; a follow run set up again adds its runs up.
type runResult struct {
	stats mirror.Stats
	// skipped and lost as the summary counts them.
	skipped, lost int64
	// ran: the mirror was set up and ran; a run that failed in its
	// set-up has no summary to print, only its error.
	ran bool
}

func (r *runResult) add(o runResult) {
	r.stats.Entries += o.stats.Entries
	r.stats.Bytes += o.stats.Bytes
	r.stats.Batches += o.stats.Batches
	r.skipped += o.skipped
	r.lost += o.lost
	r.ran = r.ran || o.ran
}

// closers are the clients a run opened after taking the lease, closed
// last added first: steps (waited for, in turn) and spawns (started at
// once, then waited for together).
type closers []closer

type closer struct {
	what  string
	spawn func()
	step  func(ctx context.Context)
}

func (c *closers) add(what string, fn func()) {
	*c = append(*c, closer{what: what, spawn: fn})
}

// addStep adds fn, which the closers after it wait for.
func (c *closers) addStep(what string, fn func(ctx context.Context)) {
	*c = append(*c, closer{what: what, step: fn})
}

// hand runs them as steps of sd, on the way out.
func (c closers) hand(sd *shutdown) {
	for i := len(c) - 1; i >= 0; i-- {
		if c[i].step != nil {
			sd.step(c[i].what, c[i].step)
		} else {
			sd.spawn(c[i].what, c[i].spawn)
		}
	}
}

// close runs them before the mirror is set up again, as a shutdown of its
// own: within closeBudget, after which what is still closing is left.
func (c closers) close(log *slog.Logger) {
	sd := newShutdown(log)
	c.hand(sd)
	sd.wait()
}

// Backoff between two set-ups of a follow run that cannot be set up again
// yet (a server unreachable).
const (
	minSetUpBackoff = 500 * time.Millisecond
	maxSetUpBackoff = 10 * time.Second
)

// runLeased runs a mirror under its lease: it takes the lease and calls
// run, which sets the mirror up from its checkpoint and mirrors, with a
// context that ends when the lease is lost. Whatever run opened is added
// to cl, and closed once it returned.
//
// A run whose lease is lost (it expired while Redis or this process was
// paused, Redis restarted without it, or it was deleted) stops writing at
// once: another process may have started meanwhile. So does a run that
// Kafka fenced (another run of the mirror started). A one-shot run then
// exits with that error. A follow run sets itself up again as a new start
// does, logging it: it takes the lease anew with SET NX (and stops as a
// second run does if another process holds it), and run sets the mirror
// up again, fencing whatever the earlier run left behind. A follow run
// set up again retries a server that does not answer, as a follow run
// does, until ctx ends.
func runLeased(ctx context.Context, rc rueidis.Client, log *slog.Logger, kind, name string, f *runFlags, sd *shutdown, run func(ctx context.Context, cl *closers) (runResult, error)) (runResult, error) {
	var total runResult
	start := time.Now()
	again, backoff := false, minSetUpBackoff
	var prev *checkpoint.Lease // the lease of the run before, once set up again
	var fencedHolding time.Time
	for {
		held, err := holdLeaseAfter(ctx, rc, log, kind, name, f.leaseTTL, prev)
		if err != nil {
			if again && ctx.Err() == nil && mirror.IsTransient(err) {
				if err = setUpBackoff(ctx, log, &backoff, err); err == nil {
					continue
				}
			}
			total.stats.Elapsed = time.Since(start)
			return total, err
		}
		var cl closers
		res, err := run(held.ctx, &cl)
		total.add(res)
		total.stats.Elapsed = time.Since(start)
		err = leaseError(held.ctx, err)
		fenced := errors.As(err, new(*mirror.FencedError))
		if fenced && f.follow && ctx.Err() == nil && fencedAgain(held, &fencedHolding) {
			// Kafka fenced this run twice in a short while although no
			// other process took its lease in this Redis: the other
			// producer's lease is elsewhere. Setting up again would
			// fence it in turn, for ever.
			err = fmt.Errorf("%w; this run still holds its lease %s, so the other run keeps its checkpoints in another Redis (or database): mirrors writing to one Kafka cluster need names of their own (--name)", err, held.lease.Key())
			fenced = false
		}
		lost := errors.Is(err, checkpoint.ErrLeaseLost) || fenced
		retryable := again && mirror.IsTransient(err)
		if !f.follow || ctx.Err() != nil || !(lost || retryable) {
			cl.hand(sd)
			held.release(sd)
			if lost && !f.follow && errors.Is(err, checkpoint.ErrLeaseLost) {
				err = fmt.Errorf("%w; a one-shot run stops here: run it again to go on from its checkpoint", err)
			}
			return total, err
		}
		if lost {
			log.Warn("the mirror's lease was lost (or Kafka fenced it): it stopped writing, and sets itself up again as a new start would", "mirror", name, "err", err)
		}
		cl.close(log)
		held.drop()
		prev = held.lease
		if lost {
			backoff = minSetUpBackoff
		} else if err = setUpBackoff(ctx, log, &backoff, err); err != nil {
			return total, err
		}
		again = true
	}
}

// fencedHoldingWindow is how soon a second fence of a run that still holds
// its lease stops the mirror rather than setting it up again.
const fencedHoldingWindow = time.Minute

// fencedAgain says, for a run Kafka fenced, whether it still holds its
// lease and was fenced so before, less than fencedHoldingWindow ago; it
// records the time of a first such fence in *since. A run whose own
// transaction outlived Kafka's transaction timeout is fenced once and goes
// on; two mirrors of one name whose leases are in different Redis servers
// fence each other at every set-up.
func fencedAgain(held *heldLease, since *time.Time) bool {
	ctx, cancel := context.WithTimeout(context.Background(), closeBudget)
	defer cancel()
	if ok, err := held.lease.Held(ctx); err != nil || !ok {
		return false
	}
	now := time.Now()
	if !since.IsZero() && now.Sub(*since) < fencedHoldingWindow {
		return true
	}
	*since = now
	return false
}

// setUpBackoff waits before the next set-up, or returns ctx's error.
func setUpBackoff(ctx context.Context, log *slog.Logger, backoff *time.Duration, err error) error {
	log.Warn("retrying", "step", "set up again", "in", *backoff, "err", err)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(*backoff):
	}
	*backoff = min(*backoff*2, maxSetUpBackoff)
	return nil
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
