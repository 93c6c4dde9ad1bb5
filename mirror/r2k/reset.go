package r2k

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// A ResetTarget is where a reset moves a mirror's positions: Earliest,
// Latest, the entry ID, or the first entry at or after Time.
type ResetTarget struct {
	Earliest, Latest bool
	ID               string
	Time             time.Time
}

// Reset moves mirror name's position in each of its streams to target:
// its consumer group (XGROUP SETID, with the entries-read count that
// keeps Redis's lag and the mirror's gap check right) and its
// checkpoint's stream:<s> field, together, in one transaction per
// stream; the group's pending entries are acknowledged first, so the
// next run reads from the new position and nothing else. The caller holds
// the mirror's lease. The checkpoint's partition fields are left alone:
// they say where the mirror's records end in Kafka, which no reset
// changes. After a reset backwards, the next run sends the entries after
// the new position again (as new records); entries an interrupted run
// left in Kafka after the checkpoint are found by its read-back and not
// sent a second time.
func Reset(ctx context.Context, rc rueidis.Client, name string, streams []string, target ResetTarget) ([]mirror.Moved, error) {
	ck, found, err := checkpoint.LoadR2K(ctx, rc, name)
	if err != nil {
		return nil, err
	}
	group := checkpoint.LegacyGroup
	if found && ck.Group != "" {
		group = ck.Group
	}
	all := slices.Collect(maps.Keys(ck.Streams))
	for _, s := range streams {
		if !slices.Contains(all, s) {
			all = append(all, s)
		}
	}
	slices.Sort(all)
	// Every stream's target first: a stream that cannot be moved stops
	// the reset before anything was written.
	plans := make([]streamReset, 0, len(all))
	for _, st := range all {
		p, err := planStream(ctx, rc, group, st, ck.Streams[st], target)
		if err != nil {
			return nil, fmt.Errorf("reset stream %q of mirror %q: %w; nothing was changed", st, name, err)
		}
		plans = append(plans, p)
	}
	var moved []mirror.Moved
	for _, p := range plans {
		if err := p.write(ctx, rc, name, group); err != nil {
			return moved, fmt.Errorf("reset stream %q of mirror %q: %w", p.stream, name, err)
		}
		moved = append(moved, mirror.Moved{Stream: p.stream, Before: p.before, After: p.pos})
	}
	return moved, nil
}

// streamReset is where one stream's group and checkpoint field go.
type streamReset struct {
	stream, before, pos string
	read                int64    // the group's entries-read at pos
	pending             []string // entries the group holds pending, acknowledged with the move
}

// planStream works out where stream's group goes, reading only.
func planStream(ctx context.Context, rc rueidis.Client, group, stream, checkpointed string, target ResetTarget) (streamReset, error) {
	r := streamReset{stream: stream}
	info, err := rc.Do(ctx, rc.B().XinfoStream().Key(stream).Build()).AsMap()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return r, fmt.Errorf("the stream does not exist")
		}
		return r, fmt.Errorf("XINFO STREAM: %w", err)
	}
	str := func(k string) string { v := info[k]; s, _ := v.ToString(); return s }
	num := func(k string) int64 { v := info[k]; n, _ := v.AsInt64(); return n }
	length, added, last := num("length"), num("entries-added"), str("last-generated-id")
	first := ""
	if fe := info["first-entry"]; !fe.IsNil() {
		if e, err := fe.ToArray(); err == nil && len(e) > 0 {
			first, _ = e[0].ToString()
		}
	}
	r.before = checkpointed
	if groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray(); err == nil {
		for _, g := range groups {
			m, _ := g.AsStrMap()
			if m["name"] == group {
				r.before = m["last-delivered-id"]
			}
		}
	}
	if r.before == "" {
		r.before = "(none)"
	}
	// The position is the last entry mirrored: the next run mirrors the
	// entries after it. Never past the stream's last entry: the group
	// would pass over entries added later without a gap to see.
	pos := target.ID
	switch {
	case target.Latest:
		pos = last
	case target.Earliest:
		pos = ""
	case target.ID == "":
		pos = idBefore(target.Time.UnixMilli())
	}
	if pos != "" && last != "" && mapping.CompareIDs(pos, last) > 0 {
		pos = last
	}
	// A position below the first entry is the start: just before it,
	// counting every entry removed before it as read, so no gap is seen.
	if pos == "" || first == "" || mapping.CompareIDs(pos, first) < 0 {
		switch {
		case first != "":
			pos, r.read = idJustBefore(first), added-length
		default: // empty: everything ever added was removed
			pos, r.read = last, added
		}
	} else {
		after, err := countAfter(ctx, rc, stream, pos)
		if err != nil {
			return r, err
		}
		r.read = added - after
	}
	if pos == "" {
		pos = "0-0"
	}
	r.pos = pos
	if r.pending, err = pendingIDs(ctx, rc, stream, group); err != nil {
		return r, err
	}
	return r, nil
}

