package checkpoint

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/mirror/setting"
)

// K2RKey is the key of a kafka-to-redis mirror's checkpoint hash for one
// destination stream: xmirror:k2r:{<tag>}:<name>, where <tag> is the
// stream's effective hash tag, so the key lives in the stream's hash slot
// and the entries and their positions can be written in one transaction.
//
// The effective tag is what Redis Cluster hashes: the part between the first
// '{' and the first '}' after it when that part is not empty, else the whole
// stream name. Streams that share a tag share one hash under a name; that is
// harmless, because its positions are per topic-partition and each
// partition feeds exactly one stream.
//
// Edge case: a stream with no valid tag whose name contains '}' (such as
// "a}b" or "{}x}") cannot be put in braces whole: Redis would hash only up to
// its first '}'. Such a key is still unique and correct on a standalone
// Redis, but on a Redis Cluster it would land in another slot than the stream
// (see SameSlot); a cluster mirror must refuse such stream names.
func K2RKey(name, stream string) string {
	return "xmirror:k2r:{" + hashTag(stream) + "}:" + name
}

// SameSlot reports whether K2RKey(name, stream) hashes like stream on a Redis
// Cluster, which fails only for the '}' edge case documented on K2RKey.
func SameSlot(stream string) bool {
	return !strings.Contains(hashTag(stream), "}")
}

// hashTag is the part of key Redis Cluster hashes.
func hashTag(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			return key[open+1 : open+1+n]
		}
	}
	return key
}

// K2RVersion is the format version of kafka-to-redis checkpoints. Version 2
// added the partitions field (K2RPartitionsField); a version 1 checkpoint is
// read as it is and upgraded by InitK2RPartitions, which every run calls
// before it writes.
const K2RVersion = 2

// k2rOldestVersion is the oldest kafka-to-redis format still read.
const k2rOldestVersion = 1

// fieldK2RPartitions lists, comma-separated, every partition the checkpoint
// ever took on (<topic>:<partition>). A listed partition without its
// position field is damage: without it the partition would silently be
// mirrored again from its start.
const fieldK2RPartitions = "partitions"

// k2rTopicIDSuffix makes the field <topic>:topic_id, which holds the topic
// ID (Kafka's UUID, as kafka-topics --describe prints it) of the topic the
// checkpoint's positions of that topic are about. A partition's field ends
// in its number, so no topic name can make the two meet.
const k2rTopicIDSuffix = ":topic_id"

// K2RTopicIDField is the field holding the ID of topic.
func K2RTopicIDField(topic string) string { return topic + k2rTopicIDSuffix }

// K2R is the checkpoint of a kafka-to-redis mirror for one destination
// stream.
type K2R struct {
	// Partitions maps each source partition feeding the stream to the next
	// offset to mirror.
	Partitions map[TopicPartition]int64
	// Entries and Bytes are running totals over every run.
	Entries int64
	Bytes   int64
	// Updated is when the checkpoint last moved.
	Updated time.Time
	// TopicIDs maps each topic whose ID was recorded to that ID; a
	// checkpoint written before IDs were recorded has none (the next
	// InitK2RPartitions records them).
	TopicIDs map[string]string
}

// LoadK2R reads the kafka-to-redis checkpoint of mirror name for stream. A
// missing key is the zero K2R with found false; anything xmirror did not
// write is an error wrapping ErrCorrupt, never a fresh start.
func LoadK2R(ctx context.Context, c rueidis.Client, name, stream string) (ck K2R, found bool, err error) {
	return LoadK2RKey(ctx, c, K2RKey(name, stream))
}

// LoadK2RKey reads the kafka-to-redis checkpoint at key, as LoadK2R does:
// for a checkpoint found by its key (see List), whose stream is not known.
func LoadK2RKey(ctx context.Context, c rueidis.Client, key string) (ck K2R, found bool, err error) {
	m, err := loadHash(ctx, c, key, KindKafkaToRedis, k2rOldestVersion, K2RVersion)
	if err != nil || m == nil {
		return ck, false, err
	}
	if ck, err = decodeK2R(key, m); err != nil {
		return ck, false, err
	}
	return ck, true, nil
}

