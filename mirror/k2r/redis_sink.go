package k2r

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// RedisSink writes kafka-to-redis batches, and owns the atomic step that
// makes them exactly once. For each destination stream of a batch (a
// Write), one transaction, guarded by WATCH, does all or nothing of:
//
//   - the entries XADDed to the stream (under PreserveIDs only those the
//     step's check found new, the check reading the stream in the same
//     step);
//   - the partitions' positions compared-and-set in the checkpoint
//     (checkpoint.K2RKey): applied only if it holds where the batch
//     starts, inside the transaction as well as in the check before it,
//     with the running totals and the update time;
//   - the guard key (checkpoint.K2RGuardKey), which the check touches to
//     abort the transaction it refuses, and which marks one to be taken
//     back when the check could not run.
//
// Every stream of the batches sent together goes in one pipeline, and an
// order token (checkpoint.K2ROrderKey) chains the pipelines in flight so
// Redis runs them in order. The step's commands and scripts, the results
// and their errors are in redis_sink_txn.go (newStep, applySteps,
// readResult); this file sends the steps, confirms them in order, and
// turns a refusal into what it means (resolve, wentBack, classify).
//
// Batches that queued up while Redis was busy go together, in one call
// (one round trip). Up to maxCalls calls are in flight at once, each on
// its own connection and chained so that Redis runs them in order
// (callOrder): Redis goes from one call's transactions straight
// to the next, instead of idling for a round trip and for the client's
// work on each reply. A call that failed for a transient reason
// (connection lost, server loading) is applied again with backoff,
// together with every call after it: the compare-and-set makes a retry of
// an applied write a no-op. Built by setUp.
type RedisSink struct {
	c   rueidis.Client
	opt stepOptions
	// onError handles, under PreserveIDs, an entry whose ID is below
	// the stream's top and not in it, as a record that cannot be decoded.
	onError    string
	deadStream string
	retryFor   time.Duration
	observer   *mirror.Observer // told of each retry
	log        *slog.Logger
	redisName  string
	// ordered: the server lets calls be chained (checkOrderAccess);
	// else one call at a time.
	ordered bool
	// chainedCallTimeout bounds a call chained to another, its wait
	// included; zero is defaultChainedCallTimeout.
	chainedCallTimeout time.Duration

	start     sync.Once
	closeOnce sync.Once
	jobs      chan sinkJob
	wg        sync.WaitGroup
	failure   error  // owned by the writer goroutine
	run       string // tells this run's order tokens apart
	seq       uint64 // of the last order token

	// lastIDs holds, per stream, the highest entry ID this sink added:
	// whether Redis still has it tells a checkpoint that went back with
	// its stream (Redis lost writes) from one moved back alone.
	lastMu  sync.Mutex
	lastIDs map[string]string
	// listIDs (PreserveIDs) holds the streams whose last write was
	// not all new: the next one has the check classify its entries at
	// once, rather than first try them all as new (a replay is then two
	// round trips a batch, not three).
	listIDs sync.Map
}

type sinkJob struct {
	ctx  context.Context
	b    *Batch
	step *step // nil: no entries to write
	done func(error)
}

// sinkCall is a group of batches written in one call.
type sinkCall struct {
	jobs     []sinkJob
	order    callOrder
	finished chan struct{} // closed once failedAt and err are set
	failedAt int           // index of the first job not applied
	err      error
}

// Write queues b; done is called once it is applied or failed.
func (s *RedisSink) Write(ctx context.Context, b *Batch, done func(error)) {
	s.start.Do(func() {
		s.jobs = make(chan sinkJob, maxGroup)
		s.run = strconv.FormatInt(time.Now().UnixNano(), 36)
		s.wg.Add(1)
		go s.loop()
	})
	if ctx.Err() != nil {
		done(context.Cause(ctx))
		return
	}
	// Built here, on the engine's writer goroutine, while the sink's
	// goroutine waits for Redis to apply the batches before.
	j := sinkJob{ctx: ctx, b: b, done: done}
	if s.opt.PreserveIDs {
		for _, w := range b.writes {
			if _, ok := s.listIDs.Load(w.Stream); ok {
				w.Expect(nil, "")
			}
		}
	}
	if len(b.writes) > 0 {
		j.step = s.newStep(b.writes, time.Now())
	}
	select {
	case s.jobs <- j:
	case <-ctx.Done():
		done(ctx.Err())
	}
}

