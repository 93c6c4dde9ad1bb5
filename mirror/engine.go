package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// A Batch is a group of entries read together and confirmed together.
type Batch interface {
	// Len is the number of entries the batch writes to the destination,
	// once the sink confirmed it (an entry the sink found already there
	// counts in Unwritten instead).
	Len() int
	// Bytes is the payload size of the entries written, for statistics.
	Bytes() int
	// Unwritten counts the entries the batch acknowledges without writing
	// them, once the sink confirmed it.
	Unwritten() Unwritten
	// Empty says the sink has nothing to do for the batch: the engine
	// commits it without a Write (a source reporting entries it found
	// already mirrored, say).
	Empty() bool
}

// Unwritten counts entries acknowledged without being written, by reason.
type Unwritten struct {
	// Skipped entries were refused by the destination, or could not be
	// decoded, and the run's error policy goes past them.
	Skipped int64
	// DeadLettered entries were copied to the dead-letter stream instead.
	DeadLettered int64
	// Present entries were already at the destination: written by an
	// earlier run that stopped before its checkpoint (found by a
	// read-back, or kept entry IDs).
	Present int64
	// Lost entries were gone from the source before they could be
	// mirrored (trimmed, deleted by retention), and the run's gap policy
	// goes past them.
	Lost int64
}

func (u *Unwritten) add(o Unwritten) {
	u.Skipped += o.Skipped
	u.DeadLettered += o.DeadLettered
	u.Present += o.Present
	u.Lost += o.Lost
}

// A positioner is a batch that says where it leaves each stream or
// partition it touched; the observer's Committed gets them.
type positioner interface {
	Positions() []Position
}

// A Source yields batches and learns when they are safe to forget.
type Source[B Batch] interface {
	// Next blocks until a batch is ready, ctx is done, or (one-shot) the
	// snapshot taken at start is exhausted, which it reports as io.EOF. An
	// empty batch is allowed and skipped; it lets a source report progress
	// (such as entries it found already mirrored) through Commit.
	Next(ctx context.Context) (B, error)
	// Commit is called once for each batch (or CommitMany once for
	// consecutive batches, when the source has it), in the order Next
	// returned them, and only after the Sink confirmed those batches and
	// all before them.
	// It must be idempotent: after a failure it may be called again.
	Commit(ctx context.Context, b B) error
}

// manyCommitter is a Source that can commit consecutive batches at once.
// When a batch is confirmed, the engine commits with it the batches after
// it that are confirmed too: a source whose commit is a round trip then
// keeps up with many small batches (a follow run at a steady rate).
type manyCommitter[B Batch] interface {
	CommitMany(ctx context.Context, batches []B) error
}

// A Sink makes batches durable at the destination.
type Sink[B Batch] interface {
	// Write starts making b durable and calls done exactly once: with nil
	// when every entry of b is confirmed, or with the error that stopped
	// it. Write is called in batch order from one goroutine; it may block
	// to apply backpressure and may call done before it returns.
	Write(ctx context.Context, b B, done func(error))
}

// Options tune an engine run.
type Options struct {
	// MaxInFlight is how many batches may be written but not yet
	// committed. More hides more latency; memory grows with it.
	MaxInFlight int
	// DrainTimeout bounds how long a stopping run waits for batches in
	// flight to be confirmed before it abandons them (they stay
	// unacknowledged at the source and are mirrored again on restart).
	DrainTimeout time.Duration
	// RetryFor is how long a transient failure (see Transient) is retried
	// with backoff before the run fails. Zero retries forever (follow).
	RetryFor time.Duration
	// Logger receives retries and stops. Nil logs nothing.
	Logger *slog.Logger
	// Observer watches the run's commits and retries; nil watches
	// nothing.
	Observer *Observer
	// Before is what earlier runs of the same mirror did in this process
	// (a run set up again): the observer's totals go on from it. The
	// stats Run returns are this run's own.
	Before Stats
}

// Defaults for Options fields left zero.
const (
	// DefaultMaxInFlight keeps enough batches moving to overlap a read,
	// a write and a commit.
	DefaultMaxInFlight = 4
	// DefaultDrainTimeout leaves room, within the few seconds a service
	// manager waits after SIGTERM, to confirm what is in flight.
	DefaultDrainTimeout = 4 * time.Second
)

