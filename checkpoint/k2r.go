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

// K2RKey is the key of a kafka-to-redis mirror's checkpoint hash for one
// destination stream: xmirror:k2r:{<tag>}:<name>, where <tag> is the
// stream's effective hash tag, so the key lives in the stream's hash slot
// and the entries and their positions can be written in one script.
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
}

// LoadK2R reads the kafka-to-redis checkpoint of mirror name for stream. A
// missing key is the zero K2R with found false; anything xmirror did not
// write is an error wrapping ErrCorrupt, never a fresh start.
func LoadK2R(ctx context.Context, c rueidis.Client, name, stream string) (ck K2R, found bool, err error) {
	key := K2RKey(name, stream)
	m, err := loadHash(ctx, c, key, KindKafkaToRedis)
	if err != nil || m == nil {
		return ck, false, err
	}
	ck.Partitions = map[TopicPartition]int64{}
	for f, v := range m {
		switch f {
		case fieldVersion, fieldKind:
			continue
		case fieldEntries, fieldBytes, fieldUpdated:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return ck, false, fmt.Errorf("checkpoint %q field %q holds %q, not a count: %w; delete it or choose another --name", key, f, v, ErrCorrupt)
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
			return ck, false, fmt.Errorf("checkpoint %q field %q: %v: %w; delete it or choose another --name", key, f, err, ErrCorrupt)
		}
		off, err := strconv.ParseInt(v, 10, 64)
		if err != nil || off < 0 {
			return ck, false, fmt.Errorf("checkpoint %q field %q holds %q, not an offset: %w; delete it or choose another --name", key, f, v, ErrCorrupt)
		}
		ck.Partitions[tp] = off
	}
	return ck, true, nil
}

// NoPosition as a K2RMove's From means the checkpoint must not have a
// position for the partition yet: the mirror starts it fresh.
const NoPosition = -1

// K2RMove is what one batch moves for one partition.
type K2RMove struct {
	Partition TopicPartition
	// From is the position the batch starts from, which must be the one
	// stored (or NoPosition: none stored).
	From int64
	// To is the next offset after the batch.
	To int64
}

// K2RWrite is one destination stream's share of a batch: its entries and
// the positions of the partitions they came from, applied in one atomic
// step by ApplyK2R.
type K2RWrite struct {
	Stream string
	Moves  []K2RMove
	// Bytes is the payload size of the entries, for the running total.
	Bytes int64

	args    []string // id, nfields, name, value, ... for each entry
	entries int
}

// AddEntry starts an entry with ID id ("*" to let Redis choose) and
// nfields fields, which follow with AddField.
func (w *K2RWrite) AddEntry(id string, nfields int) {
	w.args = append(w.args, id, strconv.Itoa(nfields))
	w.entries++
}

// AddField adds a field to the entry AddEntry started.
func (w *K2RWrite) AddField(name, value string) {
	w.args = append(w.args, name, value)
}

// Entries is the number of entries added.
func (w *K2RWrite) Entries() int { return w.entries }

// K2ROptions shape the atomic step.
type K2ROptions struct {
	// Name is the mirror's name (--name).
	Name string
	// MaxLen, when positive, trims each stream to about that many entries
	// (XADD MAXLEN ~).
	MaxLen int64
	// PreserveIDs: the entry IDs given are explicit; an ID at or below the
	// stream's top entry is counted as already present instead of failing.
	PreserveIDs bool
}

// K2RResult is what the step did to one stream.
type K2RResult struct {
	// Added entries and Present ones (PreserveIDs: ID already there).
	Added, Present int64
	// Replayed is true when the checkpoint already held the batch's end
	// positions: the batch had been applied (a retry after a lost reply)
	// and nothing was written again.
	Replayed bool
}

// ConflictError is returned when a checkpoint does not hold the position a
// batch starts from: another process moved it.
type ConflictError struct {
	Key       string
	Name      string
	Partition TopicPartition
	Stored    int64 // NoPosition: none stored
	Expected  int64 // NoPosition: none expected
}

func (e *ConflictError) Error() string {
	pos := func(o int64) string {
		if o == NoPosition {
			return "no position"
		}
		return "offset " + strconv.FormatInt(o, 10)
	}
	return fmt.Sprintf("checkpoint %q: partition %s holds %s, but this mirror continues from %s; another process is probably running under --name %q (stop it, or give this one another --name)",
		e.Key, e.Partition, pos(e.Stored), pos(e.Expected), e.Name)
}