// decodeK2R reads the fields of checkpoint hash key, whose version and
// kind checkHeader accepted.
func decodeK2R(key string, m map[string]string) (ck K2R, err error) {
	listed, hasList := m[fieldK2RPartitions]
	if !hasList && m[fieldVersion] != strconv.Itoa(k2rOldestVersion) {
		return ck, setting.Errorf("checkpoint %q has no %q field, which version %d keeps: %w; delete it or choose another {Name}", key, fieldK2RPartitions, K2RVersion, ErrCorrupt)
	}
	ck.Partitions = map[TopicPartition]int64{}
	ck.TopicIDs = map[string]string{}
	for f, v := range m {
		switch f {
		case fieldVersion, fieldKind, fieldK2RPartitions:
			continue
		}
		if topic, ok := strings.CutSuffix(f, k2rTopicIDSuffix); ok {
			if v == "" {
				return ck, setting.Errorf("checkpoint %q field %q is empty, not a topic ID: %w; delete it or choose another {Name}", key, f, ErrCorrupt)
			}
			ck.TopicIDs[topic] = v
			continue
		}
		switch f {
		case fieldEntries, fieldBytes, fieldUpdated:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return ck, setting.Errorf("checkpoint %q field %q holds %q, not a count: %w; delete it or choose another {Name}", key, f, v, ErrCorrupt)
			}
			switch f {
			case fieldEntries:
				ck.Entries = n
			case fieldBytes:
				ck.Bytes = n
			default:
				ck.Updated = time.UnixMilli(n)
			}
			continue
		}
		tp, err := parseTopicPartition(f)
		if err != nil {
			return ck, setting.Errorf("checkpoint %q field %q: %v: %w; delete it or choose another {Name}", key, f, err, ErrCorrupt)
		}
		off, err := strconv.ParseInt(v, 10, 64)
		if err != nil || off < 0 {
			return ck, setting.Errorf("checkpoint %q field %q holds %q, not an offset: %w; delete it or choose another {Name}", key, f, v, ErrCorrupt)
		}
		ck.Partitions[tp] = off
	}
	for _, f := range splitList(listed) {
		tp, err := parseTopicPartition(f)
		if err != nil {
			return ck, setting.Errorf("checkpoint %q field %q lists %q: %v: %w; delete it or choose another {Name}", key, fieldK2RPartitions, f, err, ErrCorrupt)
		}
		if _, ok := ck.Partitions[tp]; !ok {
			return ck, k2rHoleError(key, f)
		}
	}
	return ck, nil
}

// k2rHoleError is the error for a partition the checkpoint lists but holds
// no position for (field is its <topic>:<partition>).
func k2rHoleError(key, field string) error {
	tp, err := parseTopicPartition(field)
	name := field
	if err == nil {
		name = fmt.Sprintf("topic %q partition %d", tp.Topic, tp.Partition)
	}
	return fmt.Errorf("checkpoint %q covers %s but its position (field %q) is missing: %w; it would be mirrored again from its start. Set the field back to the next offset to mirror (HSET), or delete the checkpoint to mirror every partition again",
		key, name, field, ErrCorrupt)
}

// splitList splits a comma-separated list; "" is no element.
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// NoPosition is the position of a partition the checkpoint holds none
// for: as where a write starts from, the partition must have none yet
// (the mirror starts it fresh).
const NoPosition = -1

// K2RPositionField is the field holding the position of tp:
// <topic>:<partition>.
func K2RPositionField(tp TopicPartition) string { return formatTopicPartition(tp) }

// ParseK2RPositionField is the partition whose position field is field.
func ParseK2RPositionField(field string) (TopicPartition, error) {
	return parseTopicPartition(field)
}

// K2RHeader is the field/value pairs that every write of a checkpoint
// sets besides its positions and totals: the version, the kind and when
// it was updated.
func K2RHeader(updated time.Time) []string {
	return []string{fieldVersion, strconv.Itoa(K2RVersion), fieldKind, KindKafkaToRedis,
		fieldUpdated, strconv.FormatInt(updated.UnixMilli(), 10)}
}

