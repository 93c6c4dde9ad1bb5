package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
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
	r2kStreamPrefix    = "stream:"          // stream:<stream> = last entry ID Kafka confirmed
	r2kPartitionPrefix = "partition:"       // partition:<topic>:<partition> = next offset after this mirror's confirmed records
	r2kCountPrefix     = "partition_count:" // partition_count:<topic> = partitions its records are hashed over
	// covered:<topic> = N: the checkpoint holds partition:<topic>:0 to
	// N-1. A partition below N without its field is damage: the read-back
	// after a crash would not know where to start in it.
	r2kCoveredPrefix = "covered:"
	// trimmed:<stream> = entries TrimR2KStreams removed from the stream
	// over every run, once mirrored.
	r2kTrimmedPrefix = "trimmed:"
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

// R2KGapHoldKey is where redis-to-kafka keeps its consumer group's
// positions while a gap holds a read: written and deleted inside one
// transaction, never seen outside it. Its prefix is not R2KKey's, so no
// mirror's name can make it another mirror's checkpoint.
func R2KGapHoldKey(name string) string { return "xmirror:r2k-gap-hold:" + name }

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
	// PartitionCounts maps each topic to the partition count it had when
	// the mirror first wrote to it: records are hashed over that count for
	// good, so partitions added later do not move keys or split streams.
	// A checkpoint older than the field has none; see InitR2KPartitionCounts.
	PartitionCounts map[string]int32
	// Entries and Bytes are running totals over every run.
	Entries int64
	Bytes   int64
	// Updated is when the checkpoint last moved.
	Updated time.Time
	// Group is the consumer group the mirror reads through; empty in a
	// checkpoint written before groups were recorded (see LegacyGroup).
	Group string
	// Trimmed maps each stream to the entries the mirror removed from it
	// once they were mirrored (see R2KTrimCommand), over every run.
	Trimmed map[string]int64
}

// LoadR2K reads a redis-to-kafka checkpoint. A missing key is the zero R2K
// with found false.
func LoadR2K(ctx context.Context, c rueidis.Client, name string) (ck R2K, found bool, err error) {
	key := R2KKey(name)
	m, err := loadHash(ctx, c, key, KindRedisToKafka, Version, Version)
	if err != nil || m == nil {
		return ck, false, err
	}
	if ck, err = decodeR2K(key, m); err != nil {
		return ck, false, err
	}
	return ck, true, nil
}

// decodeR2K reads the fields of checkpoint hash key, whose version and
// kind checkHeader accepted.
func decodeR2K(key string, m map[string]string) (ck R2K, err error) {
	ck.Streams = map[string]string{}
	ck.Partitions = map[TopicPartition]int64{}
	ck.PartitionCounts = map[string]int32{}
	ck.Trimmed = map[string]int64{}
	covered := map[string]int64{}
	for f, v := range m {
		switch {
		case strings.HasPrefix(f, r2kCountPrefix):
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n <= 0 {
				return ck, fmt.Errorf("checkpoint %q field %q holds %q, not a partition count: %w", key, f, v, ErrCorrupt)
			}
			ck.PartitionCounts[strings.TrimPrefix(f, r2kCountPrefix)] = int32(n)
		case strings.HasPrefix(f, r2kCoveredPrefix):
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n < 0 {
				return ck, fmt.Errorf("checkpoint %q field %q holds %q, not a partition count: %w", key, f, v, ErrCorrupt)
			}
			covered[strings.TrimPrefix(f, r2kCoveredPrefix)] = n
		case strings.HasPrefix(f, r2kTrimmedPrefix):
			// A count, or the trim's HINCRBY would fail.
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return ck, fmt.Errorf("checkpoint %q field %q holds %q, not a count: %w", key, f, v, ErrCorrupt)
			}
			ck.Trimmed[strings.TrimPrefix(f, r2kTrimmedPrefix)] = n
		case strings.HasPrefix(f, r2kStreamPrefix):
			if !mapping.ValidID(v) {
				return ck, fmt.Errorf("checkpoint %q field %q holds %q, not an entry ID: %w", key, f, v, ErrCorrupt)
			}
			ck.Streams[strings.TrimPrefix(f, r2kStreamPrefix)] = v
		case strings.HasPrefix(f, r2kPartitionPrefix):
			tp, err := parseTopicPartition(strings.TrimPrefix(f, r2kPartitionPrefix))
			if err != nil {
				return ck, fmt.Errorf("checkpoint %q field %q: %v: %w", key, f, err, ErrCorrupt)
			}
			off, err := strconv.ParseInt(v, 10, 64)
			if err != nil || off < 0 {
				return ck, fmt.Errorf("checkpoint %q field %q holds %q, not an offset: %w", key, f, v, ErrCorrupt)
			}
			ck.Partitions[tp] = off
		}
	}
	for topic, n := range covered {
		have := int64(0)
		for tp := range ck.Partitions {
			if tp.Topic == topic && int64(tp.Partition) < n {
				have++
			}
		}
		// Of partitions 0 to have, one at least is missing when have < n.
		for p := int64(0); have < n && p <= have; p++ {
			if _, ok := ck.Partitions[TopicPartition{Topic: topic, Partition: int32(p)}]; !ok {
				return ck, r2kHoleError(key, topic, int32(p))
			}
		}
	}
	if g, ok := m[r2kFieldGroup]; ok {
		if g == "" {
			return ck, fmt.Errorf("checkpoint %q has an empty %s field: %w", key, r2kFieldGroup, ErrCorrupt)
		}
		ck.Group = g
	}
	// The totals are absent until the first commit; one that is not a
	// count would make every commit's HINCRBY fail.
	for _, f := range []string{fieldEntries, fieldBytes, fieldUpdated} {
		v, ok := m[f]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return ck, fmt.Errorf("checkpoint %q field %q holds %q, not a count: %w", key, f, v, ErrCorrupt)
		}
		switch f {
		case fieldEntries:
			ck.Entries = n
		case fieldBytes:
			ck.Bytes = n
		default:
			ck.Updated = time.UnixMilli(n)
		}
	}
	return ck, nil
}