// k2rScript writes a batch's entries into one stream and moves its
// checkpoint, atomically, if and only if the checkpoint holds the positions
// the batch starts from. Everything that can fail is checked before the
// first write, because a script's writes are not rolled back.
//
// KEYS: stream, checkpoint. ARGV: version, kind, now_ms, maxlen ("" none),
// preserve ("1"/"0"), nmoves, bytes, then nmoves x (field, from, to) where
// from "" means absent, then per entry: id, nfields, name, value, ...
//
// Replies: {"ok", added, present}, {"replayed"},
// {"conflict", field, stored, expected}, {"corrupt", why}, or an error.
const k2rScript = `
local stream, ck = KEYS[1], KEYS[2]
local st = redis.call('TYPE', stream).ok
if st ~= 'none' and st ~= 'stream' then
  return redis.error_reply('WRONGTYPE key ' .. stream .. ' holds a ' .. st .. ', not a stream')
end
local ct = redis.call('TYPE', ck).ok
if ct ~= 'none' then
  if ct ~= 'hash' then return {'corrupt', 'it holds a ' .. ct .. ', not a hash'} end
  local h = redis.call('HMGET', ck, 'version', 'kind')
  if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
    return {'corrupt', 'version/kind are ' .. tostring(h[1]) .. '/' .. tostring(h[2])}
  end
end
local nmoves = tonumber(ARGV[6])
local i = 8
local fresh, replayed, first = 0, 0, nil
for m = 1, nmoves do
  local cur = redis.call('HGET', ck, ARGV[i]) or ''
  if cur == ARGV[i+1] then
    fresh = fresh + 1
  else
    if cur == ARGV[i+2] then replayed = replayed + 1 end
    if not first then first = {'conflict', ARGV[i], cur, ARGV[i+1]} end
  end
  i = i + 3
end
if nmoves > 0 and replayed == nmoves then return {'replayed'} end
if first then return first end
local moves_end = i
local maxlen, preserve = ARGV[4], ARGV[5] == '1'
local n = #ARGV
local added, present = 0, 0
while i <= n do
  local id, nf = ARGV[i], tonumber(ARGV[i+1])
  local a, b = i + 2, i + 1 + 2 * nf
  local ok
  if preserve then
    if maxlen ~= '' then
      ok = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, id, unpack(ARGV, a, b))
    else
      ok = redis.pcall('XADD', stream, id, unpack(ARGV, a, b))
    end
    if type(ok) == 'table' and ok.err then
      if string.find(ok.err, 'equal or smaller', 1, true) then
        present = present + 1
      else
        return redis.error_reply(ok.err)
      end
    else
      added = added + 1
    end
  else
    if maxlen ~= '' then
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, id, unpack(ARGV, a, b))
    else
      redis.call('XADD', stream, id, unpack(ARGV, a, b))
    end
    added = added + 1
  end
  i = b + 1
end
redis.call('HSET', ck, 'version', ARGV[1], 'kind', ARGV[2], 'updated_ms', ARGV[3])
local j = 8
while j < moves_end do
  redis.call('HSET', ck, ARGV[j], ARGV[j+2])
  j = j + 3
end
redis.call('HINCRBY', ck, 'entries', added)
redis.call('HINCRBY', ck, 'bytes', tonumber(ARGV[7]))
return {'ok', added, present}
`

// MaxFields bounds the fields of one entry: the script passes them to XADD
// as Lua call arguments, and Lua's C stack holds about 8000.
const MaxFields = 3000