// Stats are the running totals of a run: committed entries only.
type Stats struct {
	// Entries written to the destination, and their payload.
	Entries int64
	Bytes   int64
	// Unwritten counts the entries acknowledged without being written.
	Unwritten
	Batches int64
	Elapsed time.Duration
	// Trimmed counts entries the run removed from its source once they
	// were mirrored (redis-to-kafka's TrimSource).
	Trimmed int64
}

// Add adds o's counts to s; the elapsed time is the longer of the two.
func (s *Stats) Add(o Stats) {
	s.Entries += o.Entries
	s.Bytes += o.Bytes
	s.Unwritten.add(o.Unwritten)
	s.Batches += o.Batches
	s.Trimmed += o.Trimmed
	s.Elapsed = max(s.Elapsed, o.Elapsed)
}

// Rate is entries per second over the run.
func (s Stats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Entries) / s.Elapsed.Seconds()
}

// pending is a batch written to the sink and waiting for its confirmation.
type pending[B Batch] struct {
	batch B
	ack   chan error
}

// run is one engine run: the read loop (Run's own goroutine), the writer,
// the committer and the drain watch, and what they share.
type run[B Batch] struct {
	src     Source[B]
	sink    Sink[B]
	many    manyCommitter[B] // src, when it commits several batches at once
	opt     Options
	log     *slog.Logger
	retrier Retrier
	start   time.Time

	// work outlives the caller's ctx: once that ends, reading stops but
	// in-flight writes and commits may finish, up to DrainTimeout.
	work    context.Context
	abandon context.CancelCauseFunc

	statsMu sync.Mutex
	stats   Stats
	failMu  sync.Mutex
	failure error

	// inflight holds the batches read, in order, until committed;
	// toWrite those not yet handed to the sink. committed closes when the
	// committer is done, written when the writer is.
	inflight  chan pending[B]
	toWrite   chan pending[B]
	committed chan struct{}
	written   chan struct{}
}

// Run moves batches from src to sink until src reports io.EOF (a finished
// one-shot run, returning nil), ctx is done (a stopped follow run, returning
// ctx's error after draining what was in flight), or a failure.
//
// Whatever happens, a batch is committed only after it and every batch
// before it were confirmed by the sink.
func Run[B Batch](ctx context.Context, src Source[B], sink Sink[B], opt Options) (Stats, error) {
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = DefaultMaxInFlight
	}
	if opt.DrainTimeout <= 0 {
		opt.DrainTimeout = DefaultDrainTimeout
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &run[B]{src: src, sink: sink, opt: opt, log: log, start: time.Now(),
		retrier:   Retrier{For: opt.RetryFor, Logger: log, Observer: opt.Observer},
		inflight:  make(chan pending[B], opt.MaxInFlight),
		toWrite:   make(chan pending[B], opt.MaxInFlight+1),
		committed: make(chan struct{}),
		written:   make(chan struct{}),
	}
	r.many, _ = any(src).(manyCommitter[B])
	r.work, r.abandon = context.WithCancelCause(context.WithoutCancel(ctx))
	defer r.abandon(nil)

	// reading is cancelled on a failure too, so Next does not block on.
	reading, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go func() {
		select {
		case <-r.work.Done():
			stopReading()
		case <-reading.Done():
		}
	}()
	go r.watchDrain(ctx)
	go r.commitLoop()
	go r.writeLoop()

	readErr := r.readLoop(reading)
	close(r.toWrite)
	close(r.inflight)
	<-r.committed
	// Sinks are closed once Run returns: no Write may still be running.
	<-r.written

	r.statsMu.Lock()
	r.stats.Elapsed = time.Since(r.start)
	final := r.stats
	r.statsMu.Unlock()

	if err := r.failed(); err != nil && !errors.Is(err, errDrainTimeout) {
		return final, err
	}
	switch {
	case errors.Is(readErr, io.EOF):
		return final, nil
	case ctx.Err() != nil && errors.Is(readErr, ctx.Err()):
		return final, ctx.Err()
	case readErr != nil && !errors.Is(readErr, context.Canceled):
		return final, readErr
	case ctx.Err() != nil:
		return final, ctx.Err()
	}
	return final, readErr
}

// fail records the run's first failure and abandons what is in flight.
func (r *run[B]) fail(err error) {
	r.failMu.Lock()
	if r.failure == nil {
		r.failure = err
	}
	r.failMu.Unlock()
	r.abandon(err)
}

func (r *run[B]) failed() error {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.failure
}