// R2KUpdate is what one confirmed batch moves in a redis-to-kafka checkpoint.
type R2KUpdate struct {
	Streams    map[string]string        // stream -> last confirmed entry ID in the batch
	Partitions map[TopicPartition]int64 // partition -> offset after the batch's last record there
	Entries    int64
	Bytes      int64
}

// ErrCommitRefused is wrapped by the error of a redis-to-kafka commit
// (the entries' acknowledgements and the checkpoint update, in one
// transaction) when the server refused it (a stream key that is not a
// stream, an ACL forbidding XACK): the checkpoint did not move. Trying
// again without fixing the cause changes nothing.
var ErrCommitRefused = errors.New("commit refused")

// r2kCommitScript moves the checkpoint of a commit, queued in the same
// MULTI/EXEC right after the commit's XACKs. EXEC does not roll back: an
// XACK failing when the transaction runs (its key no longer a stream, an
// ACL changed since it was queued) does not stop the commands after it,
// and a checkpoint moved past records whose entries stay pending would
// make the read-back after a crash start after them and send them again.
// Nothing runs between the XACKs and this script inside EXEC, so the
// script sees exactly what they saw: it writes the checkpoint only if
// every stream is a stream (or gone: XACK then acknowledges nothing and
// succeeds) and the caller may XACK it, which are the only ways XACK
// fails on IDs Redis handed out. Otherwise it writes nothing and says why.
// The acks of the other streams stand: acknowledged entries with the
// checkpoint behind them are safe, the read-back after a crash merely
// starts earlier than it needs to.
//
// KEYS: the streams, then the checkpoint. ARGV: group, entries, bytes,
// then the checkpoint's field/value pairs.
// Replies: {"ok"}, {"wrongtype", key, type} or {"noperm", key}.
const r2kCommitScript = `
local ck = KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'stream' and t ~= 'none' then return {'wrongtype', KEYS[i], t} end
  if redis.acl_check_cmd and not redis.acl_check_cmd('XACK', KEYS[i], ARGV[1], '0-1') then return {'noperm', KEYS[i]} end
end
local t = redis.call('TYPE', ck).ok
if t ~= 'hash' and t ~= 'none' then return {'wrongtype', ck, t} end
redis.call('HSET', ck, unpack(ARGV, 4))
if ARGV[2] ~= '0' then redis.call('HINCRBY', ck, 'entries', ARGV[2]) end
if ARGV[3] ~= '0' then redis.call('HINCRBY', ck, 'bytes', ARGV[3]) end
return {'ok'}
`

// R2KCommitCommand is the checkpoint's part of a redis-to-kafka commit:
// the script that applies u to mirror name's checkpoint, to be queued in
// the commit's MULTI/EXEC right after the XACKs of streams through group,
// and only if none of them can have failed (see r2kCommitScript). Its
// reply is read by R2KCommitReply.
func R2KCommitCommand(c rueidis.Client, name, group string, streams []string, u R2KUpdate, now time.Time) rueidis.Completed {
	keys := make([]string, 0, len(streams)+1)
	keys = append(keys, streams...)
	keys = append(keys, R2KKey(name))
	args := make([]string, 0, 9+2*(len(u.Streams)+len(u.Partitions)))
	args = append(args, group, strconv.FormatInt(u.Entries, 10), strconv.FormatInt(u.Bytes, 10),
		fieldVersion, strconv.Itoa(Version), fieldKind, KindRedisToKafka,
		fieldUpdated, strconv.FormatInt(now.UnixMilli(), 10))
	for s, id := range u.Streams {
		args = append(args, r2kStreamPrefix+s, id)
	}
	for tp, off := range u.Partitions {
		args = append(args, r2kPartitionPrefix+formatTopicPartition(tp), strconv.FormatInt(off, 10))
	}
	return c.B().Eval().Script(r2kCommitScript).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
}

