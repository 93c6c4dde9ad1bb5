package mirror

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"
)

// GapError is a stream that lost entries before this mirror read them:
// the stream's head was trimmed (XADD MAXLEN or MINID, XTRIM) past the
// consumer group's last delivered ID, or pending entries an earlier run
// read but had not mirrored lost their bodies. Returned under OnGapFail.
type GapError struct {
	Stream string
	Group  string
	// LastDelivered is the group's last delivered ID; FirstEntry is the
	// stream's first entry ID now ("" when the stream is empty, and then
	// LastGenerated is its last entry ID).
	LastDelivered, FirstEntry, LastGenerated string
	// Lost is how many entries were lost, -1 when Redis cannot count them
	// (Redis before 7.0 keeps no counters, or the group's entries-read is
	// unknown); AtMost says Lost is an upper bound (entries deleted with
	// XDEL inside the stream are counted too).
	Lost   int64
	AtMost bool
	// Pending says the entries were this consumer's pending entries, from
	// FirstPending on, whose bodies were trimmed.
	Pending      bool
	FirstPending string
}

func (e *GapError) Error() string {
	if e.Pending {
		return fmt.Sprintf("stream %q: %d pending entries of consumer group %q (from %s), read by an earlier run but not mirrored, were trimmed from the stream before they could be: they are lost to the mirror; pass --on-gap skip to acknowledge them and go on",
			e.Stream, e.Lost, e.Group, e.FirstPending)
	}
	var what string
	switch {
	case e.Lost < 0:
		what = "entries may have been"
	case e.AtMost:
		what = fmt.Sprintf("up to %d entries were", e.Lost)
	default:
		what = fmt.Sprintf("%d entries were", e.Lost)
	}
	where := "the stream now starts at " + e.FirstEntry
	from := e.FirstEntry
	if e.FirstEntry == "" {
		where, from = "the stream is now empty (its last entry was "+e.LastGenerated+")", "the next entry added"
	}
	var note string
	switch {
	case e.Lost < 0:
		note = " (Redis keeps no count to tell how many, if any: the group's entries-read is unknown, or Redis is older than 7.0)"
	case e.AtMost:
		note = " (entries deleted with XDEL inside the stream are in that count)"
	}
	return fmt.Sprintf("stream %q: %s trimmed (XADD MAXLEN/MINID, XTRIM) before this mirror read them%s: consumer group %q last delivered %s and %s; they are lost to the mirror; pass --on-gap skip to accept the loss and mirror on from %s",
		e.Stream, what, note, e.Group, e.LastDelivered, where, from)
}

// groupPosition is what XINFO GROUPS says of the consumer group.
type groupPosition struct {
	last string // last-delivered-id
	// read is entries-read, the logical number of the last delivered
	// entry in the stream's history (Redis 7.0+); readOK is false when
	// Redis cannot tell.
	read   int64
	readOK bool
}

// streamHead is what XINFO STREAM says about a stream's start.
type streamHead struct {
	length   int64
	first    string // "" when empty
	lastGen  string
	added    int64 // entries-added, Redis 7.0+
	addedOK  bool
	maxDel   string // max-deleted-entry-id, Redis 7.0+
	deletedK bool   // maxDel was reported
}

// headGap says whether the stream's head was trimmed past the group's
// position, and how many entries that took. Trimming removes entries
// from the head, so it lost undelivered entries only if the stream now
// starts above the last delivered ID (or is empty and had entries added
// after it); entries deleted one by one with XDEL inside the stream are
// not a gap. Without counters (Redis before 7.0, an unknown entries-read)
// Redis cannot tell whether entries lay between: lost is then -1.
func headGap(g groupPosition, h streamHead) (gap bool, lost int64, atMost bool) {
	if h.lastGen != "" && compareIDs(g.last, h.lastGen) >= 0 {
		return false, 0, false // nothing was ever added after it
	}
	if h.first != "" && compareIDs(g.last, h.first) >= 0 {
		return false, 0, false // the head is at or before the position
	}
	if !g.readOK || !h.addedOK {
		return true, -1, false
	}
	// Entries added after the last delivered one, less those the stream
	// holds (all of them lie after it).
	lost = h.added - h.length - g.read
	if lost <= 0 {
		return false, 0, false // the entries trimmed were all delivered
	}
	tombstones := h.first != "" && h.deletedK && h.maxDel != "0-0" && compareIDs(h.maxDel, h.first) >= 0
	return true, lost, tombstones
}

