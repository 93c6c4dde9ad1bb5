package r2k

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
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
	// Handled, when set, is the ID up to which this mirror had mirrored
	// the stream, above LastDelivered (the group was made again, or moved
	// back): the position the gap is counted from.
	Handled string
	// Lost is how many entries were lost, -1 when Redis cannot count them
	// (Redis before 7.0 keeps no counters, the group's entries-read is
	// unknown, or Handled is set); AtMost says Lost is an upper bound
	// (entries deleted with XDEL after the position may be counted too).
	Lost   int64
	AtMost bool
	// Pending says the entries were this consumer's pending entries, from
	// FirstPending on, whose bodies were trimmed.
	Pending      bool
	FirstPending string
}

func (e *GapError) Error() string { return e.RenderSettings(nil) }

// RenderSettings is the error's text with its settings named by names.
func (e *GapError) RenderSettings(names setting.Names) string {
	if e.Pending {
		return setting.Text(names, "stream %q: %d pending entries of consumer group %q (from %s), read by an earlier run but not mirrored, were trimmed from the stream before they could be: they are lost to the mirror; pass {OnGap} skip to acknowledge them and go on",
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
	case e.Lost < 0 && e.Handled != "":
		note = " (Redis keeps no count to tell how many, if any: the group's entries-read does not count from what this mirror mirrored)"
	case e.Lost < 0:
		note = " (Redis keeps no count to tell how many, if any: the group's entries-read is unknown, or Redis is older than 7.0)"
	case e.AtMost:
		note = " (entries deleted with XDEL after that position may be in that count)"
	}
	pos := "consumer group " + strconv.Quote(e.Group) + " last delivered " + e.LastDelivered
	if e.Handled != "" {
		pos = "this mirror had mirrored up to " + e.Handled + " (consumer group " + strconv.Quote(e.Group) + " now stands at " + e.LastDelivered + ": made again, or moved back)"
	}
	return setting.Text(names, "stream %q: %s trimmed (XADD MAXLEN/MINID, XTRIM) before this mirror read them%s: %s and %s; they are lost to the mirror; pass {OnGap} skip to accept the loss and mirror on from %s",
		e.Stream, what, note, pos, where, from)
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

// headGap says whether the stream's head was trimmed past the position P
// (the group's last delivered ID, or handled when above it: every entry up
// to handled was mirrored, see useBound), and how many entries that took.
// Trimming removes entries from the head, so it lost undelivered entries
// only if the stream now starts above P (or is empty and had entries
// added after it).
//
// The count is entries-added - length - entries-read: the entries after
// the group's position no longer in the stream, trimmed or deleted with
// XDEL. It is exact when nothing was deleted with XDEL after P (Redis's
// max-deleted-entry-id is at or below P). The entry at
// max-deleted-entry-id, when it is after the group's position and inside
// the stream (at or after its first entry), was deleted with XDEL, not
// trimmed: it is taken off the count. Other entries deleted with XDEL
// after P cannot be told from trimmed ones, so with max-deleted-entry-id
// above P the count is an upper bound (atMost). Redis cannot count at all
// (lost -1) before 7.0, with the group's entries-read unknown, or when P
// is handled rather than the group's position (the group was made again,
// or moved back: its entries-read says nothing of what lay between
// handled and the head).
func headGap(g groupPosition, h streamHead, handled string) (gap bool, lost int64, atMost bool) {
	pos := g.last
	ownCount := true // the group's entries-read counts from pos
	if handled != "" && mapping.CompareIDs(handled, pos) > 0 {
		pos, ownCount = handled, false
	}
	if h.lastGen != "" && mapping.CompareIDs(pos, h.lastGen) >= 0 {
		return false, 0, false // nothing was ever added after it
	}
	if h.first != "" && mapping.CompareIDs(pos, h.first) >= 0 {
		return false, 0, false // the head is at or before the position
	}
	if h.addedOK && h.added-h.length <= 0 {
		return false, 0, false // nothing was ever removed from the stream
	}
	if !g.readOK || !h.addedOK {
		return true, -1, false
	}
	deleted := h.deletedK && h.maxDel != "" && h.maxDel != "0-0"
	// Entries added after the group's position, less those the stream
	// holds (all of them lie after it), less the one known to be XDELed.
	lost = h.added - h.length - g.read
	if deleted && h.first != "" && mapping.CompareIDs(h.maxDel, h.first) >= 0 && mapping.CompareIDs(h.maxDel, g.last) > 0 {
		lost--
	}
	if lost <= 0 {
		return false, 0, false // the entries trimmed were all delivered
	}
	if !ownCount {
		return true, -1, false
	}
	return true, lost, deleted && mapping.CompareIDs(h.maxDel, pos) > 0
}

// gapCheckScript checks streams for entries trimmed before the consumer
// group delivered them. It runs in a transaction (MULTI) right before the
// XREADGROUP it clears and gapHoldScript, so that no trim lands between
// the check and the read: an entry the read passes over was trimmed
// before the check saw it, and is counted. A script cannot hold the read
// itself cheaply (every entry would be copied into Lua and back), nor
// block (BLOCK is refused in scripts: a follow run waits with a plain
// XREAD first, which delivers nothing).
//
// Per stream (KEYS but the last), nothing is missing when:
//
//   - ARGV says to trust it (a group this run created and has not read
//     from, on a stream of which this mirror has handled nothing yet:
//     what the stream lost before holds nothing it was to read; a group
//     made again after this mirror handled entries of the stream is
//     checked against what it handled, like any other);
//   - the group's entries-read is known and its lag (entries added after
//     its position) is no more than the stream's length: every entry
//     added after the position is still there (XINFO GROUPS, XLEN);
//   - or, from XINFO STREAM, nothing was added after the position, or the
//     stream's first entry is at or before it (trimming removes entries
//     from the head: all it removed were delivered), or nothing was ever
//     removed from the stream (entries-added = length), or, counted with
//     Redis 7's counters, entries-added - length - entries-read <= 0, less
//     one when the entry at max-deleted-entry-id is after the group's
//     position and inside the stream (deleted with XDEL, not trimmed):
//     the entries trimmed were all delivered; headGap is the same rule.
//
// Any other stream has a gap, and its state is sent back: {last delivered
// ID, entries-read, length, first entry ID, last generated ID,
// entries-added, max-deleted-entry-id, setid}. Under OnGapSkip the read
// goes on past it, and the group's entries-read is first set to what it
// would be had the trimmed entries been read (XGROUP SETID at its
// position with ENTRIESREAD entries-added - length, when the loss is
// counted exactly), so that the read's own counting, Redis's lag and the
// next checks start from the stream as it is; setid is "ok", the refusal,
// or nil when not tried. Under OnGapFail, and when ARGV says a read
// follows, the read is held: every group is moved to its stream's end
// (XGROUP SETID $), so the read delivers nothing, its position and
// entries-read kept in the hold key (the last KEY), and gapHoldScript puts
// them back after the read, in the same transaction; setid then says
// whether the hold took.
//
// The reply is {"gap" or "ok", {each stream's last delivered ID}, {per
// stream: nil or its state}}; "gap" says the read was held.
//
// ARGV: group, "1" when a read follows, "1" to skip gaps; then per
// stream "1" to trust it and the ID at or below which this mirror has
// handled every entry (see useBound; empty when unknown), which counts
// as the group's position for the IDs when it is above it (a group moved
// back delivers again what was mirrored, and finds no gap there). IDs are compared part by part as decimal
// strings, exactly; counters are exact below 2^53.
const gapCheckScript = checkpoint.LuaCompareIDs + `local function hash(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
local group, read, skip = ARGV[1], ARGV[2] == '1', ARGV[3] == '1'
local hold = KEYS[#KEYS]
local last, gaps, found, gap = {}, {}, {}, false
for i = 1, #KEYS - 1 do
  local key = KEYS[i]
  last[i], gaps[i] = false, false
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
    last[i], found[i] = L, {L, rd}
    local clean = ARGV[2 + 2 * i] == '1'
    -- Entries at or below what this mirror already handled were
    -- mirrored: trimming them loses nothing, wherever the group stands.
    local P, handled = L, ARGV[3 + 2 * i]
    if handled ~= '' and cmp(handled, L) > 0 then P = handled end
    if not clean and rd and g['lag'] then
      clean = g['lag'] <= redis.call('XLEN', key)
    end
    if not clean then
      local h = hash(redis.call('XINFO', 'STREAM', key))
      local n, added, maxDel = h['length'], h['entries-added'], h['max-deleted-entry-id']
      local first = ''
      if n > 0 and h['first-entry'] then first = h['first-entry'][1] end
      local gen = h['last-generated-id']
      local exact = rd and added
      -- The entry at max-deleted-entry-id, after the group's position
      -- and inside the stream, was deleted with XDEL: no gap.
      local xdeled = 0
      if first ~= '' and maxDel and maxDel ~= '0-0' and cmp(maxDel, first) >= 0 and cmp(maxDel, L) > 0 then xdeled = 1 end
      if cmp(P, gen) >= 0 or (first ~= '' and cmp(P, first) >= 0) then
        clean = true
      elseif added and added - n <= 0 then
        clean = true -- nothing was ever removed from the stream
      elseif exact then
        clean = added - n - rd - xdeled <= 0
      end
      if not clean then
        gap = true
        local set = false
        local tombstones = first ~= '' and maxDel and maxDel ~= '0-0' and cmp(maxDel, first) >= 0
        if skip and exact and not tombstones then
          local r = redis.pcall('XGROUP', 'SETID', key, group, L, 'ENTRIESREAD', string.format('%d', added - n))
          if type(r) == 'table' and r.err then set = r.err else set = 'ok' end
        end
        gaps[i] = {L, rd or false, n, first, gen, added or false, maxDel or false, set}
      end
    end
  end
end
if not gap or skip or not read then return {'ok', last, gaps} end
for i = 1, #KEYS - 1 do
  if found[i] then
    local pos = found[i][1] .. ' '
    if found[i][2] then pos = pos .. string.format('%d', found[i][2]) end
    redis.call('HSET', hold, KEYS[i], pos)
    local r = redis.pcall('XGROUP', 'SETID', KEYS[i], group, '$')
    if gaps[i] then
      if type(r) == 'table' and r.err then gaps[i][8] = r.err else gaps[i][8] = 'ok' end
    end
  end
end
return {'gap', last, gaps}
`

// gapHoldScript puts back, after the read gapCheckScript held, each
// group where it was (XGROUP SETID, with its entries-read when it had
// one), and deletes the hold key (KEYS[1]). With no hold key it does
// nothing. ARGV: group.
const gapHoldScript = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local saved = redis.call('HGETALL', KEYS[1])
for i = 1, #saved, 2 do
  local L, rd = string.match(saved[i + 1], '^(%S+) (%S*)$')
  if rd ~= '' then
    redis.call('XGROUP', 'SETID', saved[i], ARGV[1], L, 'ENTRIESREAD', rd)
  else
    redis.call('XGROUP', 'SETID', saved[i], ARGV[1], L)
  end
end
redis.call('DEL', KEYS[1])
return 1
`

// gapHoldKey is where gapCheckScript keeps the groups' positions while it
// holds a read: only ever inside one transaction, never seen outside it.
func (s *RedisSource) gapHoldKey() string {
	return checkpoint.R2KGapHoldKey(s.cfg.Mirror)
}

// gapBound is the ID up to which the gap check takes a stream's entries
// as mirrored, above the group's position ("" when none): what this
// mirror handled (see useBound). Under ClaimIdle that is not a bound of
// what was mirrored, but for a group this run created and has not read
// from, the checkpoint's stream:<s> (what Kafka confirmed) still stands
// for a position the stream's trimming is checked against: the group was
// made again (XGROUP DESTROY, Redis restored from before it existed), and
// trusting it would pass any trim above that position silently.
func (s *RedisSource) gapBound(st *streamState) string {
	if s.useBound() {
		return st.handled()
	}
	if st.fresh && st.delivered == "" {
		return s.cfg.Confirmed[st.name]
	}
	return ""
}

// checkedRead checks streams for entries trimmed before the group
// delivered them and, when read is set, reads new entries, in one
// transaction (gapCheckScript, XREADGROUP, gapHoldScript), so that the
// check sees exactly what the read passes over. A gap stops with a
// *GapError (OnGapFail) and nothing is read past it: the group stays
// where it was, so a rerun stops there again. Under OnGapSkip it is
// counted and the read goes past it. extra commands go in the same round
// trip, after the transaction; their replies are after. The reply is that
// of XREADGROUP (nil when nothing was read); each stream's lastRead is
// the group's position before it.
func (s *RedisSource) checkedRead(ctx context.Context, streams []*streamState, read bool, extra ...rueidis.Completed) (reply rueidis.RedisMessage, after []rueidis.RedisResult, err error) {
	c := s.cfg.Client
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	hold := s.gapHoldKey()
	names := make([]string, len(streams))
	keys := make([]string, 0, len(streams)+1)
	args := make([]string, 0, 3+2*len(streams))
	args = append(args, s.cfg.Group, flag(read), flag(s.cfg.OnGap == mirror.OnGapSkip))
	for i, st := range streams {
		names[i] = st.name
		handled := s.gapBound(st)
		args = append(args, flag(st.fresh && st.delivered == "" && handled == ""), handled)
	}
	keys = append(append(keys, names...), hold)
	check := c.B().Eval().Script(gapCheckScript).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
	var cmds rueidis.Commands
	if read {
		ids := make([]string, len(streams))
		for i := range ids {
			ids[i] = ">"
		}
		cmds = rueidis.Commands{
			c.B().Multi().Build(),
			check,
			c.B().Xreadgroup().Group(s.cfg.Group, s.cfg.Consumer).Count(int64(s.count)).Streams().Key(names...).Id(ids...).Build(),
			c.B().Eval().Script(gapHoldScript).Numkeys(int64(1 + len(names))).Key(append([]string{hold}, names...)...).Arg(s.cfg.Group).Build(),
			c.B().Exec().Build(),
		}
	} else {
		cmds = rueidis.Commands{check}
	}
	all := c.DoMulti(ctx, append(cmds, extra...)...)
	replies, after := all[:len(cmds)], all[len(cmds):]
	var checked, readMsg rueidis.RedisMessage
	var checkErr error
	if read {
		for i, r := range replies[:len(cmds)-1] {
			if err := r.Error(); err != nil {
				if i == 0 {
					return rueidis.RedisMessage{}, after, mirror.ClassifyRedis(fmt.Errorf("start the transaction of the read (MULTI): %w", err))
				}
				// Refused while queued: EXEC discards the whole
				// transaction, nothing ran.
				return rueidis.RedisMessage{}, after, s.readError(ctx, err)
			}
		}
		exec, err := replies[len(cmds)-1].ToArray()
		if err != nil {
			return rueidis.RedisMessage{}, after, s.readError(ctx, err)
		}
		if len(exec) != 3 {
			return rueidis.RedisMessage{}, after, fmt.Errorf("read streams: EXEC returned %d replies for 3 commands", len(exec))
		}
		checked, readMsg = exec[0], exec[1]
		checkErr = checked.Error()
		if err := exec[2].Error(); err != nil {
			return rueidis.RedisMessage{}, after, fmt.Errorf("put the consumer group back after a gap held the read: %w", err)
		}
	} else {
		checked, checkErr = replies[0].ToMessage()
	}
	var parts []rueidis.RedisMessage
	if checkErr == nil {
		parts, checkErr = checked.ToArray()
	}
	if checkErr != nil {
		// The check failed inside the transaction, and the read did
		// not wait for it: what it delivered is pending, and re-read.
		return rueidis.RedisMessage{}, after, mirror.ClassifyRedis(fmt.Errorf("look for entries trimmed before they were read: %w", checkErr))
	}
	var status string
	var pos, gaps []rueidis.RedisMessage
	if len(parts) == 3 {
		status, _ = parts[0].ToString()
		pos, _ = parts[1].ToArray()
		gaps, err = parts[2].ToArray()
	}
	if err != nil || (status != "ok" && status != "gap") {
		return rueidis.RedisMessage{}, after, fmt.Errorf("look for entries trimmed before they were read: unexpected reply of the check")
	}
	for i, p := range pos {
		if i < len(streams) && !p.IsNil() {
			streams[i].lastRead, _ = p.ToString()
		}
	}
	var first *GapError
	for i, d := range gaps {
		if i >= len(streams) || d.IsNil() {
			continue
		}
		g, h, setid, err := parseGap(d)
		if err != nil {
			return rueidis.RedisMessage{}, after, fmt.Errorf("stream %q: look for entries trimmed before they were read: %w", streams[i].name, err)
		}
		handled := s.gapBound(streams[i])
		gap, lost, atMost := headGap(g, h, handled)
		if !gap {
			continue // only counters above 2^53 could make the script see one
		}
		ge := &GapError{Stream: streams[i].name, Group: s.cfg.Group, LastDelivered: g.last, FirstEntry: h.first, LastGenerated: h.lastGen, Lost: lost, AtMost: atMost}
		if handled != "" && mapping.CompareIDs(handled, g.last) > 0 {
			ge.Handled = handled
		}
		if s.cfg.OnGap == mirror.OnGapSkip {
			s.skipGap(streams[i], ge, setid)
			continue
		}
		if read && setid != "ok" {
			// The read could not be held: it went past the gap, which a
			// rerun will not see again.
			s.log.Warn("could not hold the consumer group before the gap (XGROUP SETID refused); what the read delivered past it stays pending", "stream", ge.Stream, "group", ge.Group, "err", setid)
		}
		if first == nil {
			first = ge
		}
	}
	if first != nil {
		return rueidis.RedisMessage{}, after, first
	}
	if status == "gap" {
		return rueidis.RedisMessage{}, after, mirror.Transient(fmt.Errorf("streams %q: the read was held for a gap the counters do not show; reading again", names))
	}
	if !read {
		return rueidis.RedisMessage{}, after, nil
	}
	if err := readMsg.Error(); err != nil && !rueidis.IsRedisNil(err) {
		return rueidis.RedisMessage{}, after, s.readError(ctx, err)
	}
	return readMsg, after, nil
}

// parseGap reads a stream's state in gapCheckScript's reply; setid is what
// XGROUP SETID gave ("ok", a refusal, or "" when not tried).
func parseGap(d rueidis.RedisMessage) (g groupPosition, h streamHead, setid string, err error) {
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
		if errors.As(err, &ge) || mirror.IsTransient(err) {
			return err
		}
		return mirror.ClassifyRedis(fmt.Errorf("look for entries trimmed before they were read: %w", err))
	}
	return nil
}

// skipGap accepts a gap (OnGapSkip): it is logged and counted. gapCheckScript
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
			s.gapLost.Add(add.Lost)
			s.gapSkipped.Add(add.Lost)
		}
		s.log.Warn("entries were trimmed from the stream before this mirror read them; skipping them, as the gap policy says", "on_gap", mirror.OnGapSkip,
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
	if count == 0 || s.cfg.OnGap == mirror.OnGapSkip {
		return nil
	}
	return &GapError{Stream: stream, Group: s.cfg.Group, Pending: true, FirstPending: first, Lost: int64(count)}
}

// setIDCheckScript tries XGROUP SETID on the consumer group (ARGV[1]) of
// each stream (KEYS) without changing anything: the group is set to its
// own last delivered ID and entries-read, read in the same script, so
// nothing can move it in between, and its pending entries and consumers
// are not touched. On a stream without the group, or a missing stream,
// SETID is refused by the server after the permission check (NOGROUP, or
// the key must exist), which moves nothing. The reply is 0, or {i, the
// refusal} for the first stream refused.
const setIDCheckScript = `local function hash(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
local group = ARGV[1]
for i = 1, #KEYS do
  local key = KEYS[i]
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  local g, r, missing = nil, nil, false
  if type(groups) == 'table' and groups.err then
    if not string.find(groups.err, 'no such key', 1, true) then return {i, groups.err} end
    missing = true
  else
    for _, raw in ipairs(groups) do
      local m = hash(raw)
      if m['name'] == group then g = m break end
    end
  end
  if g then
    local rd = g['entries-read']
    if rd then
      r = redis.pcall('XGROUP', 'SETID', key, group, g['last-delivered-id'], 'ENTRIESREAD', string.format('%d', rd))
    else
      r = redis.pcall('XGROUP', 'SETID', key, group, g['last-delivered-id'])
    end
    if type(r) == 'table' and r.err then return {i, r.err} end
  else
    r = redis.pcall('XGROUP', 'SETID', key, group, '$')
    if type(r) ~= 'table' or not r.err then
      return {i, 'XGROUP SETID on a stream without the group did not fail'}
    end
    local benign = string.find(r.err, 'NOGROUP', 1, true) == 1 or (missing and string.find(r.err, 'requires the key to exist', 1, true))
    if not benign then return {i, r.err} end
  end
end
return 0
`

// checkSetID refuses OnGapFail when the server refuses this user XGROUP
// SETID on the mirror's consumer group: a gap found by a read is held
// with it (gapCheckScript moves the group to the stream's end for the
// read, gapHoldScript puts it back), and without it the read goes past
// the gap, which a rerun then no longer sees. Like
// checkTransactions, it asks the server at start rather than
// parsing ACL rules, and changes nothing (see setIDCheckScript).
func (s *RedisSource) checkSetID(ctx context.Context) error {
	if s.cfg.OnGap == mirror.OnGapSkip || len(s.streams) == 0 {
		return nil
	}
	c := s.cfg.Client
	res := c.Do(ctx, c.B().Eval().Script(setIDCheckScript).Numkeys(int64(len(s.cfg.Streams))).Key(s.cfg.Streams...).Arg(s.cfg.Group).Build())
	if err := res.Error(); err != nil {
		return mirror.ClassifyRedis(setting.Errorf("check that XGROUP SETID is allowed on consumer group %q (needed by {OnGap} fail): %w", s.cfg.Group, err))
	}
	if n, err := res.AsInt64(); err == nil && n == 0 {
		return nil
	}
	reply, err := res.ToArray()
	if err != nil || len(reply) != 2 {
		return setting.Errorf("check that XGROUP SETID is allowed on consumer group %q (needed by {OnGap} fail): unexpected reply", s.cfg.Group)
	}
	i, _ := reply[0].AsInt64()
	why, _ := reply[1].ToString()
	stream := ""
	if i >= 1 && int(i) <= len(s.cfg.Streams) {
		stream = s.cfg.Streams[i-1]
	}
	return setting.Errorf("stream %q: {OnGap} fail needs XGROUP SETID on consumer group %q, and the server refuses it (%s): it keeps the group at entries trimmed before they were read, so that a read does not pass them; grant it (ACL SETUSER <user> +xgroup|setid, on the stream keys) or pass {OnGap} skip to accept such gaps", stream, s.cfg.Group, why)
}
