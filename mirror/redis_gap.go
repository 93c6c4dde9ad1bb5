package mirror

import (
	"context"
	"fmt"
	"time"

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

// groupPosition is a consumer group's entry of XINFO GROUPS.
type groupPosition struct {
	found bool
	last  string // last-delivered-id
	// read is entries-read, the logical number of the last delivered
	// entry in the stream's history; lag is entries-added minus it.
	// Both are Redis 7.0+, and nil when Redis cannot tell.
	read, lag     int64
	readOK, lagOK bool
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

// gapClean says, from the counters alone, that no entry after the group's
// position is missing: lag counts the entries added after the last
// delivered one, and when the stream holds at least that many none of
// them can have been trimmed. Only growing, never a false "clean": a lag
// Redis overcounts (its entries-read falls behind when a read jumps
// trimmed entries) only sends the check to XINFO STREAM.
func gapClean(g groupPosition, length int64) bool {
	return g.lagOK && g.lag <= length
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

// checkGaps looks, before entries are read past them, for entries trimmed
// from the head of streams before the group delivered them, and handles
// them by OnGap. One round trip (XINFO GROUPS and XLEN per stream) when
// the counters show nothing missing, which is every read of a mirror
// that keeps up; XINFO STREAM only for the streams they do not clear.
func (s *RedisSource) checkGaps(ctx context.Context, streams []*streamState) error {
	var check []*streamState
	for _, st := range streams {
		// A group this run created has delivered nothing: what its
		// stream lost before holds nothing it was to read.
		if st.ready && !st.done && !(st.fresh && st.delivered == "") {
			check = append(check, st)
		}
	}
	if len(check) == 0 {
		return nil
	}
	c := s.cfg.Client
	cmds := make(rueidis.Commands, 0, 2*len(check))
	for _, st := range check {
		cmds = append(cmds, c.B().XinfoGroups().Key(st.name).Build(), c.B().Xlen().Key(st.name).Build())
	}
	replies := c.DoMulti(ctx, cmds...)
	var doubt []*streamState
	var doubtPos []groupPosition
	for i, st := range check {
		groups, err := replies[2*i].ToArray()
		if err != nil {
			if isRedisErrContaining(err, "no such key") || isRedisErrPrefix(err, "WRONGTYPE") {
				continue // the read reports it
			}
			return classifyRedis(fmt.Errorf("stream %q: look for entries trimmed before they were read (XINFO GROUPS): %w", st.name, err))
		}
		n, err := replies[2*i+1].AsInt64()
		if err != nil {
			return classifyRedis(fmt.Errorf("stream %q: look for entries trimmed before they were read (XLEN): %w", st.name, err))
		}
		g := findGroup(groups, s.cfg.Group)
		if !g.found || gapClean(g, n) {
			continue // a lost group is the read's to report
		}
		doubt = append(doubt, st)
		doubtPos = append(doubtPos, g)
	}
	if len(doubt) == 0 {
		return nil
	}
	cmds = cmds[:0]
	for _, st := range doubt {
		cmds = append(cmds, c.B().XinfoStream().Key(st.name).Build())
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		st, g := doubt[i], doubtPos[i]
		info, err := r.AsMap()
		if err != nil {
			if isRedisErrContaining(err, "no such key") {
				continue
			}
			return classifyRedis(fmt.Errorf("stream %q: look for entries trimmed before they were read (XINFO STREAM): %w", st.name, err))
		}
		h := parseStreamHead(info)
		gap, lost, atMost := headGap(g, h)
		if !gap {
			continue
		}
		ge := &GapError{Stream: st.name, Group: s.cfg.Group, LastDelivered: g.last, FirstEntry: h.first, LastGenerated: h.lastGen, Lost: lost, AtMost: atMost}
		if s.cfg.OnGap != OnGapSkip {
			return ge
		}
		if err := s.skipGap(ctx, st, ge, g, h); err != nil {
			return err
		}
	}
	return nil
}

// skipGap accepts a gap (OnGapSkip): it is logged and counted, and the
// group's entries-read set to what it would have been had the trimmed
// entries been read (XGROUP SETID at the same ID), so that Redis's lag
// and the next checks count from the stream as it is. Without exact
// counters the group is left alone: its first read moves it past the gap.
func (s *RedisSource) skipGap(ctx context.Context, st *streamState, ge *GapError, g groupPosition, h streamHead) error {
	// A read that failed after the check is tried again, and checks
	// again: the same gap is reported and counted once.
	seen := ge.LastDelivered + " " + ge.FirstEntry + " " + ge.LastGenerated
	if st.gapSeen == seen {
		return nil
	}
	if ge.Lost > 0 && !ge.AtMost {
		c := s.cfg.Client
		// Entries added before the stream's first one: had they been
		// read, the group's counter would stand there. Trimmed again
		// meanwhile, the next check sees the new gap (this value is
		// not above it).
		err := c.Do(ctx, c.B().XgroupSetid().Key(ge.Stream).Group(ge.Group).Id(g.last).Entriesread(h.added-h.length).Build()).Error()
		switch {
		case isRefusal(err):
			// Only the counter is left behind: a stream trimmed past
			// the group again is still found, by its first entry.
			s.log.Warn("cannot set the consumer group's entries-read past the trimmed entries; later reads may cost an XINFO STREAM more", "stream", ge.Stream, "group", ge.Group, "err", err)
		case err != nil:
			return classifyRedis(fmt.Errorf("stream %q: set the entries-read of consumer group %q past the trimmed entries (XGROUP SETID): %w", ge.Stream, ge.Group, err))
		}
	}
	st.gapSeen = seen
	s.log.Warn("entries were trimmed from the stream before this mirror read them; skipping them (--on-gap skip)",
		"stream", ge.Stream, "group", ge.Group, "last_delivered", ge.LastDelivered, "first_entry", ge.FirstEntry, "lost", lostText(ge))
	if ge.Lost > 0 {
		s.gapped.Add(ge.Lost)
	}
	return nil
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

// findGroup reads group's entry of an XINFO GROUPS reply.
func findGroup(groups []rueidis.RedisMessage, group string) groupPosition {
	for _, raw := range groups {
		info, err := raw.AsMap()
		if err != nil {
			continue
		}
		nameMsg := info["name"]
		if name, _ := nameMsg.ToString(); name != group {
			continue
		}
		g := groupPosition{found: true}
		lastMsg := info["last-delivered-id"]
		g.last, _ = lastMsg.ToString()
		if m, ok := info["entries-read"]; ok && !m.IsNil() {
			g.read, err = m.AsInt64()
			g.readOK = err == nil
		}
		if m, ok := info["lag"]; ok && !m.IsNil() {
			g.lag, err = m.AsInt64()
			g.lagOK = err == nil
		}
		return g
	}
	return groupPosition{}
}

// parseStreamHead reads the fields of XINFO STREAM that say where the
// stream starts; those of Redis 7.0 are missing before it.
func parseStreamHead(info map[string]rueidis.RedisMessage) streamHead {
	var h streamHead
	if m, ok := info["length"]; ok {
		h.length, _ = m.AsInt64()
	}
	if m, ok := info["last-generated-id"]; ok {
		h.lastGen, _ = m.ToString()
	}
	if m, ok := info["entries-added"]; ok && !m.IsNil() {
		var err error
		h.added, err = m.AsInt64()
		h.addedOK = err == nil
	}
	if m, ok := info["max-deleted-entry-id"]; ok && !m.IsNil() {
		h.maxDel, _ = m.ToString()
		h.deletedK = h.maxDel != ""
	}
	if h.length > 0 {
		if m, ok := info["first-entry"]; ok && !m.IsNil() {
			if parts, err := m.ToArray(); err == nil && len(parts) > 0 {
				h.first, _ = parts[0].ToString()
			}
		}
		if m, ok := info["recorded-first-entry-id"]; ok && h.first == "" {
			h.first, _ = m.ToString()
		}
	}
	return h
}

// probeCommands are the counters read right after each read of new
// entries, in its round trip: XINFO GROUPS and XLEN per stream.
func (s *RedisSource) probeCommands(streams []*streamState) rueidis.Commands {
	c := s.cfg.Client
	cmds := make(rueidis.Commands, 0, 2*len(streams))
	for _, st := range streams {
		cmds = append(cmds, c.B().XinfoGroups().Key(st.name).Build(), c.B().Xlen().Key(st.name).Build())
	}
	return cmds
}

// probeFresh is how long the counters read with a read (noteProbes) stand
// for the stream: from the moment that read was sent, so that a read that
// waited for entries, or a reply that waited for a process paused or short
// of CPU, has the next read checked in its own round trip.
const probeFresh = 2 * time.Millisecond

// noteProbes reads the counters taken right after a read sent at sent. A
// stream is left unchecked before its next read, if it comes within
// probeFresh of sent, when they show that it still holds
// every entry added after the group's position (lag at most its length),
// with, ahead of those, at least min(COUNT, half the stream) entries the
// group had read: trimming would have to remove all of those, between
// this read and the next, to reach an entry not read yet. Anything else
// (a stream close to losing unread entries, counters Redis does not have,
// an error) has the next read checked first (checkGaps), in its own round
// trip.
func (s *RedisSource) noteProbes(streams []*streamState, sent time.Time, after []rueidis.RedisResult) {
	for i, st := range streams {
		st.probed, st.probedAt = false, sent
		if len(after) < 2*(i+1) {
			continue
		}
		groups, err := after[2*i].ToArray()
		if err != nil {
			continue
		}
		n, err := after[2*i+1].AsInt64()
		if err != nil {
			continue
		}
		g := findGroup(groups, s.cfg.Group)
		st.probed = g.found && probeSafe(g, n, int64(s.count))
	}
}

// probeSafe is the rule of noteProbes for a group g on a stream of length
// entries, read count entries at a time.
func probeSafe(g groupPosition, length, count int64) bool {
	return g.lagOK && g.lag <= length && length-g.lag >= min(count, length/2)
}