const (
	// maxGroup is how many queued batches go to Redis in one call.
	maxGroup = 4
	// maxCalls is how many calls may be in flight at once: with three,
	// Redis has the next call's commands waiting while the client reads
	// the replies of one and sends another. (Writing prebuilt batches,
	// three in flight keep Redis about 0.95 busy against 0.75 for one
	// at a time.)
	maxCalls = 3
	// defaultChainedCallTimeout bounds a call that waits for the one
	// before: the wait itself (5 s at most) and then a reply, as the
	// client's write timeout bounds every other call.
	defaultChainedCallTimeout = 20 * time.Second
)

// loop sends the queued batches as calls and confirms them in order.
func (s *RedisSink) loop() {
	defer s.wg.Done()
	var inflight []*sinkCall
	jobs := s.jobs
	depth := 1
	if s.ordered {
		depth = maxCalls
	}
	for jobs != nil || len(inflight) > 0 {
		var next <-chan sinkJob
		if jobs != nil && len(inflight) < depth {
			next = jobs
		}
		var oldest chan struct{}
		if len(inflight) > 0 {
			oldest = inflight[0].finished
		}
		select {
		case j, ok := <-next:
			if !ok {
				jobs = nil
				continue
			}
			group := []sinkJob{j}
		queued:
			for len(group) < maxGroup {
				select {
				case j, ok := <-jobs:
					if !ok {
						jobs = nil
						break queued
					}
					group = append(group, j)
				default:
					break queued
				}
			}
			if hasDeadLetters(group) {
				// Dead letters are written in the order of their
				// batches: the calls before go first.
				for len(inflight) > 0 {
					inflight = s.settle(inflight)
				}
			}
			if s.failure != nil {
				// A later batch starts where the failed one should
				// have left the checkpoint: it can only conflict.
				for _, j := range group {
					j.done(s.failure)
				}
				continue
			}
			inflight = append(inflight, s.send(group, inflight))
		case <-oldest:
			inflight = s.settle(inflight)
		}
	}
}

func hasDeadLetters(group []sinkJob) bool {
	for _, j := range group {
		if len(j.b.dead) > j.b.deadDone {
			return true
		}
	}
	return false
}

// send starts a call writing group, chained to the last call in flight
// that writes anything.
func (s *RedisSink) send(group []sinkJob, inflight []*sinkCall) *sinkCall {
	c := &sinkCall{jobs: group, finished: make(chan struct{})}
	if s.ordered {
		for i := len(inflight) - 1; i >= 0; i-- {
			if p := inflight[i]; p.order.Token != "" {
				select {
				case <-p.finished:
					// Its commands all ran: nothing to wait for.
				default:
					c.order.After = p.order.Token
				}
				break
			}
		}
		for _, j := range group {
			if j.step != nil {
				s.seq++
				c.order.Token = checkpoint.K2ROrderKey(s.opt.Name, s.run, s.seq)
				break
			}
		}
	}
	go func() {
		defer close(c.finished)
		ctx := group[0].ctx
		timeout := s.chainedCallTimeout
		if timeout <= 0 {
			timeout = defaultChainedCallTimeout
		}
		if c.order.After != "" {
			// A call with a wait runs on a connection of its own with
			// no read deadline: bound it, so a stalled server fails it
			// (to be retried) as it fails any other call. The bound is
			// a timer that cancels, not a deadline: rueidis sets a
			// context's deadline on the socket of such a connection and
			// then ignores its cancellation, so a run stopping while
			// Redis stalls would wait the whole timeout for it. Without
			// a deadline the call ends as soon as the run abandons it.
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
			stop := time.AfterFunc(timeout, cancel)
			defer stop.Stop()
		}
		c.failedAt, c.err = s.write(ctx, group, c.order)
		if c.err != nil && group[0].ctx.Err() == nil && ctx.Err() != nil {
			c.err = fmt.Errorf("redis %s: no reply to a write within %s: %w", s.redisName, timeout, c.err)
		}
	}()
	return c
}