// count adds the batches of one commit to the stats and tells the
// observer.
func (r *run[B]) count(group ...B) {
	var c Commit
	for _, b := range group {
		c.Batch.Entries += int64(b.Len())
		c.Batch.Bytes += int64(b.Bytes())
		c.Batch.Unwritten.add(b.Unwritten())
		c.Batch.Batches++
		if p, ok := any(b).(positioner); ok && r.opt.Observer != nil && r.opt.Observer.Committed != nil {
			c.batches = append(c.batches, p)
		}
	}
	r.statsMu.Lock()
	r.stats.Add(c.Batch)
	r.stats.Elapsed = time.Since(r.start)
	c.Totals = r.opt.Before
	c.Totals.Add(r.stats)
	c.Totals.Elapsed = r.opt.Before.Elapsed + r.stats.Elapsed
	r.statsMu.Unlock()
	c.Batch.Elapsed = 0
	r.opt.Observer.committed(c)
}

// watchDrain gives in-flight batches DrainTimeout, once ctx ends, to be
// confirmed and committed; then they are abandoned (and mirrored again on
// restart). The clock starts at the stop, not when the read loop notices
// it: the loop may itself be blocked in a Write that waits for a stalled
// destination.
func (r *run[B]) watchDrain(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-r.committed:
		return
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrAbandon) {
		r.abandon(cause)
		return
	}
	select {
	case <-r.committed:
	case <-time.After(r.opt.DrainTimeout):
		r.log.Warn("abandoning batches still in flight; they stay unacknowledged and are mirrored again on restart", "waited", r.opt.DrainTimeout)
		r.abandon(errDrainTimeout)
	}
}

// commitLoop commits the batches in the order they were read, each once
// the sink confirmed it and every batch before it; confirmed batches that
// follow one join its commit. It stops at the first failure.
func (r *run[B]) commitLoop() {
	defer close(r.committed)
	var held *pending[B] // taken from inflight while grouping, its turn next
	for {
		var p pending[B]
		if held != nil {
			p, held = *held, nil
		} else {
			var ok bool
			if p, ok = <-r.inflight; !ok {
				return
			}
		}
		var err error
		select {
		case err = <-p.ack:
		case <-r.work.Done():
			err = context.Cause(r.work)
		}
		if err != nil {
			r.commitConfirmedPart(p.batch, err)
			r.fail(err)
			// Later batches may be confirmed too, but committing them
			// would skip past this one: leave them all.
			r.opt.Observer.inFlight(-1)
			r.drain()
			return
		}
		var group []B
		group, held = r.gather(p.batch)
		commit := func() error { return r.src.Commit(r.work, group[0]) }
		if len(group) > 1 {
			commit = func() error { return r.many.CommitMany(r.work, group) }
		}
		if err := r.retrier.Do(r.work, "commit", commit); err != nil {
			r.fail(err)
			left := len(group)
			if held != nil {
				left++
			}
			r.opt.Observer.inFlight(-left)
			r.drain()
			return
		}
		r.count(group...)
		r.opt.Observer.inFlight(-len(group))
	}
}

// drain takes, once the run failed, the batches left in inflight and
// those the read loop still adds until it notices.
func (r *run[B]) drain() {
	for range r.inflight {
		r.opt.Observer.inFlight(-1)
	}
}

// gather is first and the batches after it that are confirmed already,
// up to MaxInFlight, to commit together when the source can; held is the
// next batch taken from inflight that could not join, its turn next.
func (r *run[B]) gather(first B) (group []B, held *pending[B]) {
	group = []B{first}
	for r.many != nil && len(group) < r.opt.MaxInFlight {
		select {
		case q, ok := <-r.inflight:
			if !ok {
				return group, nil
			}
			select {
			case qerr := <-q.ack:
				if qerr == nil {
					group = append(group, q.batch)
					continue
				}
				q.ack <- qerr // its failure is handled on its turn
			default:
			}
			return group, &q
		default:
			return group, nil
		}
	}
	return group, nil
}

// commitConfirmedPart commits, of a batch that failed with err, the
// prefix the sink confirmed before the failure, so the checkpoint stops
// right before the failed entry.
func (r *run[B]) commitConfirmedPart(b B, err error) {
	var partial *PartialError
	if !errors.As(err, &partial) || partial.Confirmed <= 0 {
		return
	}
	pb, ok := any(b).(interface{ Prefix(int) B })
	if !ok {
		return
	}
	prefix := pb.Prefix(partial.Confirmed)
	if cerr := r.retrier.Do(r.work, "commit", func() error { return r.src.Commit(r.work, prefix) }); cerr != nil {
		r.log.Error("could not commit the confirmed part of a failed batch", "err", cerr)
		return
	}
	r.count(prefix)
}