// TopicRecreatedError is a checkpoint whose positions of a topic were
// written for another topic of that name: it was deleted and created
// again, and its offsets started over. Its text says what happened; what
// to do about it depends on the mirror's settings, which its caller
// names.
type TopicRecreatedError struct {
	Key, Topic string
	// Recorded is the topic ID the checkpoint was written for, Current
	// the topic's ID now.
	Recorded, Current string
}

func (e *TopicRecreatedError) Error() string {
	return fmt.Sprintf("topic %q was deleted and created again: checkpoint %q was written for topic ID %s, but the topic now has ID %s, whose offsets started over",
		e.Topic, e.Key, e.Recorded, e.Current)
}

// K2RGuardKey is the key the atomic step of a kafka-to-redis write
// watches besides the checkpoint: the check touches it to abort the step.
// It shares the stream's hash slot and never outlives the check that
// touches it.
func K2RGuardKey(name, stream string) string {
	return "xmirror:k2r-guard:{" + hashTag(stream) + "}:" + name
}

// K2ROrderKey is the key of an order token: the list a call pushes for the
// one after it. run tells apart the runs of one mirror name; seq, the calls
// of a run. A token expires soon after it is pushed.
func K2ROrderKey(name, run string, seq uint64) string {
	return "xmirror:k2r-order:" + name + ":" + run + ":" + strconv.FormatUint(seq, 10)
}

// k2rInitScript takes partitions on in a checkpoint, atomically: it
// refuses a checkpoint with a hole (a listed partition without its
// position) or one recorded for another topic ID, stores each given
// partition's start where it has no position yet (a stored position is
// never moved, except for a topic restarted), records the topics' IDs,
// lists every partition that has a position, and sets the version: a
// version 1 checkpoint, which had no list, is upgraded here.
//
// KEYS: checkpoint. ARGV: version, kind, nparts, nparts x (field, start),
// then (topic, id, replace) triples: replace, when not empty, is the ID
// recorded for a topic restarted from its start; its partitions' positions
// are dropped and replaced by the starts given.
// Replies: {"ok"}, {"hole", field}, {"recreated", topic, recorded} or
// {"corrupt", why}.
const k2rInitScript = `
local ck = KEYS[1]
local t = redis.call('TYPE', ck).ok
local list = {}
local nparts = tonumber(ARGV[3])
local tfirst = 4 + 2 * nparts
if t ~= 'none' then
  if t ~= 'hash' then return {'corrupt', 'it holds a ' .. t .. ', not a hash'} end
  local h = redis.call('HMGET', ck, 'version', 'kind', 'partitions')
  if h[2] ~= ARGV[2] or (h[1] ~= ARGV[1] and h[1] ~= '1') then
    return {'corrupt', 'version/kind are ' .. tostring(h[1]) .. '/' .. tostring(h[2])}
  end
  if h[1] == ARGV[1] and not h[3] then return {'corrupt', 'it has no partitions field'} end
  if h[3] then
    for f in string.gmatch(h[3], '[^,]+') do
      if redis.call('HEXISTS', ck, f) == 0 then return {'hole', f} end
      list[f] = true
    end
  end
  for _, f in ipairs(redis.call('HKEYS', ck)) do
    if string.find(f, ':%d+$') then list[f] = true end
  end
  for i = tfirst, #ARGV, 3 do
    local cur = redis.call('HGET', ck, ARGV[i] .. ':topic_id')
    if cur and cur ~= ARGV[i+1] and (ARGV[i+2] == '' or cur ~= ARGV[i+2]) then
      return {'recreated', ARGV[i], cur}
    end
  end
end
local restart = {}
for i = tfirst, #ARGV, 3 do
  local field = ARGV[i] .. ':topic_id'
  local cur = redis.call('HGET', ck, field)
  if cur and cur ~= ARGV[i+1] then restart[ARGV[i]] = true end
  redis.call('HSET', ck, field, ARGV[i+1])
end
if next(restart) then
  for f in pairs(list) do
    local topic = string.match(f, '^(.*):%d+$')
    if topic and restart[topic] then
      redis.call('HDEL', ck, f)
      list[f] = nil
    end
  end
end
for i = 4, tfirst - 1, 2 do
  redis.call('HSETNX', ck, ARGV[i], ARGV[i+1])
  list[ARGV[i]] = true
end
local names = {}
for f in pairs(list) do names[#names+1] = f end
table.sort(names)
redis.call('HSET', ck, 'version', ARGV[1], 'kind', ARGV[2], 'partitions', table.concat(names, ','))
return {'ok'}
`