// gapToken is a stream's state that the mirror looked at and found no gap
// in (or accepted one under OnGapSkip): the group's last delivered ID, the
// stream's first entry and, for an empty stream, its last generated ID.
// While Redis still shows exactly that, nothing was trimmed since, and
// gapScript reads without sending the counters back again.
type gapToken struct{ last, first, lastGen string }

// gapScript is the check and the read of new entries in one step that
// Redis runs atomically, so that no trim lands between them: an entry the
// read passes over was trimmed before the check saw it, and is counted.
// Per stream (KEYS), the stream is clean when:
//
//   - ARGV says to trust it (a group this run created and has not read
//     from: what the stream lost before holds nothing it was to read);
//   - the group's entries-read is known and its lag (entries added after
//     its position) is no more than the stream's length: every entry
//     added after the position is still there (XINFO GROUPS, XLEN);
//   - or, from XINFO STREAM, nothing was added after the position, or the
//     stream's first entry is at or before it (trimming removes entries
//     from the head: all it removed were delivered), or the state is the
//     one the mirror already cleared (the stream's gapToken).
//
// Any other stream is in doubt, and its state is sent back: {last
// delivered ID, entries-read, length, first entry ID, last generated ID,
// entries-added, max-deleted-entry-id, setid}, for the mirror to count
// the gap (headGap) or clear the state. Under OnGapFail a doubt stops the
// script before anything is read: {"check", {per stream: nil or its
// state}}. Under OnGapSkip the read goes on past the gap, and the group's
// entries-read is first set to what it would be had the trimmed entries
// been read (XGROUP SETID at its position with ENTRIESREAD entries-added
// minus length, when Redis counts the loss exactly), so that the read's
// own counting, Redis's lag and the next checks start from the stream as
// it is; setid is "ok", the refusal, or nil when not tried.
//
// When ARGV says to read, XREADGROUP ... > then reads every stream (BLOCK
// is not allowed in scripts: a follow run waits with a plain XREAD first,
// which delivers nothing). The reply is {"read", <XREADGROUP reply or
// nil>, {each stream's last delivered ID before the read}, {per stream:
// nil or its state}}.
//
// ARGV: group, consumer, COUNT, "1" to read, "1" to skip gaps; then per
// stream: "1" to trust it, and its gapToken (last, first, lastGen; empty
// for none). IDs are compared part by part as decimal strings, exactly.
var gapScript = `local function parts(id)
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
local function hash(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
local group, consumer, count = ARGV[1], ARGV[2], ARGV[3]
local read, skip = ARGV[4] == '1', ARGV[5] == '1'
local last, doubt, unsure = {}, {}, false
for i, key in ipairs(KEYS) do
  local a = 1 + 4 * i
  local trust, clearL, clearF, clearG = ARGV[a + 1] == '1', ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  last[i], doubt[i] = false, false
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  local g
  if type(groups) == 'table' and not groups.err then
    for _, raw in ipairs(groups) do
      local m = hash(raw)
      if m['name'] == group then g = m break end
    end
  end
  -- Without the stream or the group, the read reports it.
  if g then
    local L, rd = g['last-delivered-id'], g['entries-read']
    last[i] = L
    local clean = trust
    if not clean and rd and g['lag'] then
      clean = g['lag'] <= redis.call('XLEN', key)
    end
    if not clean then
      local h = hash(redis.call('XINFO', 'STREAM', key))
      local n, added, maxDel = h['length'], h['entries-added'], h['max-deleted-entry-id']
      local first = ''
      if n > 0 and h['first-entry'] then first = h['first-entry'][1] end
      local gen = h['last-generated-id']
      clean = cmp(L, gen) >= 0 or (first ~= '' and cmp(L, first) >= 0)
        or (L == clearL and first == clearF and (first ~= '' or gen == clearG))
      if not clean then
        unsure = true
        local set = false
        if skip and rd and added and added - n > rd
            and not (first ~= '' and maxDel and maxDel ~= '0-0' and cmp(maxDel, first) >= 0) then
          local r = redis.pcall('XGROUP', 'SETID', key, group, L, 'ENTRIESREAD', string.format('%d', added - n))
          if type(r) == 'table' and r.err then set = r.err else set = 'ok' end
        end
        doubt[i] = {L, rd or false, n, first, gen, added or false, maxDel or false, set}
      end
    end
  end
end
if unsure and not skip then return {'check', doubt} end
if not read then return {'read', false, last, doubt} end
local args = {'XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS'}
for _, key in ipairs(KEYS) do args[#args + 1] = key end
for _ = 1, #KEYS do args[#args + 1] = '>' end
local r = redis.pcall(unpack(args))
if type(r) == 'table' and r.err then return r end
return {'read', r, last, doubt}
`

