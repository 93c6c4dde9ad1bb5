package k2r

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
)

// Inspect is the status of kafka-to-redis mirror f as Redis and Kafka tell
// it now: its checkpoints (one per destination stream), its lease and, per
// source partition, its lag: the partition's end offset minus the next
// offset the mirror reads there. For a partition written with
// transactions the lag counts offsets, and so the transactions' markers
// with the records: an upper bound.
func Inspect(ctx context.Context, rc rueidis.Client, adm *kadm.Client, f checkpoint.Found, now time.Time) (mirror.Status, error) {
	st := mirror.Status{Kind: checkpoint.KindKafkaToRedis, Name: f.Name}
	streamOf := map[string]string{} // checkpoint key -> its stream
	if d := f.Descriptor; d != nil {
		st.Source, st.Destination, st.Format, st.Described = d.Source, d.Destination, d.Format, true
		for _, s := range d.Streams {
			streamOf[checkpoint.K2RKey(f.Name, s)] = s
		}
	}
	var updated time.Time
	positions := map[checkpoint.TopicPartition]mirror.PositionStatus{}
	for _, key := range f.Checkpoints {
		ck, found, err := checkpoint.LoadK2RKey(ctx, rc, key)
		if err != nil {
			return st, err
		}
		if !found {
			continue
		}
		st.Entries += ck.Entries
		st.Bytes += ck.Bytes
		if ck.Updated.After(updated) {
			updated = ck.Updated
		}
		for tp, next := range ck.Partitions {
			positions[tp] = mirror.PositionStatus{Stream: streamOf[key], Topic: tp.Topic, Partition: tp.Partition, Offset: next}
		}
	}
	if !updated.IsZero() {
		st.Checkpointed = &updated
	}
	if err := st.ReadLease(ctx, rc); err != nil {
		return st, err
	}
	tps := slices.SortedFunc(maps.Keys(positions), func(a, b checkpoint.TopicPartition) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	topics := map[string]bool{}
	for _, tp := range tps {
		topics[tp.Topic] = true
	}
	var ends kadm.ListedOffsets
	if len(topics) > 0 {
		var err error
		ends, err = adm.ListEndOffsets(ctx, slices.Sorted(maps.Keys(topics))...)
		if err != nil {
			return st, fmt.Errorf("list the end offsets of topics %v: %w", slices.Sorted(maps.Keys(topics)), err)
		}
	}
	for _, tp := range tps {
		p := positions[tp]
		end, ok := ends.Lookup(tp.Topic, tp.Partition)
		switch {
		case !ok || errors.Is(end.Err, kerr.UnknownTopicOrPartition):
			p.Note = "partition does not exist"
		case end.Err != nil:
			return st, fmt.Errorf("list the end offset of topic %q partition %d: %w", tp.Topic, tp.Partition, end.Err)
		case p.Offset == checkpoint.NoPosition:
			p.End, p.Note = end.Offset, "no position checkpointed yet"
		case end.Offset < p.Offset:
			// The topic was deleted and created again, or its log
			// truncated: the next run says which.
			p.End, p.Note = end.Offset, "the partition ends before the checkpoint (topic recreated?)"
		default:
			p.End, p.Lag, p.LagKnown = end.Offset, end.Offset-p.Offset, true
		}
		st.Positions = append(st.Positions, p)
	}
	st.Total(now)
	return st, nil
}

// Lag is how far the mirror is behind in each partition it took on, as
// status tells it (see Inspect), on connections of its own, which Close
// closes.
func (m *Mirror) Lag(ctx context.Context) ([]mirror.Lag, error) { return m.lagProbe().Lag(ctx) }

// Close closes what Lag opened.
func (m *Mirror) Close() { m.lagProbe().Close() }

func (m *Mirror) lagProbe() *mirror.LagProbe {
	m.probeOnce.Do(func() {
		m.probe = &mirror.LagProbe{
			ConnectRedis: func(ctx context.Context) (rueidis.Client, error) {
				return m.cfg.Redis.Connect(ctx, mirror.ConnectTimeout)
			},
			ConnectKafka: func(ctx context.Context) (*kgo.Client, error) { return m.cfg.Kafka.Connect(ctx, mirror.ConnectTimeout) },
			Inspect: func(ctx context.Context, rc rueidis.Client, adm *kadm.Client, now time.Time) (mirror.Status, error) {
				// The streams the run took on, as it recorded them.
				d, err := checkpoint.LoadDescriptor(ctx, rc, checkpoint.KindKafkaToRedis, m.cfg.Name)
				if err != nil {
					return mirror.Status{}, err
				}
				f := checkpoint.Found{Kind: checkpoint.KindKafkaToRedis, Name: m.cfg.Name, Descriptor: d}
				if d != nil {
					for _, s := range d.Streams {
						f.Checkpoints = append(f.Checkpoints, checkpoint.K2RKey(m.cfg.Name, s))
					}
				}
				return Inspect(ctx, rc, adm, f, now)
			},
		}
	})
	return m.probe
}