// write moves the group, acknowledges its pending entries and sets the
// checkpoint's field, in one transaction: a failure leaves all as it
// was.
func (r streamReset) write(ctx context.Context, rc rueidis.Client, name, group string) error {
	cmds := rueidis.Commands{
		rc.B().Multi().Build(),
		rc.B().XgroupCreate().Key(r.stream).Group(group).Id(r.pos).Mkstream().Entriesread(r.read).Build(),
	}
	for i := 0; i < len(r.pending); i += 1000 {
		cmds = append(cmds, rc.B().Xack().Key(r.stream).Group(group).Id(r.pending[i:min(i+1000, len(r.pending))]...).Build())
	}
	cmds = append(cmds,
		rc.B().XgroupSetid().Key(r.stream).Group(group).Id(r.pos).Entriesread(r.read).Build(),
		rc.B().Hset().Key(checkpoint.R2KKey(name)).FieldValue().FieldValue("stream:"+r.stream, r.pos).Build(),
		rc.B().Exec().Build())
	res := rc.DoMulti(ctx, cmds...)
	exec, err := res[len(res)-1].ToArray()
	if err != nil {
		return fmt.Errorf("XGROUP SETID %s %s: %w", group, r.pos, err)
	}
	for i, e := range exec {
		if err := e.Error(); err != nil && !(i == 0 && strings.Contains(err.Error(), "BUSYGROUP")) {
			return fmt.Errorf("XGROUP SETID %s %s: %w", group, r.pos, err)
		}
	}
	return nil
}

// countAfter counts the entries of stream after id, a page of IDs at a
// time.
func countAfter(ctx context.Context, rc rueidis.Client, stream, id string) (int64, error) {
	var n int64
	from := "(" + id
	for {
		page, err := rc.Do(ctx, rc.B().Xrange().Key(stream).Start(from).End("+").Count(10000).Build()).AsXRange()
		if err != nil {
			return 0, fmt.Errorf("XRANGE: %w", err)
		}
		n += int64(len(page))
		if len(page) < 10000 {
			return n, nil
		}
		from = "(" + page[len(page)-1].ID
	}
}

// pendingIDs are the entries group holds pending (the lease keeps them
// as they are while a reset runs).
func pendingIDs(ctx context.Context, rc rueidis.Client, stream, group string) ([]string, error) {
	var ids []string
	from := "-"
	for {
		pending, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group(group).Start(from).End("+").Count(10000).Build()).ToArray()
		if err != nil {
			if strings.Contains(err.Error(), "NOGROUP") {
				return nil, nil
			}
			return nil, fmt.Errorf("XPENDING: %w", err)
		}
		for _, p := range pending {
			e, _ := p.ToArray()
			if len(e) > 0 {
				id, _ := e[0].ToString()
				ids = append(ids, id)
			}
		}
		if len(pending) < 10000 {
			return ids, nil
		}
		from = "(" + ids[len(ids)-1]
	}
}

// idBefore is the largest entry ID below millisecond ms: a position after
// which the first entry at or after ms comes.
func idBefore(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return strconv.FormatInt(ms-1, 10) + "-18446744073709551615"
}

// idJustBefore is the entry ID right below id.
func idJustBefore(id string) string {
	ms, seq, _ := mapping.ParseID(id)
	switch {
	case seq > 0:
		return fmt.Sprintf("%d-%d", ms, seq-1)
	case ms > 0:
		return fmt.Sprintf("%d-18446744073709551615", ms-1)
	}
	return "0-0"
}

// Delete removes mirror name's checkpoint and record and, when the mirror
// reads through a group of its own (not the shared legacy one), that
// group on each of its streams. The caller holds the mirror's lease. It
// returns what it deleted.
func Delete(ctx context.Context, rc rueidis.Client, name string, streams []string) ([]string, error) {
	ck, _, err := checkpoint.LoadR2K(ctx, rc, name)
	if err != nil {
		return nil, err
	}
	var deleted []string
	group := ck.Group
	if group == "" {
		group = DefaultGroupPrefix + name
	}
	if group != checkpoint.LegacyGroup {
		all := slices.Collect(maps.Keys(ck.Streams))
		for _, s := range streams {
			if !slices.Contains(all, s) {
				all = append(all, s)
			}
		}
		slices.Sort(all)
		for _, s := range all {
			n, err := rc.Do(ctx, rc.B().XgroupDestroy().Key(s).Group(group).Build()).AsInt64()
			if err != nil && !strings.Contains(err.Error(), "no such key") && !strings.Contains(err.Error(), "requires the key to exist") {
				return deleted, fmt.Errorf("XGROUP DESTROY %s %s: %w", s, group, err)
			}
			if n > 0 {
				deleted = append(deleted, fmt.Sprintf("consumer group %s of stream %s", group, s))
			}
		}
	}
	for _, key := range []string{checkpoint.R2KKey(name), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, name)} {
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