// settle waits for the oldest call in flight and confirms its batches. If
// it failed, it waits for the others too and applies everything from the
// failed batch on again, in one call; it returns the calls still in
// flight.
func (s *RedisSink) settle(inflight []*sinkCall) []*sinkCall {
	c := inflight[0]
	<-c.finished
	if c.err == nil {
		for _, j := range c.jobs {
			j.done(nil)
		}
		return inflight[1:]
	}
	ctx := c.jobs[0].ctx
	switch {
	case ctx.Err() != nil:
	case errors.Is(c.err, errIDsChecked), errors.As(c.err, new(*IDBelowTopError)):
		// Not a failure: the calls after it went out before it was
		// known that it must be applied again.
		s.log.Debug("applying a write again as its entry IDs were found, with the writes after it", "batches", len(c.jobs)-c.failedAt, "err", c.err)
	default:
		s.log.Warn("write failed; applying it again with the writes after it", "batches", len(c.jobs)-c.failedAt, "err", c.err)
	}
	var tokens []string
	for _, c := range inflight {
		if c.order.Token != "" {
			tokens = append(tokens, c.order.Token)
		}
	}
	// The calls after this one may be waiting for it (or for each other):
	// let them end now. Whatever they did, or do, is checked again below.
	if err := s.releaseOrder(ctx, tokens...); err != nil {
		s.log.Debug("releasing the calls after a failed write", "err", err)
	}
	var rest []sinkJob
	for i, j := range c.jobs {
		if i < c.failedAt {
			j.done(nil)
			continue
		}
		rest = append(rest, j)
	}
	var unchecked error
	if errors.Is(c.err, ErrWrittenUnchecked) {
		unchecked = c.err
	}
	for _, later := range inflight[1:] {
		<-later.finished
		rest = append(rest, later.jobs...)
		if unchecked == nil && errors.Is(later.err, ErrWrittenUnchecked) {
			unchecked = later.err
		}
	}
	if unchecked != nil {
		// Applying it again would find it a replay and say nothing of
		// the entries it may have added twice.
		s.failure = unchecked
		for _, j := range rest {
			j.done(unchecked)
		}
		return nil
	}
	// Applied again even when the failure looks final: a call sent while
	// others were in flight may have run before one of them (its
	// predecessor's wait timed out) and found a position that was about
	// to move. Alone, a write's answer is reliable.
	s.apply(rest)
	return nil
}

// apply writes a group of batches in one call, retrying it as a whole while
// it fails for a transient reason, and calls their done.
func (s *RedisSink) apply(group []sinkJob) {
	ctx := group[0].ctx
	var failedAt int
	err := mirror.Retrier{For: s.retryFor, Logger: s.log, Observer: s.observer}.Do(ctx, "write", func() error {
		var err error
		failedAt, err = s.write(ctx, group, callOrder{})
		return err
	})
	if err == nil {
		failedAt = len(group)
	}
	// Batches before the failed one were applied; it and those after
	// are reported failed (some may have been applied too, which the
	// checkpoint records: a restart finds them done).
	for i, j := range group {
		if i < failedAt {
			j.done(nil)
			continue
		}
		s.failure = err
		j.done(err)
	}
}

// Close waits for the writer goroutine, until ctx is done; call it after
// Run returned. Writes still in flight then were abandoned by the run (their
// context ended): each applies its entries together with its checkpoint or
// not at all, so leaving them is as safe as a crash.
func (s *RedisSink) Close(ctx context.Context) {
	if s.jobs == nil {
		return
	}
	s.closeOnce.Do(func() { close(s.jobs) })
	ended := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
	case <-ctx.Done():
	}
}

