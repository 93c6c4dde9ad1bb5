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
	var moved []mirror.Moved
	for _, s := range all {
		before, after, err := resetStream(ctx, rc, name, group, s, ck.Streams[s], target)
		if err != nil {
			return moved, fmt.Errorf("reset stream %q of mirror %q: %w", s, name, err)
		}
		moved = append(moved, mirror.Moved{Stream: s, Before: before, After: after})
	}
	return moved, nil
}

// resetStream moves one stream's group and checkpoint field.
func resetStream(ctx context.Context, rc rueidis.Client, name, group, stream, checkpointed string, target ResetTarget) (before, after string, err error) {
	info, err := rc.Do(ctx, rc.B().XinfoStream().Key(stream).Build()).AsMap()
	if err != nil {
		return "", "", fmt.Errorf("XINFO STREAM: %w", err)
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
	before = checkpointed
	if groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray(); err == nil {
		for _, g := range groups {
			m, _ := g.AsStrMap()
			if m["name"] == group {
				before = m["last-delivered-id"]
			}
		}
	}
	if before == "" {
		before = "(none)"
	}
	// The position is the last entry mirrored: the next run mirrors the
	// entries after it.
	var pos string
	switch {
	case target.Latest:
		pos = last
	case target.Earliest:
		pos = ""
	case target.ID != "":
		pos = target.ID
	default:
		pos = idBefore(target.Time.UnixMilli())
	}
	// A position below the first entry is the start: just before it,
	// counting every entry removed before it as read, so no gap is seen.
	var read int64
	if pos == "" || first == "" || mapping.CompareIDs(pos, first) < 0 {
		if first != "" {
			pos = idJustBefore(first)
		} else if pos == "" {
			pos = last
		}
		read = added - length
		if first == "" {
			read = added
		}
	} else {
		n, err := countUpTo(ctx, rc, stream, pos)
		if err != nil {
			return before, "", err
		}
		read = added - length + n
	}
	if pos == "" {
		pos = "0-0"
	}
	// Pending entries of an earlier run are acknowledged: the next run
	// starts from pos and from nothing else.
	if err := ackPending(ctx, rc, stream, group); err != nil {
		return before, "", err
	}
	cmds := rueidis.Commands{
		rc.B().Multi().Build(),
		rc.B().XgroupCreate().Key(stream).Group(group).Id(pos).Mkstream().Entriesread(read).Build(),
		rc.B().XgroupSetid().Key(stream).Group(group).Id(pos).Entriesread(read).Build(),
		rc.B().Hset().Key(checkpoint.R2KKey(name)).FieldValue().FieldValue("stream:"+stream, pos).Build(),
		rc.B().Exec().Build(),
	}
	res := rc.DoMulti(ctx, cmds...)
	exec, err := res[len(res)-1].ToArray()
	if err != nil {
		return before, "", fmt.Errorf("XGROUP SETID %s %s: %w", group, pos, err)
	}
	for i, r := range exec {
		if err := r.Error(); err != nil && !(i == 0 && strings.Contains(err.Error(), "BUSYGROUP")) {
			return before, "", fmt.Errorf("XGROUP SETID %s %s: %w", group, pos, err)
		}
	}
	return before, pos, nil
}

// countUpTo counts the entries of stream at or before id, a page at a
// time.
func countUpTo(ctx context.Context, rc rueidis.Client, stream, id string) (int64, error) {
	var n int64
	from := "-"
	for {
		page, err := rc.Do(ctx, rc.B().Xrange().Key(stream).Start(from).End(id).Count(10000).Build()).AsXRange()
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

// ackPending acknowledges every entry pending in group.
func ackPending(ctx context.Context, rc rueidis.Client, stream, group string) error {
	for {
		pending, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group(group).Start("-").End("+").Count(10000).Build()).ToArray()
		if err != nil {
			if strings.Contains(err.Error(), "NOGROUP") {
				return nil
			}
			return fmt.Errorf("XPENDING: %w", err)
		}
		if len(pending) == 0 {
			return nil
		}
		ids := make([]string, 0, len(pending))
		for _, p := range pending {
			e, _ := p.ToArray()
			if len(e) > 0 {
				id, _ := e[0].ToString()
				ids = append(ids, id)
			}
		}
		if err := rc.Do(ctx, rc.B().Xack().Key(stream).Group(group).Id(ids...).Build()).Error(); err != nil {
			return fmt.Errorf("XACK: %w", err)
		}
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