// R2KCommitReply reads the reply of an R2KCommitCommand, as EXEC returned
// it. ran is false when the script did not run (its reply is an error, or
// not a list of strings): the checkpoint did not move, and err says why.
// Otherwise err is nil when the checkpoint moved, or says why the script
// refused to move it, wrapping ErrCommitRefused.
func R2KCommitReply(name string, m rueidis.RedisMessage) (ran bool, err error) {
	key := R2KKey(name)
	reply, serr := m.AsStrSlice()
	switch {
	case serr != nil:
		return false, fmt.Errorf("update checkpoint %q: %w", key, serr)
	case len(reply) == 3 && reply[0] == "wrongtype" && reply[1] == key:
		return true, setting.Errorf("update checkpoint %q: WRONGTYPE it holds a %s, not a hash: %w; delete the key or choose another {Name}", key, reply[2], ErrCommitRefused)
	case len(reply) == 3 && reply[0] == "wrongtype":
		return true, fmt.Errorf("acknowledge entries of stream %q (XACK): WRONGTYPE the key holds a %s, not a stream: %w; checkpoint %q did not move", reply[1], reply[2], ErrCommitRefused, key)
	case len(reply) == 2 && reply[0] == "noperm":
		return true, fmt.Errorf("acknowledge entries of stream %q (XACK): NOPERM this user may not run XACK on the key: %w; checkpoint %q did not move: grant the user XACK on the stream, and run again", reply[1], ErrCommitRefused, key)
	case len(reply) != 1 || reply[0] != "ok":
		return true, fmt.Errorf("acknowledge entries and update checkpoint %q: unexpected reply %q", key, reply)
	}
	return true, nil
}