// errIDsChecked marks a write refused because its entry IDs were not all
// new (PreserveIDs): the check said what each one is, the write was
// set to expect that, and applying it again is right.
var errIDsChecked = errors.New("entry IDs checked")

// maxIDRounds bounds how often a write alone is applied again at once
// because the check found its entry IDs otherwise than expected. Up to
// three rounds settle a write (one finds its first ID not above the top,
// one learns what each entry is, one applies it); more mean another client
// keeps writing to the stream, and the write is retried with backoff.
const maxIDRounds = 4

// write applies the group's batches in one pipeline and returns the index
// of the first batch that failed with its error. A batch refused as its
// entry IDs were checked is applied again at once when the call is alone
// (no order); chained to others, the call fails and settle applies it
// again with the calls after it.
func (s *RedisSink) write(ctx context.Context, group []sinkJob, order callOrder) (failedAt int, err error) {
	// alone: the batch at failedAt goes by itself, as the writes after it
	// can only conflict until it is applied. rounds: since one was.
	alone, rounds := false, 0
	for {
		end := len(group)
		if alone {
			end = failedAt + 1
		}
		n, err := s.writeOnce(ctx, group[failedAt:end], order)
		failedAt += n
		if n > 0 {
			rounds = 0
		}
		switch {
		case errors.Is(err, errIDsChecked) && order == (callOrder{}):
			if rounds++; rounds == maxIDRounds {
				return failedAt, err
			}
			alone = true
		case err != nil || failedAt == len(group):
			return failedAt, err
		default:
			alone = false
		}
	}
}

// writeOnce is one attempt of write.
func (s *RedisSink) writeOnce(ctx context.Context, group []sinkJob, order callOrder) (failedAt int, err error) {
	// Dead letters go first, in their own round trip: if the step below
	// then fails or the process dies, they are written again on the retry
	// or restart (at least once), but never lost.
	for _, j := range group {
		if b := j.b; len(b.dead) > b.deadDone {
			if err := s.writeDead(ctx, b.dead[b.deadDone:]); err != nil {
				// No batch of the group was written yet.
				return 0, err
			}
			b.deadDone = len(b.dead)
		}
	}
	var steps []*step
	for _, j := range group {
		if j.step != nil {
			steps = append(steps, j.step)
		}
	}
	if len(steps) == 0 {
		return len(group), nil
	}
	results, err := s.applySteps(ctx, order, steps...)
	// Count what was applied even if another write failed: a retry
	// reports those as replayed.
	ri := 0
	for _, j := range group {
		if j.step == nil {
			continue
		}
		for wi := range j.step.Writes() {
			if ri < len(results) {
				r := results[ri]
				j.b.present += r.Present
				if r.Err == nil && r.LastID != "" {
					if j.b.lastIDs == nil {
						j.b.lastIDs = make([]string, len(j.b.writes))
					}
					if wi < len(j.b.lastIDs) {
						j.b.lastIDs[wi] = r.LastID
					}
				}
			}
			ri++
		}
	}
	s.noteLastIDs(steps, results)
	// Every write refused for its IDs learns what they are, so that the
	// next attempt applies them all.
	at := 0
	for _, j := range group {
		if j.step == nil {
			continue
		}
		for k := range j.step.Writes() {
			var ids *IDCheckError
			if at+k < len(results) && errors.As(results[at+k].Err, &ids) {
				s.resolve(j.b, k, ids)
			}
		}
		at += len(j.step.Writes())
	}
	at = 0
	for i, j := range group {
		if j.step == nil {
			continue
		}
		n := len(j.step.Writes())
		for k, r := range results[at:min(at+n, len(results))] {
			var ids *IDCheckError
			switch {
			case r.Err == nil:
				continue
			case errors.As(r.Err, &ids):
				return i, mirror.Transient(fmt.Errorf("%w: %v", errIDsChecked, r.Err))
			case order.After != "":
				// It may have run before the call it waited for: a
				// position behind it may be about to move. Alone, it
				// tells (see settle).
				return i, s.classify(ctx, r.Err)
			}
			return i, s.classify(ctx, s.wentBack(ctx, j.step.Writes()[k].Stream, r.Err))
		}
		// Applied; a write cut before an entry below the top
		// (OnErrorFail) now stops the run.
		for k, p := range j.b.preserved {
			if p.failure != nil {
				return i, p.failure
			}
			if w := j.b.writes[k]; !bytes.ContainsFunc(w.Classes(), func(c rune) bool { return c != rune(IDNew) }) {
				s.listIDs.Delete(w.Stream) // all new
			}
		}
		at += n
	}
	if err != nil {
		return 0, s.classify(ctx, err)
	}
	return len(group), nil
}

