package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Version is the format version this package writes and reads.
const Version = 1

// Field names shared by every checkpoint hash.
const (
	fieldVersion = "version"
	fieldKind    = "kind"
	fieldUpdated = "updated_ms"
	fieldEntries = "entries"
	fieldBytes   = "bytes"
)

// Kinds of mirror, stored so a name reused for the other direction is caught.
const (
	KindRedisToKafka = "redis-to-kafka"
	KindKafkaToRedis = "kafka-to-redis"
)

// Field prefixes of the redis-to-kafka hash.
const (
	r2kStreamPrefix    = "stream:"    // stream:<stream> = last entry ID Kafka confirmed
	r2kPartitionPrefix = "partition:" // partition:<topic>:<partition> = next offset after this mirror's confirmed records
)

// r2kFieldGroup is the consumer group a redis-to-kafka mirror reads
// through, recorded at its first run. Checkpoints written before it was
// recorded lack it: those mirrors read through LegacyGroup.
const r2kFieldGroup = "group"

// LegacyGroup is the consumer group every redis-to-kafka mirror shared by
// default before each got one of its own: a checkpoint without a group
// field belongs to a mirror that reads through it.
const LegacyGroup = "xmirror"

// ErrCorrupt is returned (wrapped) for a checkpoint xmirror cannot read.
var ErrCorrupt = errors.New("checkpoint is damaged")

// R2KKey is the key of a redis-to-kafka mirror's checkpoint hash.
func R2KKey(name string) string { return "xmirror:r2k:" + name }

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

func (tp TopicPartition) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

// R2K is the checkpoint of a redis-to-kafka mirror.
type R2K struct {
	// Streams maps each stream to the last entry ID Kafka confirmed.
	Streams map[string]string
	// Partitions maps each destination partition to the offset after the
	// last record this mirror checkpointed there; records at or after it
	// may be the unacknowledged tail of an interrupted run.
	Partitions map[TopicPartition]int64
	// Entries and Bytes are running totals over every run.
	Entries int64
	Bytes   int64
	// Updated is when the checkpoint last moved.
	Updated time.Time
	// Group is the consumer group the mirror reads through; empty in a
	// checkpoint written before groups were recorded (see LegacyGroup).
	Group string
}

// LoadR2K reads a redis-to-kafka checkpoint. A missing key is the zero R2K
// with found false.
func LoadR2K(ctx context.Context, c rueidis.Client, name string) (ck R2K, found bool, err error) {
	key := R2KKey(name)
	m, err := loadHash(ctx, c, key, KindRedisToKafka)
	if err != nil || m == nil {
		return ck, false, err
	}
	ck.Streams = map[string]string{}
	ck.Partitions = map[TopicPartition]int64{}
	for f, v := range m {
		switch {
		case strings.HasPrefix(f, r2kStreamPrefix):
			if !validEntryID(v) {
				return ck, false, fmt.Errorf("checkpoint %q field %q holds %q, not an entry ID: %w", key, f, v, ErrCorrupt)
			}
			ck.Streams[strings.TrimPrefix(f, r2kStreamPrefix)] = v
		case strings.HasPrefix(f, r2kPartitionPrefix):
			tp, err := parseTopicPartition(strings.TrimPrefix(f, r2kPartitionPrefix))
			if err != nil {
				return ck, false, fmt.Errorf("checkpoint %q field %q: %v: %w", key, f, err, ErrCorrupt)
			}
			off, err := strconv.ParseInt(v, 10, 64)
			if err != nil || off < 0 {
				return ck, false, fmt.Errorf("checkpoint %q field %q holds %q, not an offset: %w", key, f, v, ErrCorrupt)
			}
			ck.Partitions[tp] = off
		}
	}
	if g, ok := m[r2kFieldGroup]; ok {
		if g == "" {
			return ck, false, fmt.Errorf("checkpoint %q has an empty %s field: %w", key, r2kFieldGroup, ErrCorrupt)
		}
		ck.Group = g
	}
	ck.Entries, _ = strconv.ParseInt(m[fieldEntries], 10, 64)
	ck.Bytes, _ = strconv.ParseInt(m[fieldBytes], 10, 64)
	if ms, err := strconv.ParseInt(m[fieldUpdated], 10, 64); err == nil {
		ck.Updated = time.UnixMilli(ms)
	}
	return ck, true, nil
}

// R2KUpdate is what one confirmed batch moves in a redis-to-kafka checkpoint.
type R2KUpdate struct {
	Streams    map[string]string        // stream -> last confirmed entry ID in the batch
	Partitions map[TopicPartition]int64 // partition -> offset after the batch's last record there
	Entries    int64
	Bytes      int64
}