// loadHash reads a checkpoint hash and checks its version and kind; a
// missing key is a nil map.
func loadHash(ctx context.Context, c rueidis.Client, key, kind string, oldest, newest int) (map[string]string, error) {
	m, err := c.Do(ctx, c.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil {
		if strings.Contains(err.Error(), "WRONGTYPE") {
			return nil, setting.Errorf("checkpoint %q is not a hash: %w; delete it or choose another {Name}", key, ErrCorrupt)
		}
		return nil, fmt.Errorf("read checkpoint %q: %w", key, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	if err := checkHeader(key, m, kind, oldest, newest); err != nil {
		return nil, err
	}
	return m, nil
}

// checkHeader refuses a hash of another kind, or of a version outside
// oldest to newest.
func checkHeader(key string, m map[string]string, kind string, oldest, newest int) error {
	v, ok := m[fieldVersion]
	if !ok {
		return setting.Errorf("checkpoint %q has no version field: %w; it was not written by xmirror, delete it or choose another {Name}", key, ErrCorrupt)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("checkpoint %q has version %q: %w", key, v, ErrCorrupt)
	}
	if n < oldest || n > newest {
		reads := strconv.Itoa(newest)
		if oldest < newest {
			reads = fmt.Sprintf("%d to %d", oldest, newest)
		}
		return fmt.Errorf("checkpoint %q has version %d, this xmirror reads version %s; use a matching xmirror", key, n, reads)
	}
	if k := m[fieldKind]; k != kind {
		return setting.Errorf("checkpoint %q belongs to a %s mirror, not %s; choose another {Name}", key, k, kind)
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
	// Only the number as formatTopicPartition writes it: t:01 or t:+1
	// beside t:1 would be two fields for one partition, which the
	// scripts, comparing field names, would tell apart.
	if err != nil || p < 0 || strconv.FormatInt(p, 10) != s[i+1:] {
		return TopicPartition{}, fmt.Errorf("%q has no valid partition number", s)
	}
	return TopicPartition{Topic: s[:i], Partition: int32(p)}, nil
}

// r2kHoleError is the error for a partition the checkpoint covers but
// holds no position for.
func r2kHoleError(key, topic string, p int32) error {
	field := r2kPartitionPrefix + formatTopicPartition(TopicPartition{Topic: topic, Partition: p})
	return setting.Errorf("checkpoint %q covers topic %q partition %d but its position (field %q) is missing: %w; a restart after a crash would not read back what is already there and could write it again. Set the field to the partition's log start (HSET %s %s 0) to read all of it back, or choose another {Name}",
		key, topic, p, field, ErrCorrupt, key, field)
}

// r2kInitScript takes partitions on in a redis-to-kafka checkpoint,
// atomically: it refuses a hole (a covered partition without its field),
// stores each given partition's offset where it has none yet (an existing
// position is never moved back) and raises each topic's covered count to
// the partitions that have a position from 0 on. A checkpoint written
// before the covered fields existed gets them here.
//
// KEYS: checkpoint. ARGV: version, kind, then (topic, partition, offset)
// triples. Replies: {"ok"}, {"hole", topic, partition} or {"corrupt", why}.
const r2kInitScript = `
local ck = KEYS[1]
local covered = {}
for i = 3, #ARGV, 3 do
  local topic = ARGV[i]
  if not covered[topic] then
    local v = redis.call('HGET', ck, 'covered:' .. topic)
    local n = tonumber(v or '0')
    if not n then return {'corrupt', 'covered:' .. topic .. ' holds ' .. v} end
    covered[topic] = n
  end
  local p = tonumber(ARGV[i+1])
  local f = 'partition:' .. topic .. ':' .. ARGV[i+1]
  if p < covered[topic] and redis.call('HEXISTS', ck, f) == 0 then return {'hole', topic, ARGV[i+1]} end
end
redis.call('HSETNX', ck, 'version', ARGV[1])
redis.call('HSETNX', ck, 'kind', ARGV[2])
for i = 3, #ARGV, 3 do
  redis.call('HSETNX', ck, 'partition:' .. ARGV[i] .. ':' .. ARGV[i+1], ARGV[i+2])
end
for topic, n in pairs(covered) do
  while redis.call('HEXISTS', ck, 'partition:' .. topic .. ':' .. n) == 1 do n = n + 1 end
  redis.call('HSET', ck, 'covered:' .. topic, n)
end
return {'ok'}
`

// InitR2KPartitions records, for each partition not yet in the checkpoint,
// the offset a mirror starts writing at (HSETNX: an existing position is
// never moved back), and which partitions the checkpoint covers from then
// on, in one atomic step. It runs before the first record is produced, so
// a crash of the very first run still leaves a bound for the restart's
// read-back of what was written. Give it every partition of the
// destination topics: a partition it covered whose position is gone is
// refused, wrapping ErrCorrupt, rather than given the current end, above
// what an interrupted run may have written there.
func InitR2KPartitions(ctx context.Context, c rueidis.Client, name string, offsets map[TopicPartition]int64) error {
	if len(offsets) == 0 {
		return nil
	}
	key := R2KKey(name)
	args := []string{strconv.Itoa(Version), KindRedisToKafka}
	for tp, off := range offsets {
		args = append(args, tp.Topic, strconv.FormatInt(int64(tp.Partition), 10), strconv.FormatInt(off, 10))
	}
	reply, err := c.Do(ctx, c.B().Eval().Script(r2kInitScript).Numkeys(1).Key(key).Arg(args...).Build()).AsStrSlice()
	if err != nil {
		return fmt.Errorf("initialise checkpoint %q: %w", key, err)
	}
	switch {
	case len(reply) == 3 && reply[0] == "hole":
		p, _ := strconv.ParseInt(reply[2], 10, 32)
		return r2kHoleError(key, reply[1], int32(p))
	case len(reply) == 2 && reply[0] == "corrupt":
		return fmt.Errorf("checkpoint %q: %s: %w", key, reply[1], ErrCorrupt)
	case len(reply) != 1 || reply[0] != "ok":
		return fmt.Errorf("initialise checkpoint %q: unexpected reply %q", key, reply)
	}
	return nil
}

// InitR2KPartitionCounts records, for each topic whose count is not in the
// checkpoint yet, its partition count (HSETNX: a count once stored never
// changes). It runs before the first record is produced to the topic; an
// existing checkpoint without counts adopts the topics' current ones.
func InitR2KPartitionCounts(ctx context.Context, c rueidis.Client, name string, counts map[string]int32) error {
	if len(counts) == 0 {
		return nil
	}
	key := R2KKey(name)
	cmds := rueidis.Commands{
		c.B().Hsetnx().Key(key).Field(fieldVersion).Value(strconv.Itoa(Version)).Build(),
		c.B().Hsetnx().Key(key).Field(fieldKind).Value(KindRedisToKafka).Build(),
	}
	for t, n := range counts {
		cmds = append(cmds, c.B().Hsetnx().Key(key).Field(r2kCountPrefix+t).Value(strconv.FormatInt(int64(n), 10)).Build())
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
// later run without Group, then reads through the same group.
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