// K2RInit is what InitK2RPartitions takes on in one destination stream's
// checkpoint.
type K2RInit struct {
	// Starts holds each partition taken on, with where it starts if the
	// checkpoint has no position for it.
	Starts map[TopicPartition]int64
	// TopicIDs are the current IDs of the partitions' topics (a topic
	// left out, such as on a broker without topic IDs, is not checked):
	// recorded where the checkpoint has none, refused with a
	// *TopicRecreatedError where it records another.
	TopicIDs map[string]string
	// Restart maps a topic deleted and created again to the ID the
	// checkpoint records for it: the positions of the old topic's
	// partitions are dropped, those of Starts stored instead, and the new
	// ID recorded — provided the checkpoint still records that ID.
	Restart map[string]string
}

// InitK2RPartitions takes partitions on, per destination stream: each
// given partition with no position yet starts at the offset given (a
// stored position is never moved, but for a topic in Restart), and the
// checkpoint lists it from then on, with the topics' IDs, the version and
// the kind, in one atomic step per checkpoint and one round trip in all.
// It runs before anything is consumed, so the first batch's
// compare-and-set starts from it and a run that mirrors nothing still
// leaves the position for the next run. Give it every partition the run
// takes on, stored or not: it upgrades a version 1 checkpoint and records
// the IDs a checkpoint lacks; it refuses, wrapping ErrCorrupt, a
// checkpoint that lists a partition whose position is gone, and with a
// *TopicRecreatedError one written for another topic ID.
func InitK2RPartitions(ctx context.Context, c rueidis.Client, name string, inits map[string]K2RInit) error {
	var cmds rueidis.Commands
	var keys []string // of each command
	var ids []map[string]string
	for stream, in := range inits {
		if len(in.Starts) == 0 {
			continue
		}
		key := K2RKey(name, stream)
		args := []string{strconv.Itoa(K2RVersion), KindKafkaToRedis, strconv.Itoa(len(in.Starts))}
		for tp, off := range in.Starts {
			args = append(args, formatTopicPartition(tp), strconv.FormatInt(off, 10))
		}
		for topic, id := range in.TopicIDs {
			args = append(args, topic, id, in.Restart[topic])
		}
		cmds = append(cmds, c.B().Eval().Script(k2rInitScript).Numkeys(1).Key(key).Arg(args...).Build())
		keys = append(keys, key)
		ids = append(ids, in.TopicIDs)
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		reply, err := r.AsStrSlice()
		if err != nil {
			return fmt.Errorf("initialise checkpoint %q: %w", keys[i], err)
		}
		switch {
		case len(reply) == 2 && reply[0] == "hole":
			return k2rHoleError(keys[i], reply[1])
		case len(reply) == 3 && reply[0] == "recreated":
			return &TopicRecreatedError{Key: keys[i], Topic: reply[1], Recorded: reply[2], Current: ids[i][reply[1]]}
		case len(reply) == 2 && reply[0] == "corrupt":
			return setting.Errorf("checkpoint %q: %s: %w; delete it or choose another {Name}", keys[i], reply[1], ErrCorrupt)
		case len(reply) != 1 || reply[0] != "ok":
			return fmt.Errorf("initialise checkpoint %q: unexpected reply %q", keys[i], reply)
		}
	}
	return nil
}

// ParseK2RPosition reads a stored position; "" (or anything unreadable,
// which the atomic step's check reports as damage first) is NoPosition.
func ParseK2RPosition(s string) int64 {
	if s == "" {
		return NoPosition
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return NoPosition
	}
	return n
}
