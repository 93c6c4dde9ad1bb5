package k2r

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
)

// A ResetTarget is where a reset moves a mirror's partitions: Earliest
// (each log start), Latest (each end), the Offsets given per partition,
// or the first offset at or after Time.
type ResetTarget struct {
	Earliest, Latest bool
	Offsets          map[checkpoint.TopicPartition]int64
	Time             time.Time
}

// Reset moves the next offset mirror name reads in each partition of its
// checkpoints (those keys) to target, one HSET per checkpoint hash (one
// atomic step each; the caller holds the mirror's lease, so no run reads
// them meanwhile). A partition target.Offsets names that the mirror has
// no position for is an error. After a reset backwards, the next run
// writes the records after the new position again, as new entries; with
// --preserve-ids their IDs are already in the stream, and they are
// counted present and not written.
func Reset(ctx context.Context, rc rueidis.Client, adm *kadm.Client, name string, keys []string, target ResetTarget) ([]mirror.Moved, error) {
	type pos struct {
		key  string
		tp   checkpoint.TopicPartition
		from int64
	}
	var all []pos
	topics := map[string]bool{}
	for _, key := range keys {
		ck, found, err := checkpoint.LoadK2RKey(ctx, rc, key)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		for tp, off := range ck.Partitions {
			all = append(all, pos{key: key, tp: tp, from: off})
			topics[tp.Topic] = true
		}
	}
	for tp := range target.Offsets {
		if !slices.ContainsFunc(all, func(p pos) bool { return p.tp == tp }) {
			return nil, fmt.Errorf("mirror %q has no position in topic %q partition %d; xmirror checkpoint show %s lists its partitions", name, tp.Topic, tp.Partition, name)
		}
	}
	slices.SortFunc(all, func(a, b pos) int {
		if c := strings.Compare(a.tp.Topic, b.tp.Topic); c != 0 {
			return c
		}
		return int(a.tp.Partition - b.tp.Partition)
	})
	names := slices.Sorted(maps.Keys(topics))
	var listed kadm.ListedOffsets
	var err error
	var starts, ends kadm.ListedOffsets
	if target.Offsets != nil {
		// An offset given must lie in the partition's log.
		if starts, err = adm.ListStartOffsets(ctx, names...); err == nil {
			ends, err = adm.ListEndOffsets(ctx, names...)
		}
		if err != nil {
			return nil, fmt.Errorf("list the offsets of topics %v: %w", names, err)
		}
		for tp, off := range target.Offsets {
			lo, ok1 := starts.Lookup(tp.Topic, tp.Partition)
			hi, ok2 := ends.Lookup(tp.Topic, tp.Partition)
			if !ok1 || !ok2 || lo.Err != nil || hi.Err != nil {
				return nil, fmt.Errorf("topic %q partition %d: its offsets cannot be listed", tp.Topic, tp.Partition)
			}
			if off < lo.Offset || off > hi.Offset {
				return nil, &OffsetOutOfLogError{TopicPartition: tp, Offset: off, Start: lo.Offset, End: hi.Offset}
			}
		}
	}
	switch {
	case target.Earliest:
		listed, err = adm.ListStartOffsets(ctx, names...)
	case target.Latest:
		listed, err = adm.ListEndOffsets(ctx, names...)
	case target.Offsets == nil:
		listed, err = adm.ListOffsetsAfterMilli(ctx, target.Time.UnixMilli(), names...)
	}
	if err != nil {
		return nil, fmt.Errorf("list the offsets of topics %v: %w", names, err)
	}
	byKey := map[string][]string{}
	var moved []mirror.Moved
	for _, p := range all {
		to, ok := target.Offsets[p.tp]
		if target.Offsets == nil {
			o, found := listed.Lookup(p.tp.Topic, p.tp.Partition)
			if !found || o.Err != nil {
				return nil, fmt.Errorf("list the offsets of topic %q partition %d: %v", p.tp.Topic, p.tp.Partition, o.Err)
			}
			to, ok = o.Offset, true
		}
		if !ok {
			continue // not named: left as it is
		}
		if to < 0 {
			return nil, fmt.Errorf("topic %q partition %d: offset %d is not one", p.tp.Topic, p.tp.Partition, to)
		}
		byKey[p.key] = append(byKey[p.key], checkpoint.K2RPositionField(p.tp), strconv.FormatInt(to, 10))
		moved = append(moved, mirror.Moved{Topic: p.tp.Topic, Partition: p.tp.Partition, Before: strconv.FormatInt(p.from, 10), After: strconv.FormatInt(to, 10)})
	}
	for key, fv := range byKey {
		cmd := rc.B().Hset().Key(key).FieldValue()
		for i := 0; i < len(fv); i += 2 {
			cmd = cmd.FieldValue(fv[i], fv[i+1])
		}
		if err := rc.Do(ctx, cmd.Build()).Error(); err != nil {
			return nil, fmt.Errorf("update checkpoint %q: %w", key, err)
		}
	}
	return moved, nil
}

// Delete removes mirror name's checkpoints (those keys) and its record.
// The caller holds the mirror's lease. It returns what it deleted.
func Delete(ctx context.Context, rc rueidis.Client, name string, keys []string) ([]string, error) {
	var deleted []string
	for _, key := range append(slices.Clone(keys), checkpoint.DescriptorKey(checkpoint.KindKafkaToRedis, name)) {
		n, err := rc.Do(ctx, rc.B().Del().Key(key).Build()).AsInt64()
		if err != nil {
			return deleted, fmt.Errorf("DEL %s: %w", key, err)
		}
		if n > 0 {
			deleted = append(deleted, key)
		}
	}
	return deleted, nil
}

// OffsetOutOfLogError is a reset to an offset outside a partition's log.
type OffsetOutOfLogError struct {
	checkpoint.TopicPartition
	Offset, Start, End int64
}

func (e *OffsetOutOfLogError) Error() string {
	return fmt.Sprintf("topic %q partition %d holds offsets %d to %d, not %d; nothing was changed", e.Topic, e.Partition, e.Start, e.End, e.Offset)
}