// ApplyK2R applies writes, one atomic script per stream, all in one
// pipeline. It returns a result per write; err is the first failure
// (a *ConflictError, an ErrCorrupt, a Redis or connection error). Writes
// before a failure may have been applied: calling ApplyK2R again with the
// same writes is safe, applied ones come back Replayed.
//
// The script is sent with EVAL, not EVALSHA: loading it by SHA first
// (SCRIPT LOAD on every node) costs an extra round trip per batch; a few
// KiB of script text per call costs less.
func ApplyK2R(ctx context.Context, c rueidis.Client, opt K2ROptions, writes []*K2RWrite, now time.Time) ([]K2RResult, error) {
	maxlen := ""
	if opt.MaxLen > 0 {
		maxlen = strconv.FormatInt(opt.MaxLen, 10)
	}
	preserve := "0"
	if opt.PreserveIDs {
		preserve = "1"
	}
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	cmds := make(rueidis.Commands, 0, len(writes))
	for _, w := range writes {
		// Built straight into the command: the entries' arguments are
		// copied once, by the builder, not first into an argument slice.
		cmd := c.B().Eval().Script(k2rScript).Numkeys(2).Key(w.Stream, K2RKey(opt.Name, w.Stream)).
			Arg(strconv.Itoa(Version), KindKafkaToRedis, nowMS, maxlen, preserve,
				strconv.Itoa(len(w.Moves)), strconv.FormatInt(w.Bytes, 10))
		for _, m := range w.Moves {
			from := ""
			if m.From != NoPosition {
				from = strconv.FormatInt(m.From, 10)
			}
			cmd = cmd.Arg(formatTopicPartition(m.Partition), from, strconv.FormatInt(m.To, 10))
		}
		cmds = append(cmds, cmd.Arg(w.args...).Build())
	}
	results := make([]K2RResult, len(writes))
	var first error
	for i, r := range c.DoMulti(ctx, cmds...) {
		if err := k2rResult(r, opt.Name, writes[i].Stream, &results[i]); err != nil && first == nil {
			first = err
		}
	}
	return results, first
}

// InitK2RPartitions records, per destination stream, where each partition
// with no position yet starts (HSETNX: a stored position is never moved),
// with the version and kind, in one round trip. It runs before anything is
// consumed, so the first batch's compare-and-set starts from it and a run
// that mirrors nothing still leaves the position for the next run.
func InitK2RPartitions(ctx context.Context, c rueidis.Client, name string, starts map[string]map[TopicPartition]int64) error {
	var cmds rueidis.Commands
	var keys []string // of each command
	for stream, offsets := range starts {
		if len(offsets) == 0 {
			continue
		}
		key := K2RKey(name, stream)
		cmds = append(cmds,
			c.B().Hsetnx().Key(key).Field(fieldVersion).Value(strconv.Itoa(Version)).Build(),
			c.B().Hsetnx().Key(key).Field(fieldKind).Value(KindKafkaToRedis).Build())
		for tp, off := range offsets {
			cmds = append(cmds, c.B().Hsetnx().Key(key).Field(formatTopicPartition(tp)).Value(strconv.FormatInt(off, 10)).Build())
		}
		for len(keys) < len(cmds) {
			keys = append(keys, key)
		}
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("initialise checkpoint %q: %w", keys[i], err)
		}
	}
	return nil
}

func k2rResult(r rueidis.RedisResult, name, stream string, res *K2RResult) error {
	key := K2RKey(name, stream)
	reply, err := r.ToArray()
	if err != nil {
		if strings.Contains(err.Error(), "WRONGTYPE") {
			return fmt.Errorf("stream %q: %w; choose another --stream or delete the key", stream, err)
		}
		return fmt.Errorf("write stream %q: %w", stream, err)
	}
	if len(reply) == 0 {
		return fmt.Errorf("write stream %q: empty reply from the script", stream)
	}
	status, _ := reply[0].ToString()
	str := func(i int) string {
		if i >= len(reply) {
			return ""
		}
		s, _ := reply[i].ToString()
		return s
	}
	num := func(i int) int64 {
		if i >= len(reply) {
			return 0
		}
		n, _ := reply[i].AsInt64()
		return n
	}
	switch status {
	case "ok":
		res.Added, res.Present = num(1), num(2)
		return nil
	case "replayed":
		res.Replayed = true
		return nil
	case "conflict":
		tp, err := parseTopicPartition(str(1))
		if err != nil {
			return fmt.Errorf("checkpoint %q: conflict on field %q: %w", key, str(1), ErrCorrupt)
		}
		pos := func(s string) int64 {
			if s == "" {
				return NoPosition
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return NoPosition
			}
			return n
		}
		return &ConflictError{Key: key, Name: name, Partition: tp, Stored: pos(str(2)), Expected: pos(str(3))}
	case "corrupt":
		return fmt.Errorf("checkpoint %q: %s: %w; delete it or choose another --name", key, str(1), ErrCorrupt)
	}
	return fmt.Errorf("write stream %q: unexpected script reply %q", stream, status)
}

// IsConflict reports whether err is (or wraps) a *ConflictError.
func IsConflict(err error) bool {
	var c *ConflictError
	return errors.As(err, &c)
}