// resolve handles what the check found of write wi of b (PreserveIDs):
// present entries are not written again; one below the top (not in the
// stream, or another entry there under its ID, and Redis refuses an ID at
// or below the last one) goes by
// OnError: fail cuts the write before it, so the entries before it are
// written and checkpointed and the batch then fails naming it; skip counts
// it; dead-letter stores it first. The write then expects exactly that.
func (s *RedisSink) resolve(b *Batch, wi int, e *IDCheckError) {
	w := b.writes[wi]
	if e.Classes == nil || bytes.ContainsFunc(e.Classes, func(c rune) bool { return c != rune(IDNew) }) {
		s.listIDs.Store(w.Stream, true)
	}
	if e.Classes == nil {
		w.Expect(nil, "")
		return
	}
	p := b.preserved[wi]
	if p.handled == nil {
		p.handled = make([]bool, len(p.recs))
	}
	// What an earlier classification of this write counted is counted
	// anew.
	b.entries += p.skipped + p.dead
	b.skipped -= p.skipped
	b.deadLettered -= p.dead
	b.bytes += int(p.unwritten)
	w.Bytes += p.unwritten
	p.skipped, p.dead, p.unwritten = 0, 0, 0

	classes := e.Classes
	top := e.LastID
	for i, c := range classes {
		switch c {
		case IDNew:
			top = w.ID(i)
			continue
		case IDPresent:
			p.unwritten += w.EntryBytes(i)
			continue
		}
		r := p.recs[i]
		bad := &IDBelowTopError{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, ID: w.ID(i), Stream: w.Stream, Top: top,
			Taken: c == IDTaken}
		if s.onError != mirror.OnErrorSkip && s.onError != mirror.OnErrorDeadLetter {
			// Entries from it on are mirrored again by the next run,
			// which stops at it again; they are not written, nor
			// counted.
			var cut int64
			for j := i; j < w.Entries(); j++ {
				cut += w.EntryBytes(j)
			}
			w.Bytes -= cut
			b.bytes -= int(cut)
			b.entries -= w.Entries() - i
			classes = classes[:i]
			w.Truncate(i)
			for m := range w.Moves {
				w.Moves[m].To = r.Offset
			}
			p.recs, p.handled = p.recs[:i], p.handled[:i]
			p.failure = bad
			break
		}
		p.unwritten += w.EntryBytes(i)
		if s.onError == mirror.OnErrorSkip {
			p.skipped++
			if !p.handled[i] {
				s.log.Warn("skipping an entry that Redis cannot add", "on_error", mirror.OnErrorSkip, "err", bad)
			}
		} else {
			p.dead++
			if !p.handled[i] {
				s.log.Warn("dead-lettering an entry that Redis cannot add", "err", bad)
				b.dead = append(b.dead, deadLetter{rec: r, reason: bad.Error()})
			}
		}
		p.handled[i] = true
	}
	w.Expect(classes, e.State)
	b.entries -= p.skipped + p.dead
	b.skipped += p.skipped
	b.deadLettered += p.dead
	b.bytes -= int(p.unwritten)
	w.Bytes -= p.unwritten
}