// R2KCommands are the commands that apply u, to be sent in the same
// pipeline as the XACKs of the batch. The engine commits batches in order,
// so the stored positions only move forward.
func R2KCommands(c rueidis.Client, name string, u R2KUpdate, now time.Time) rueidis.Commands {
	key := R2KKey(name)
	hset := c.B().Hset().Key(key).FieldValue().
		FieldValue(fieldVersion, strconv.Itoa(Version)).
		FieldValue(fieldKind, KindRedisToKafka).
		FieldValue(fieldUpdated, strconv.FormatInt(now.UnixMilli(), 10))
	for s, id := range u.Streams {
		hset = hset.FieldValue(r2kStreamPrefix+s, id)
	}
	for tp, off := range u.Partitions {
		hset = hset.FieldValue(r2kPartitionPrefix+formatTopicPartition(tp), strconv.FormatInt(off, 10))
	}
	cmds := rueidis.Commands{hset.Build()}
	if u.Entries > 0 {
		cmds = append(cmds, c.B().Hincrby().Key(key).Field(fieldEntries).Increment(u.Entries).Build())
	}
	if u.Bytes > 0 {
		cmds = append(cmds, c.B().Hincrby().Key(key).Field(fieldBytes).Increment(u.Bytes).Build())
	}
	return cmds
}

// loadHash reads a checkpoint hash and checks its version and kind; a
// missing key is a nil map.
func loadHash(ctx context.Context, c rueidis.Client, key, kind string) (map[string]string, error) {
	m, err := c.Do(ctx, c.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil {
		if strings.Contains(err.Error(), "WRONGTYPE") {
			return nil, fmt.Errorf("checkpoint %q is not a hash: %w; delete it or choose another --name", key, ErrCorrupt)
		}
		return nil, fmt.Errorf("read checkpoint %q: %w", key, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	if err := checkHeader(key, m, kind); err != nil {
		return nil, err
	}
	return m, nil
}

// checkHeader refuses a hash of another version or kind.
func checkHeader(key string, m map[string]string, kind string) error {
	v, ok := m[fieldVersion]
	if !ok {
		return fmt.Errorf("checkpoint %q has no version field: %w; it was not written by xmirror, delete it or choose another --name", key, ErrCorrupt)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("checkpoint %q has version %q: %w", key, v, ErrCorrupt)
	}
	if n != Version {
		return fmt.Errorf("checkpoint %q has version %d, this xmirror reads version %d; use a matching xmirror", key, n, Version)
	}
	if k := m[fieldKind]; k != kind {
		return fmt.Errorf("checkpoint %q belongs to a %s mirror, not %s; choose another --name", key, k, kind)
	}
	return nil
}

// formatTopicPartition writes <topic>:<partition>; topics cannot hold ':'
// (Kafka allows only [a-zA-Z0-9._-]), so the last ':' splits them.
func formatTopicPartition(tp TopicPartition) string {
	return tp.Topic + ":" + strconv.FormatInt(int64(tp.Partition), 10)
}

func parseTopicPartition(s string) (TopicPartition, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return TopicPartition{}, fmt.Errorf("%q is not <topic>:<partition>", s)
	}
	p, err := strconv.ParseInt(s[i+1:], 10, 32)
	if err != nil || p < 0 {
		return TopicPartition{}, fmt.Errorf("%q has no valid partition number", s)
	}
	return TopicPartition{Topic: s[:i], Partition: int32(p)}, nil
}

// validEntryID accepts <ms>-<seq> as Redis writes it.
func validEntryID(id string) bool {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return err1 == nil && err2 == nil
}

// InitR2KPartitions records, for each partition not yet in the checkpoint,
// the offset a mirror starts writing at (HSETNX: an existing position is
// never moved back). It runs before the first record is produced, so a
// crash of the very first run still leaves a bound for the restart's
// read-back of what was written.
func InitR2KPartitions(ctx context.Context, c rueidis.Client, name string, offsets map[TopicPartition]int64) error {
	if len(offsets) == 0 {
		return nil
	}
	key := R2KKey(name)
	cmds := rueidis.Commands{
		c.B().Hsetnx().Key(key).Field(fieldVersion).Value(strconv.Itoa(Version)).Build(),
		c.B().Hsetnx().Key(key).Field(fieldKind).Value(KindRedisToKafka).Build(),
	}
	for tp, off := range offsets {
		cmds = append(cmds, c.B().Hsetnx().Key(key).Field(r2kPartitionPrefix+formatTopicPartition(tp)).Value(strconv.FormatInt(off, 10)).Build())
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("initialise checkpoint %q: %w", key, err)
		}
	}
	return nil
}

// RecordR2KGroup records the consumer group of a mirror, unless one is
// recorded already (HSETNX), before it reads anything: a restart, or a
// later run without --group, then reads through the same group.
func RecordR2KGroup(ctx context.Context, c rueidis.Client, name, group string) error {
	key := R2KKey(name)
	cmds := rueidis.Commands{
		c.B().Hsetnx().Key(key).Field(fieldVersion).Value(strconv.Itoa(Version)).Build(),
		c.B().Hsetnx().Key(key).Field(fieldKind).Value(KindRedisToKafka).Build(),
		c.B().Hsetnx().Key(key).Field(r2kFieldGroup).Value(group).Build(),
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("record the consumer group in checkpoint %q: %w", key, err)
		}
	}
	return nil
}