// writeLoop hands batches to the sink while the read loop reads the next
// one: a source's read is a round trip, and building a batch's writes
// costs CPU, so doing both in turn would leave each waiting for the other.
// Batches reach it in read order, so Write is still called in order, from
// one goroutine.
func (r *run[B]) writeLoop() {
	defer close(r.written)
	for p := range r.toWrite {
		if r.work.Err() != nil {
			p.ack <- context.Cause(r.work)
			continue
		}
		r.sink.Write(r.work, p.batch, func(err error) { p.ack <- err })
	}
}

// readLoop reads batches until the source ends, fails, or reading is
// cancelled, and returns why it stopped. Unwritten batches are in inflight
// or held by the committer, which waits for their ack: at most
// MaxInFlight+1, so sending to toWrite never blocks.
func (r *run[B]) readLoop(reading context.Context) error {
	for {
		var b B
		err := r.retrier.Do(reading, "read", func() error {
			var err error
			b, err = r.src.Next(reading)
			return err
		})
		if err != nil {
			return err
		}
		p := pending[B]{batch: b, ack: make(chan error, 1)}
		// Counted before the committer can see it, so the sum never
		// goes below zero.
		r.opt.Observer.inFlight(1)
		select {
		case r.inflight <- p:
		case <-reading.Done():
			r.opt.Observer.inFlight(-1)
			return reading.Err()
		}
		if b.Empty() {
			p.ack <- nil
			continue
		}
		r.toWrite <- p
	}
}

// PartialError reports that a sink confirmed only the first Confirmed
// entries of a batch before Err stopped it; the engine commits that prefix
// so the checkpoint stops right before the failed entry.
type PartialError struct {
	Confirmed int
	Err       error
}

func (e *PartialError) Error() string { return e.Err.Error() }
func (e *PartialError) Unwrap() error { return e.Err }

var errDrainTimeout = errors.New("stopped before in-flight batches were confirmed")

// ErrAbandon, as the cause of the context given to Run (see
// context.WithCancelCause), stops a run without draining: batches in flight
// are abandoned at once rather than confirmed and committed. A mirror that
// lost its lease uses it, since another process may already be taking over.
var ErrAbandon = errors.New("run abandoned")

// transientError marks a failure worth retrying: a connection lost, a
// server restarting, a timeout.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// Transient marks err as worth retrying with backoff; the engine retries it
// for Options.RetryFor before giving up. Nil stays nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

// IsTransient reports whether err was marked with Transient.
func IsTransient(err error) bool {
	var t transientError
	return errors.As(err, &t)
}

// Backoff bounds for retries.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// A Retrier retries transient failures (see Transient) with backoff.
type Retrier struct {
	// For is how long a transient failure is retried before the step
	// fails with it; zero retries until ctx ends.
	For time.Duration
	// Logger logs each retry; nil logs nothing.
	Logger *slog.Logger
	// Observer is told of each retry; nil tells nobody.
	Observer *Observer
}

// Do calls fn until it succeeds, fails for good, ctx ends, or a transient
// failure lasted longer than r.For. step names what fn does ("read",
// "write", "commit") in the log and to the observer.
func (r Retrier) Do(ctx context.Context, step string, fn func() error) error {
	limit, log := r.For, r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var first time.Time
	backoff := minBackoff
	for {
		err := fn()
		if err == nil || !IsTransient(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if first.IsZero() {
			first = time.Now()
		}
		if limit > 0 && time.Since(first) >= limit {
			return fmt.Errorf("gave up after retrying for %s: %w", limit.Round(time.Second), err)
		}
		log.Warn("retrying", "step", step, "in", backoff, "err", err)
		r.Observer.retrying(Retry{Step: step, Wait: backoff, Err: err})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// mergePositions adds next to positions, a later position of a stream or
// partition replacing an earlier one.
func mergePositions(positions, next []Position) []Position {
	for _, p := range next {
		replaced := false
		for i := range positions {
			q := &positions[i]
			if q.Stream == p.Stream && q.Topic == p.Topic && q.Partition == p.Partition {
				if p.Source && q.Source {
					p.Entries += q.Entries // counted over the batches
				}
				*q, replaced = p, true
				break
			}
		}
		if !replaced {
			positions = append(positions, p)
		}
	}
	return positions
}