func (s *RedisSink) writeDead(ctx context.Context, dead []deadLetter) error {
	cmds := make(rueidis.Commands, 0, len(dead))
	for _, d := range dead {
		r := d.rec
		fv := s.c.B().Xadd().Key(s.deadStream).Id("*").FieldValue().
			FieldValue("reason", d.reason).
			FieldValue("topic", r.Topic).
			FieldValue("partition", strconv.FormatInt(int64(r.Partition), 10)).
			FieldValue("offset", strconv.FormatInt(r.Offset, 10)).
			FieldValue("timestamp_ms", strconv.FormatInt(r.Timestamp.UnixMilli(), 10))
		if r.Key != nil {
			fv = fv.FieldValue("key", string(r.Key))
		}
		if r.Value != nil {
			fv = fv.FieldValue("value", string(r.Value))
		}
		for _, h := range r.Headers {
			fv = fv.FieldValue("header."+h.Key, string(h.Value))
		}
		cmds = append(cmds, fv.Build())
	}
	for _, r := range s.c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return s.classify(ctx, fmt.Errorf("write dead-letter stream %q: %w", s.deadStream, err))
		}
	}
	return nil
}

// noteLastIDs keeps the highest entry ID each applied write added.
func (s *RedisSink) noteLastIDs(steps []*step, results []writeResult) {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	i := 0
	for _, st := range steps {
		for _, w := range st.Writes() {
			if i < len(results) && results[i].Err == nil && results[i].LastID != "" {
				if s.lastIDs == nil {
					s.lastIDs = map[string]string{}
				}
				if old, ok := s.lastIDs[w.Stream]; !ok || mapping.IDLess(old, results[i].LastID) {
					s.lastIDs[w.Stream] = results[i].LastID
				}
			}
			i++
		}
	}
}

// wentBack turns a conflict whose position went back into what it is: a
// *LostWritesError when the stream lost the last entry this
// sink added to it as well (or when it added none, so nothing says the
// positions are not Redis's own), else the conflict, saying which entry
// is still there. Whether the entry is there is one XRANGE, asked only on
// such a conflict.
func (s *RedisSink) wentBack(ctx context.Context, stream string, err error) error {
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !conflict.WentBack() {
		return err
	}
	s.lastMu.Lock()
	last := s.lastIDs[stream]
	s.lastMu.Unlock()
	if last != "" {
		es, xerr := s.c.Do(ctx, s.c.B().Xrange().Key(stream).Start(last).End(last).Count(1).Build()).AsXRange()
		if xerr != nil {
			// Nothing was written: the retry checks it all again.
			return mirror.Transient(fmt.Errorf("redis %s: checkpoint %q went back; looking for entry %s in stream %q: %w", s.redisName, conflict.Key, last, stream, xerr))
		}
		if len(es) > 0 {
			conflict.Stream, conflict.Kept = stream, last
			return err
		}
	}
	return &LostWritesError{Key: conflict.Key, Stream: stream, Partition: conflict.Partition,
		From: conflict.Expected, To: conflict.Stored, Lost: last}
}

// classify marks what is worth retrying: the connection, a server busy
// loading or failing over. A refused step (conflict, damaged checkpoint,
// wrong key type) is final.
func (s *RedisSink) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	var conflict *ConflictError
	var lost *LostWritesError
	if errors.As(err, &conflict) || errors.As(err, &lost) || errors.Is(err, checkpoint.ErrCorrupt) || errors.Is(err, ErrWrongType) {
		return err
	}
	if errors.Is(err, ErrCheckpointChanged) || errors.Is(err, ErrOutOfOrder) {
		// Nothing was written; the retry checks again and tells a
		// conflict from a touch that meant nothing.
		return mirror.Transient(err)
	}
	var reply *rueidis.RedisError
	if !errors.As(err, &reply) {
		// A connection failure: name the server it is about.
		err = fmt.Errorf("redis %s: %w", s.redisName, err)
	}
	return mirror.ClassifyRedis(err)
}
