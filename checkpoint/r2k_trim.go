package checkpoint

import (
	"fmt"

	"github.com/redis/rueidis"
)

// r2kTrimScript trims each stream up to where a redis-to-kafka mirror's
// checkpoint stands in it, but never past an entry a consumer group of
// the stream still needs, and counts what it removed in the checkpoint.
// It reads the groups' positions and trims in one atomic step: no group
// can read, and no checkpoint move, between the look and the XTRIM.
//
// Per stream, the trim's MINID (entries below it are removed) is the
// least of:
//
//   - the checkpoint's stream:<s>, the last entry Kafka confirmed and
//     whose XACK was committed with the checkpoint (no position: nothing
//     is trimmed);
//   - each group's last-delivered-id (a group at 0-0 holds the whole
//     stream);
//   - each group's lowest pending ID (XPENDING), when it has pending
//     entries: delivered, not acknowledged yet.
//
// Every group counts, the mirror's own too: its pending entries are
// those in flight, or those other consumers of a shared group hold
// (ClaimIdle), and its position may have been moved back below the
// checkpoint. The entry at MINID itself stays, so the stream never starts
// after the last entry the mirror (or any group) was delivered: a
// mirror's gap check, which sees a stream that starts above its group's
// position as trimmed before it read it, sees no gap in its own trims,
// whatever Redis can count.
//
// KEYS: the checkpoint, then the streams. Reply: per stream {entries
// trimmed, the MINID used (nil when nothing was to be trimmed: no
// position, or not a stream)}.
const r2kTrimScript = LuaCompareIDs + `local ck = KEYS[1]
local out = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local n, minid = 0, false
  local pos = redis.call('HGET', ck, 'stream:' .. key)
  if pos and redis.call('TYPE', key).ok == 'stream' then
    minid = pos
    for _, raw in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local g = {}
      for j = 1, #raw, 2 do g[raw[j]] = raw[j + 1] end
      local last = g['last-delivered-id']
      if cmp(last, minid) < 0 then minid = last end
      if g['pending'] > 0 then
        local p = redis.call('XPENDING', key, g['name'])
        if p[2] and cmp(p[2], minid) < 0 then minid = p[2] end
      end
    end
    n = redis.call('XTRIM', key, 'MINID', minid)
    if n > 0 then redis.call('HINCRBY', ck, 'trimmed:' .. key, n) end
  end
  out[#out + 1] = {n, minid}
end
return out
`

// R2KTrimCommand trims streams up to mirror name's checkpoint, never
// past an entry one of their consumer groups has not yet delivered and
// acknowledged, and adds what it removed to the checkpoint's trimmed:<s>
// counts (see r2kTrimScript). Sent after the commit that moved the
// checkpoint, it removes only entries Kafka confirmed and whose
// acknowledgements were committed. Its reply is read by R2KTrimReply.
func R2KTrimCommand(c rueidis.Client, name string, streams []string) rueidis.Completed {
	keys := make([]string, 0, len(streams)+1)
	keys = append(keys, R2KKey(name))
	keys = append(keys, streams...)
	return c.B().Eval().Script(r2kTrimScript).Numkeys(int64(len(keys))).Key(keys...).Build()
}

// R2KTrim is what an R2KTrimCommand did to one stream.
type R2KTrim struct {
	Stream string
	// Trimmed is how many entries it removed; MinID is the first entry
	// ID it kept ("" when it had nothing to trim: the checkpoint has no
	// position in the stream, or the key is no stream).
	Trimmed int64
	MinID   string
}

// R2KTrimReply reads the reply of an R2KTrimCommand of streams (in the
// order given) for mirror name.
func R2KTrimReply(name string, streams []string, r rueidis.RedisResult) ([]R2KTrim, error) {
	fail := func(err error) ([]R2KTrim, error) {
		return nil, fmt.Errorf("trim streams %q up to checkpoint %q (XTRIM MINID): %w", streams, R2KKey(name), err)
	}
	reply, err := r.ToArray()
	if err != nil {
		return fail(err)
	}
	if len(reply) != len(streams) {
		return fail(fmt.Errorf("unexpected reply: %d results for %d streams", len(reply), len(streams)))
	}
	out := make([]R2KTrim, len(streams))
	for i, m := range reply {
		pair, err := m.ToArray()
		if err != nil || len(pair) != 2 {
			return fail(fmt.Errorf("unexpected reply for stream %q", streams[i]))
		}
		n, err := pair[0].AsInt64()
		if err != nil {
			return fail(fmt.Errorf("unexpected count for stream %q: %w", streams[i], err))
		}
		out[i] = R2KTrim{Stream: streams[i], Trimmed: n}
		if !pair[1].IsNil() {
			out[i].MinID, _ = pair[1].ToString()
		}
	}
	return out, nil
}

// LuaCompareIDs defines, for the scripts that compare entry IDs inside
// Redis, cmp(a, b): -1, 0 or 1 as ID a is below, at or above ID b,
// compared part by part as decimal strings, exactly (Lua's numbers would
// round IDs above 2^53).
const LuaCompareIDs = `local function parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms then return id, '' end
  return ms, seq
end
local function cmp(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  if #am ~= #bm then return #am < #bm and -1 or 1 end
  if am ~= bm then return am < bm and -1 or 1 end
  if #as ~= #bs then return #as < #bs and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end
`
