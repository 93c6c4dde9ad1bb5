package r2k

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
)

// Inspect is the status of redis-to-kafka mirror f as Redis tells it now:
// its checkpoint, its lease and, per stream, its consumer group's lag
// (XINFO GROUPS: the entries the group has not delivered yet plus those
// pending, delivered but not confirmed by Kafka), in one round trip per
// step.
func Inspect(ctx context.Context, rc rueidis.Client, f checkpoint.Found, now time.Time) (mirror.Status, error) {
	st := mirror.Status{Kind: checkpoint.KindRedisToKafka, Name: f.Name}
	ck, found, err := checkpoint.LoadR2K(ctx, rc, f.Name)
	if err != nil {
		return st, err
	}
	group := checkpoint.LegacyGroup
	if found && ck.Group != "" {
		group = ck.Group
	}
	streams := slices.Collect(maps.Keys(ck.Streams))
	if d := f.Descriptor; d != nil {
		st.Source, st.Destination, st.Format, st.Described = d.Source, d.Destination, d.Format, true
		if !found && d.Group != "" {
			group = d.Group
		}
		for _, s := range d.Streams {
			if !slices.Contains(streams, s) {
				streams = append(streams, s)
			}
		}
	}
	slices.Sort(streams)
	st.Group = group
	st.Entries, st.Bytes = ck.Entries, ck.Bytes
	if !ck.Updated.IsZero() {
		t := ck.Updated
		st.Checkpointed = &t
	}
	if err := st.ReadLease(ctx, rc); err != nil {
		return st, err
	}
	cmds := make(rueidis.Commands, 0, len(streams))
	for _, s := range streams {
		cmds = append(cmds, rc.B().XinfoGroups().Key(s).Build())
	}
	for i, res := range rc.DoMulti(ctx, cmds...) {
		p := mirror.PositionStatus{Stream: streams[i], ID: ck.Streams[streams[i]], Trimmed: ck.Trimmed[streams[i]]}
		if _, err := groupLag(&p, group, res); err != nil {
			return st, fmt.Errorf("read the consumer groups of stream %q (XINFO GROUPS): %w", streams[i], err)
		}
		st.Positions = append(st.Positions, p)
		st.Trimmed += p.Trimmed
	}
	st.Total(now)
	return st, nil
}

// groupLag fills in p's lag from an XINFO GROUPS reply: the group's lag
// (entries not delivered yet) plus its pending entries. found tells
// whether the stream has the group.
func groupLag(p *mirror.PositionStatus, group string, res rueidis.RedisResult) (found bool, err error) {
	groups, err := res.ToArray()
	if err != nil {
		if isNoSuchKey(err) {
			p.Note = "stream does not exist"
			return false, nil
		}
		return false, err
	}
	for _, g := range groups {
		m, err := g.AsMap()
		if err != nil {
			return false, err
		}
		name, lagMsg, pending := m["name"], m["lag"], m["pending"]
		if n, _ := name.ToString(); n != group {
			continue
		}
		p.Pending, _ = pending.AsInt64()
		lag, err := lagMsg.AsInt64()
		if err != nil {
			// Redis cannot count what is left when entries were
			// deleted from the part of the stream the group has
			// not read yet (XDEL), or its read counter is unknown.
			p.Note = "Redis cannot tell the group's lag (entries deleted from the stream since the group last read)"
			return true, nil
		}
		p.Lag, p.LagKnown = lag+p.Pending, true
		return true, nil
	}
	p.Note = fmt.Sprintf("consumer group %q does not exist on the stream (the mirror has not read it yet, or the group was deleted)", group)
	return false, nil
}

func isNoSuchKey(err error) bool { return strings.Contains(err.Error(), "no such key") }

// Lag is how far the mirror is behind in each of its streams, as status
// tells it (see Inspect), on connections of its own, which Close closes.
func (m *Mirror) Lag(ctx context.Context) ([]mirror.Lag, error) { return m.lagProbe().Lag(ctx) }

// Close closes what Lag opened.
func (m *Mirror) Close() { m.lagProbe().Close() }

func (m *Mirror) lagProbe() *mirror.LagProbe {
	m.probeOnce.Do(func() {
		m.probe = &mirror.LagProbe{
			ConnectRedis: func(ctx context.Context) (rueidis.Client, error) {
				return m.cfg.Redis.Connect(ctx, mirror.ConnectTimeout)
			},
			Inspect: func(ctx context.Context, rc rueidis.Client, _ *kadm.Client, now time.Time) (mirror.Status, error) {
				d := &checkpoint.Descriptor{Streams: m.cfg.Streams}
				return Inspect(ctx, rc, checkpoint.Found{Kind: checkpoint.KindRedisToKafka, Name: m.cfg.Name, Descriptor: d}, now)
			},
		}
	})
	return m.probe
}

// remainingPerStream is, per stream, what its group has to deliver plus
// what it holds pending (as status counts a lag), for a one-shot run's
// progress per stream; a stream it cannot tell is left out.
func (s *RedisSource) remainingPerStream(ctx context.Context, streams []string) map[string]int64 {
	c := s.cfg.Client
	ctx, cancel := context.WithTimeout(ctx, mirror.ConnectTimeout)
	defer cancel()
	cmds := make(rueidis.Commands, 0, len(streams))
	for _, st := range streams {
		cmds = append(cmds, c.B().XinfoGroups().Key(st).Build())
	}
	out := map[string]int64{}
	for i, res := range c.DoMulti(ctx, cmds...) {
		var p mirror.PositionStatus
		if _, err := groupLag(&p, s.cfg.Group, res); err == nil && p.LagKnown {
			out[streams[i]] = p.Lag
		}
	}
	return out
}
