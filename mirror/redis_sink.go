package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
)

// RedisSink writes kafka-to-redis batches: per destination stream, the
// entries and the checkpoint move in one checked transaction, all streams
// of a batch in one pipeline (checkpoint.ApplyK2R). Built by NewK2R.
//
// Batches are applied in order by one goroutine, so the reader decodes the
// next batch while Redis applies this one; batches that queued up meanwhile
// go together, in one round trip. A batch whose step failed for a
// transient reason (connection lost, server loading) is retried with
// backoff: the compare-and-set makes a retry of an applied step a no-op.
type RedisSink struct {
	c          rueidis.Client
	opt        checkpoint.K2ROptions
	deadStream string
	retryFor   time.Duration
	log        *slog.Logger
	redisName  string

	start   sync.Once
	jobs    chan sinkJob
	wg      sync.WaitGroup
	failure error // owned by the writer goroutine

	present atomic.Int64
}

type sinkJob struct {
	ctx  context.Context
	b    *K2RBatch
	step *checkpoint.K2RStep // nil: no entries to write
	done func(error)
}

// Write queues b; done is called once it is applied or failed.
func (s *RedisSink) Write(ctx context.Context, b *K2RBatch, done func(error)) {
	s.start.Do(func() {
		s.jobs = make(chan sinkJob, maxGroup)
		s.wg.Add(1)
		go s.run()
	})
	if ctx.Err() != nil {
		done(context.Cause(ctx))
		return
	}
	// Built here, on the engine's writer goroutine, while the sink's
	// goroutine waits for Redis to apply the batches before.
	j := sinkJob{ctx: ctx, b: b, done: done}
	if len(b.writes) > 0 {
		j.step = checkpoint.NewK2RStep(s.c, s.opt, b.writes, time.Now())
	}
	select {
	case s.jobs <- j:
	case <-ctx.Done():
		done(ctx.Err())
	}
}

// maxGroup is how many queued batches go to Redis in one round trip. While
// Redis applies one batch's transaction, the commands of the next are
// already in its input buffer, instead of a round trip and the client's
// work on the reply leaving it idle between batches.
const maxGroup = 4

func (s *RedisSink) run() {
	defer s.wg.Done()
	group := make([]sinkJob, 0, maxGroup)
	for j := range s.jobs {
		group = append(group[:0], j)
	queued:
		for len(group) < maxGroup {
			select {
			case j, ok := <-s.jobs:
				if !ok {
					break queued
				}
				group = append(group, j)
			default:
				break queued
			}
		}
		s.apply(group)
	}
}

// apply writes a group of batches in order and calls their done.
func (s *RedisSink) apply(group []sinkJob) {
	if s.failure != nil {
		// A later batch starts where the failed one should have left
		// the checkpoint: it can only conflict.
		for _, j := range group {
			j.done(s.failure)
		}
		return
	}
	ctx := group[0].ctx
	var failedAt int
	err := retry(ctx, s.retryFor, s.log, "write", func() error {
		var err error
		failedAt, err = s.write(ctx, group)
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

// Close waits for the writer goroutine; call it after Run returned.
func (s *RedisSink) Close() {
	if s.jobs != nil {
		close(s.jobs)
		s.wg.Wait()
	}
}

// Present is how many entries --preserve-ids found already in their
// streams (an ID at or below the top) and did not write again.
func (s *RedisSink) Present() int64 { return s.present.Load() }

// write applies the group's batches in one pipeline and returns the index
// of the first batch that failed with its error.
func (s *RedisSink) write(ctx context.Context, group []sinkJob) (failedAt int, err error) {
	// Dead letters go first, in their own round trip: if the step below
	// then fails or the process dies, they are written again on the retry
	// or restart (at least once), but never lost.
	for _, j := range group {
		if b := j.b; len(b.dead) > 0 && !b.deadWritten {
			if err := s.writeDead(ctx, b.dead); err != nil {
				// No batch of the group was written yet.
				return 0, err
			}
			b.deadWritten = true
		}
	}
	var steps []*checkpoint.K2RStep
	for _, j := range group {
		if j.step != nil {
			steps = append(steps, j.step)
		}
	}
	if len(steps) == 0 {
		return len(group), nil
	}
	results, err := checkpoint.ApplyK2R(ctx, s.c, steps...)
	// Count what was applied even if another write failed: a retry
	// reports those as replayed.
	for _, r := range results {
		s.present.Add(r.Present)
	}
	if err == nil {
		return len(group), nil
	}
	at := 0
	for i, j := range group {
		if j.step == nil {
			continue
		}
		n := len(j.step.Writes())
		for _, r := range results[at : at+n] {
			if r.Err != nil {
				return i, s.classify(ctx, r.Err)
			}
		}
		at += n
	}
	return 0, s.classify(ctx, err)
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

// classify marks what is worth retrying: the connection, a server busy
// loading or failing over. A refused step (conflict, damaged checkpoint,
// wrong key type) is final.
func (s *RedisSink) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	var conflict *checkpoint.ConflictError
	if errors.As(err, &conflict) || errors.Is(err, checkpoint.ErrCorrupt) {
		return err
	}
	if errors.Is(err, checkpoint.ErrCheckpointChanged) {
		// Nothing was written; the retry checks again and tells a
		// conflict from a touch that meant nothing.
		return Transient(err)
	}
	var reply *rueidis.RedisError
	if !errors.As(err, &reply) {
		// A connection failure: name the server it is about.
		err = fmt.Errorf("redis %s: %w", s.redisName, err)
	}
	return classifyRedis(err)
}