// gapScriptSHA is gapScript's SHA1, for EVALSHA.
var gapScriptSHA = func() string {
	sum := sha1.Sum([]byte(gapScript))
	return hex.EncodeToString(sum[:])
}()

// gapRetries bounds how many times in a row checkedRead clears a state
// that changed again before it could read: each time means trimming past
// the group's position between two round trips.
const gapRetries = 16

// checkedRead runs gapScript on streams: it checks them for entries
// trimmed before the group delivered them and, when read is set and none
// is found, reads new entries in the same atomic step. A gap found stops
// with a *GapError (OnGapFail) before anything is read past it, or is
// counted and accepted (OnGapSkip) and read past in that step; a state
// the mirror clears of doubt is checked and read again. extra
// commands go in the round trip of the first try, after the script; their
// replies are after. The reply is that of XREADGROUP (nil when nothing
// was read); each stream's lastRead is the group's position before it.
func (s *RedisSource) checkedRead(ctx context.Context, streams []*streamState, read bool, extra ...rueidis.Completed) (reply rueidis.RedisMessage, after []rueidis.RedisResult, err error) {
	c := s.cfg.Client
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	keys := make([]string, len(streams))
	args := make([]string, 0, 5+4*len(streams))
	args = append(args, s.cfg.Group, s.cfg.Consumer, strconv.Itoa(s.count), flag(read), flag(s.cfg.OnGap == OnGapSkip))
	for i, st := range streams {
		keys[i] = st.name
		args = append(args, flag(st.fresh && st.delivered == ""), st.clear.last, st.clear.first, st.clear.lastGen)
	}
	eval := false
	for try := 0; ; try++ {
		var cmd rueidis.Completed
		if eval {
			cmd = c.B().Eval().Script(gapScript).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
		} else {
			cmd = c.B().Evalsha().Sha1(gapScriptSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
		}
		var res rueidis.RedisResult
		if try == 0 && len(extra) > 0 {
			all := c.DoMulti(ctx, append(rueidis.Commands{cmd}, extra...)...)
			res, after = all[0], all[1:]
		} else {
			res = c.Do(ctx, cmd)
		}
		if !eval && isRedisErrPrefix(res.Error(), "NOSCRIPT") {
			eval = true // not cached (a new or restarted Redis): nothing ran
			continue
		}
		parts, err := res.ToArray()
		if err != nil {
			return rueidis.RedisMessage{}, after, err
		}
		var status string
		if len(parts) > 0 {
			status, _ = parts[0].ToString()
		}
		var doubts []rueidis.RedisMessage
		switch {
		case status == "read" && len(parts) == 4:
			doubts, err = parts[3].ToArray()
		case status == "check" && len(parts) == 2:
			doubts, err = parts[1].ToArray()
		default:
			err = fmt.Errorf("%q in %d parts", status, len(parts))
		}
		if err != nil {
			return rueidis.RedisMessage{}, after, fmt.Errorf("look for entries trimmed before they were read: unexpected reply of the check: %w", err)
		}
		for i, d := range doubts {
			if i >= len(streams) || d.IsNil() {
				continue
			}
			g, h, setid, err := parseDoubt(d)
			if err != nil {
				return rueidis.RedisMessage{}, after, fmt.Errorf("stream %q: look for entries trimmed before they were read: %w", streams[i].name, err)
			}
			if err := s.handleGap(streams[i], g, h, setid); err != nil {
				return rueidis.RedisMessage{}, after, err
			}
			args[5+4*i+1], args[5+4*i+2], args[5+4*i+3] = streams[i].clear.last, streams[i].clear.first, streams[i].clear.lastGen
		}
		if status == "read" {
			if pos, err := parts[2].ToArray(); err == nil {
				for i, p := range pos {
					if i < len(streams) && !p.IsNil() {
						streams[i].lastRead, _ = p.ToString()
					}
				}
			}
			return parts[1], after, nil
		}
		if try >= gapRetries {
			return rueidis.RedisMessage{}, after, Transient(fmt.Errorf("streams %q: the stream's head moved at every look for entries trimmed before they were read; trying again", keys))
		}
	}
}

// parseDoubt reads a stream's state in gapScript's reply; setid is what
// setting the group's entries-read past a gap gave ("ok", a refusal, or
// "" when not tried).
func parseDoubt(d rueidis.RedisMessage) (g groupPosition, h streamHead, setid string, err error) {
	f, err := d.ToArray()
	if err != nil || len(f) != 8 {
		return g, h, "", fmt.Errorf("unexpected reply of the check")
	}
	g.last, _ = f[0].ToString()
	if !f[1].IsNil() {
		g.read, err = f[1].AsInt64()
		g.readOK = err == nil
	}
	h.length, _ = f[2].AsInt64()
	h.first, _ = f[3].ToString()
	h.lastGen, _ = f[4].ToString()
	if !f[5].IsNil() {
		h.added, err = f[5].AsInt64()
		h.addedOK = err == nil
	}
	if !f[6].IsNil() {
		h.maxDel, _ = f[6].ToString()
		h.deletedK = h.maxDel != ""
	}
	if !f[7].IsNil() {
		setid, _ = f[7].ToString()
	}
	return g, h, setid, nil
}

// handleGap decides on a stream gapScript could not clear: no gap (the
// state is cleared), or a gap, handled by OnGap.
func (s *RedisSource) handleGap(st *streamState, g groupPosition, h streamHead, setid string) error {
	gap, lost, atMost := headGap(g, h)
	if gap {
		ge := &GapError{Stream: st.name, Group: s.cfg.Group, LastDelivered: g.last, FirstEntry: h.first, LastGenerated: h.lastGen, Lost: lost, AtMost: atMost}
		if s.cfg.OnGap != OnGapSkip {
			return ge
		}
		s.skipGap(st, ge, setid)
	}
	st.clear = gapToken{last: g.last, first: h.first, lastGen: h.lastGen}
	return nil
}

// checkGaps looks, before anything is read, for entries trimmed from the
// head of streams before the group delivered them, and handles them by
// OnGap (see checkedRead): a gap stops a run at start, as
// kafka-to-redis's does, and leaves the group where it was.
func (s *RedisSource) checkGaps(ctx context.Context) error {
	var check []*streamState
	for _, st := range s.streams {
		if st.ready && !st.done {
			check = append(check, st)
		}
	}
	if len(check) == 0 {
		return nil
	}
	if _, _, err := s.checkedRead(ctx, check, false); err != nil {
		var ge *GapError
		if errors.As(err, &ge) || IsTransient(err) {
			return err
		}
		return classifyRedis(fmt.Errorf("look for entries trimmed before they were read: %w", err))
	}
	return nil
}

// skipGap accepts a gap (OnGapSkip): it is logged and counted. gapScript
// has set the group's entries-read to what it would have been had the
// trimmed entries been read (setid "ok"), so that Redis's lag and the
// next checks count from the stream as it is; without exact counters the
// group is left alone, and its read moves it past the gap. A gap counted
// at the group's position with the counter left behind comes back, in
// full, while the group stays there: only what was not counted yet is
// added.
func (s *RedisSource) skipGap(st *streamState, ge *GapError, setid string) {
	var counted int64
	if st.gapAt == ge.LastDelivered {
		counted = st.gapCounted
	} else if ge.Lost < 0 {
		counted = -1 // logged once per position
	}
	if setid != "" && setid != "ok" && st.gapAt != ge.LastDelivered {
		// Only the counter is left behind: a stream trimmed past the
		// group again is still found, by its first entry.
		s.log.Warn("cannot set the consumer group's entries-read past the trimmed entries; later reads may cost an XINFO STREAM more", "stream", ge.Stream, "group", ge.Group, "err", setid)
	}
	if ge.Lost < 0 && counted < 0 || ge.Lost > counted {
		add := *ge
		if ge.Lost > 0 {
			add.Lost = ge.Lost - max(counted, 0)
			s.gapped.Add(add.Lost)
		}
		s.log.Warn("entries were trimmed from the stream before this mirror read them; skipping them (--on-gap skip)",
			"stream", ge.Stream, "group", ge.Group, "last_delivered", ge.LastDelivered, "first_entry", ge.FirstEntry, "lost", lostText(&add))
	}
	if setid == "ok" {
		st.gapAt, st.gapCounted = "", 0
	} else {
		st.gapAt, st.gapCounted = ge.LastDelivered, max(ge.Lost, 0)
	}
}

func lostText(ge *GapError) string {
	switch {
	case ge.Lost < 0:
		return "unknown"
	case ge.AtMost:
		return fmt.Sprintf("at most %d", ge.Lost)
	}
	return fmt.Sprint(ge.Lost)
}

// trimmedPending handles pending entries of one read whose bodies were
// trimmed (count of them, from first on) by OnGap: an error under
// OnGapFail, else nil (they are acknowledged and counted as trimmed).
func (s *RedisSource) trimmedPending(stream, first string, count int) error {
	if count == 0 || s.cfg.OnGap == OnGapSkip {
		return nil
	}
	return &GapError{Stream: stream, Group: s.cfg.Group, Pending: true, FirstPending: first, Lost: int64(count)}
}
