package r2k

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// ScanWritten reads back what an interrupted redis-to-kafka run may have
// written after its last checkpoint: every committed record from the
// checkpointed offset of each partition (from) to the partition's end as
// listed when it starts, read_committed. It
// returns the lineage of the records that came from one of streams, as
// "stream\x00id" keys. A partition missing from from (never checkpointed)
// is read from its start.
//
// This is what makes a restart exactly once: a pending entry found here was
// committed to Kafka before the crash and is acknowledged, not written
// again. It must run after the mirror's transactional producer was
// initialised (InitProducer): that fenced every earlier run and aborted
// its open transaction, so no record of theirs can still become visible
// after the scan, and none of an aborted transaction is taken as written.
// It reads to the end, not to the last stable offset: a transaction of
// another producer still open below the end is waited for (bounded by
// ctx), since records of this mirror's committed after it would otherwise
// be missed and sent again.
func ScanWritten(ctx context.Context, clientOpts []kgo.Opt, adm *kadm.Client, topics []string, from map[checkpoint.TopicPartition]int64, streams map[string]bool) (map[string]struct{}, error) {
	ends, err := kafkatopic.EndOffsets(ctx, adm, topics)
	if err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("list start offsets of %v: %w", topics, err))
	}
	assign := map[string]map[int32]kgo.Offset{}
	remaining := map[checkpoint.TopicPartition]int64{} // partition -> end
	for tp, end := range ends {
		begin := int64(0)
		if s, ok := starts.Lookup(tp.Topic, tp.Partition); ok && s.Err == nil {
			begin = s.Offset
		}
		if off, ok := from[tp]; ok && off > begin && off <= end {
			begin = off
		}
		if begin >= end {
			continue
		}
		if assign[tp.Topic] == nil {
			assign[tp.Topic] = map[int32]kgo.Offset{}
		}
		assign[tp.Topic][tp.Partition] = kgo.NewOffset().At(begin)
		remaining[tp] = end
	}
	found := map[string]struct{}{}
	if len(remaining) == 0 {
		return found, nil
	}
	// Control records (transaction markers) are kept so that a partition
	// ending with one is seen to be read to its end.
	cl, err := kgo.NewClient(append(clientOpts, kgo.ConsumePartitions(assign), kgo.FetchMaxWait(100*time.Millisecond), kgo.KeepControlRecords(), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = &ReadBackError{Topic: t, Partition: p, Err: err}
			}
		})
		if ferr != nil {
			if endpoint.IsDenied(ferr) {
				// The ACL is missing; retrying will not grant it.
				return nil, ferr
			}
			return nil, mirror.Transient(ferr)
		}
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			tp := checkpoint.TopicPartition{Topic: fp.Topic, Partition: fp.Partition}
			for _, r := range fp.Records {
				if end, ok := remaining[tp]; ok && r.Offset+1 >= end {
					delete(remaining, tp)
				}
				if r.Attrs.IsControl() {
					continue
				}
				// The exact names only, first occurrence: a user's field
				// never counts (see lineageIndex).
				si, ii := mapping.LineageIndex(r.Headers)
				if si < 0 || ii < 0 {
					continue
				}
				stream, id := r.Headers[si].Value, r.Headers[ii].Value
				if len(stream) > 0 && len(id) > 0 && streams[string(stream)] {
					found[string(stream)+"\x00"+string(id)] = struct{}{}
				}
			}
		})
	}
	return found, nil
}

// ReadBackError is a partition the read-back could not fetch.
type ReadBackError struct {
	Topic     string
	Partition int32
	Err       error
}

func (e *ReadBackError) Error() string {
	return fmt.Sprintf("read back %s/%d to find what is already mirrored: %v", e.Topic, e.Partition, e.Err)
}

func (e *ReadBackError) Unwrap() error { return e.Err }
