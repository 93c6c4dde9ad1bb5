package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
)

// K2RBatch is what kafka-to-redis moves in one step: per destination stream
// the entries and the partition positions they bring, and the records
// bound for the dead-letter stream.
type K2RBatch struct {
	writes       []*checkpoint.K2RWrite
	dead         []deadLetter
	deadWritten  bool
	entries      int
	skipped      int
	deadLettered int
	bytes        int
}

// Len counts every record the batch accounts for, skipped and
// dead-lettered ones too: a batch of only those must still reach the sink
// to move the checkpoint past them.
func (b *K2RBatch) Len() int { return b.entries + b.skipped + b.deadLettered }

// Bytes is the payload of the entries written to the streams.
func (b *K2RBatch) Bytes() int { return b.bytes }

// deadLetter is a record the format could not decode, bound for the
// dead-letter stream.
type deadLetter struct {
	rec    *kgo.Record
	reason string
}

// BadRecordError is a record its format cannot turn into an entry.
type BadRecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Format    Format
	Err       error
}

func (e *BadRecordError) Error() string {
	return fmt.Sprintf("topic %q partition %d offset %d: cannot decode the record as %s: %v; fix the producer, or use --on-error skip or --on-error dead-letter to go past it",
		e.Topic, e.Partition, e.Offset, e.Format, e.Err)
}
func (e *BadRecordError) Unwrap() error { return e.Err }

// partState is where one partition stands.
type partState struct {
	tp     checkpoint.TopicPartition
	stream int   // index of the destination stream
	next   int64 // next offset to read
	// stored is the position the checkpoint holds once every batch built
	// so far is applied (NoPosition: none yet); the next batch starts
	// from it.
	stored int64
	target int64 // one-shot: the snapshot's end
	done   bool  // one-shot: reached target
	halted bool  // a bad record stopped it (--on-error fail)
	move   int   // index+1 of its move in the batch being built, 0 none
}

// KafkaSource reads the partitions of a kafka-to-redis mirror from the
// positions its checkpoints hold. Built by NewK2R.
type KafkaSource struct {
	cl        *kgo.Client
	parts     map[string]map[int32]*partState
	streams   []string
	mapping   recordMapping
	onError   string
	follow    bool
	batchSize int
	log       *slog.Logger
	remaining int // one-shot: partitions short of their target

	fields  []Field // reused for every record
	touched []*partState
	failure error // a bad record under --on-error fail, returned by the next Next

	skipped, deadLettered atomic.Int64 // committed
}

// Next returns the next batch: up to the batch size of records, decoded.
func (s *KafkaSource) Next(ctx context.Context) (*K2RBatch, error) {
	for {
		if s.failure != nil {
			return nil, s.failure
		}
		if !s.follow && s.remaining == 0 {
			return nil, io.EOF
		}
		fetches := s.cl.PollRecords(ctx, s.batchSize)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if fetches.IsClientClosed() {
			return nil, errors.New("kafka client closed")
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = s.fetchError(t, p, err)
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		b := s.build(fetches)
		if b.Len() > 0 {
			return b, nil
		}
	}
}

func (s *KafkaSource) fetchError(t string, p int32, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st := s.parts[t][p]
	if errors.Is(err, kerr.OffsetOutOfRange) && st != nil {
		return fmt.Errorf("topic %q partition %d: offset %d is no longer in the log: records were deleted (retention) before they were mirrored, or the topic was recreated; restart to see the gap (--on-gap skip accepts it)", t, p, st.next)
	}
	return fmt.Errorf("kafka: fetch topic %q partition %d: %w", t, p, err)
}

// build decodes polled records into a batch.
func (s *KafkaSource) build(fetches kgo.Fetches) *K2RBatch {
	b := &K2RBatch{}
	writes := make([]*checkpoint.K2RWrite, len(s.streams))
	s.touched = s.touched[:0]
	var pause map[string][]int32
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		st := s.parts[fp.Topic][fp.Partition]
		if st == nil || st.halted || st.done {
			return
		}
		for _, r := range fp.Records {
			if r.Offset < st.next {
				continue
			}
			if !s.follow && r.Offset >= st.target {
				break
			}
			if r.Attrs.IsControl() {
				// A transaction marker: nothing to copy, but the
				// position moves past it (stored with the next move).
				st.next = r.Offset + 1
				continue
			}
			fields, id, err := s.mapping.decode(r, s.fields[:0])
			s.fields = fields[:0]
			if err != nil {
				bad := &BadRecordError{Topic: fp.Topic, Partition: fp.Partition, Offset: r.Offset, Format: s.mapping.format, Err: err}
				switch s.onError {
				case OnErrorSkip:
					s.log.Warn("skipping a record that cannot be decoded (--on-error skip)", "topic", fp.Topic, "partition", fp.Partition, "offset", r.Offset, "err", err)
					b.skipped++
				case OnErrorDeadLetter:
					s.log.Warn("dead-lettering a record that cannot be decoded", "topic", fp.Topic, "partition", fp.Partition, "offset", r.Offset, "err", err)
					b.dead = append(b.dead, deadLetter{rec: r, reason: err.Error()})
					b.deadLettered++
				default:
					// What came before it still goes; nothing after.
					if s.failure == nil {
						s.failure = bad
					}
					st.halted = true
					return
				}
				s.moveFor(b, writes, st)
				st.next = r.Offset + 1
				continue
			}
			w := s.moveFor(b, writes, st)
			w.AddEntry(id, len(fields))
			n := 0
			for _, f := range fields {
				w.AddField(f.Name, f.Value)
				n += len(f.Name) + len(f.Value)
			}
			w.Bytes += int64(n)
			b.bytes += n
			b.entries++
			st.next = r.Offset + 1
		}
		if !s.follow && st.next >= st.target {
			// The snapshot end, or records past it, were reached.
			st.done = true
			s.remaining--
			if pause == nil {
				pause = map[string][]int32{}
			}
			pause[fp.Topic] = append(pause[fp.Topic], fp.Partition)
		}
	})
	if pause != nil {
		s.cl.PauseFetchPartitions(pause)
	}
	for _, st := range s.touched {
		w := writes[st.stream]
		w.Moves[st.move-1].To = st.next
		st.stored = st.next
		st.move = 0
	}
	for _, w := range writes {
		if w != nil {
			b.writes = append(b.writes, w)
		}
	}
	return b
}

// moveFor returns the write of st's stream in b, with a move for st.
func (s *KafkaSource) moveFor(b *K2RBatch, writes []*checkpoint.K2RWrite, st *partState) *checkpoint.K2RWrite {
	w := writes[st.stream]
	if w == nil {
		w = &checkpoint.K2RWrite{Stream: s.streams[st.stream]}
		writes[st.stream] = w
	}
	if st.move == 0 {
		w.Moves = append(w.Moves, checkpoint.K2RMove{Partition: st.tp, From: st.stored})
		st.move = len(w.Moves)
		s.touched = append(s.touched, st)
	}
	return w
}

// Commit counts what the batch skipped; the positions were already moved
// by the sink, in the same step as the entries.
func (s *KafkaSource) Commit(_ context.Context, b *K2RBatch) error {
	s.skipped.Add(int64(b.skipped))
	s.deadLettered.Add(int64(b.deadLettered))
	return nil
}

// Skipped and DeadLettered count the undecodable records of committed
// batches.
func (s *KafkaSource) Skipped() int64      { return s.skipped.Load() }
func (s *KafkaSource) DeadLettered() int64 { return s.deadLettered.Load() }

// Close stops consuming.
func (s *KafkaSource) Close() {
	if s.cl != nil {
		s.cl.Close()
	}
}
