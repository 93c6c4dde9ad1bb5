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
// entries and the checkpoint move in one atomic script, all streams of a
// batch in one pipeline. Built by NewK2R.
//
// Batches are applied in order by one goroutine, so the reader decodes the
// next batch while Redis applies this one. A batch whose step failed for a
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
	done func(error)
}

// Write queues b; done is called once it is applied or failed.
func (s *RedisSink) Write(ctx context.Context, b *K2RBatch, done func(error)) {
	s.start.Do(func() {
		s.jobs = make(chan sinkJob, 1)
		s.wg.Add(1)
		go s.run()
	})
	select {
	case s.jobs <- sinkJob{ctx, b, done}:
	case <-ctx.Done():
		done(ctx.Err())
	}
}

func (s *RedisSink) run() {
	defer s.wg.Done()
	for j := range s.jobs {
		if s.failure != nil {
			// A later batch starts where the failed one should have
			// left the checkpoint: it can only conflict.
			j.done(s.failure)
			continue
		}
		err := retry(j.ctx, s.retryFor, s.log, "write", func() error { return s.write(j.ctx, j.b) })
		if err != nil {
			s.failure = err
		}
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

func (s *RedisSink) write(ctx context.Context, b *K2RBatch) error {
	// Dead letters go first, in their own round trip: if the step below
	// then fails or the process dies, they are written again on the retry
	// or restart (at least once), but never lost.
	if len(b.dead) > 0 && !b.deadWritten {
		if err := s.writeDead(ctx, b.dead); err != nil {
			return err
		}
		b.deadWritten = true
	}
	if len(b.writes) == 0 {
		return nil
	}
	results, err := checkpoint.ApplyK2R(ctx, s.c, s.opt, b.writes, time.Now())
	// Count what was applied even if another stream failed: a retry
	// reports those as replayed.
	for _, r := range results {
		s.present.Add(r.Present)
	}
	if err != nil {
		return s.classify(ctx, err)
	}
	return nil
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
	var reply *rueidis.RedisError
	if !errors.As(err, &reply) {
		// A connection failure: name the server it is about.
		err = fmt.Errorf("redis %s: %w", s.redisName, err)
	}
	return classifyRedis(err)
}
