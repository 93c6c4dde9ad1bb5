package mirror

import (
	"context"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror/setting"
)

// A Plan is what a run of a mirror would do if it started now, worked out
// by a dry run from what the servers hold, with nothing written: per
// stream (redis-to-kafka) or partition (kafka-to-redis), where it goes,
// where the run would start and how much it would mirror.
type Plan struct {
	Kind        string `json:"direction"`
	Name        string `json:"mirror"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Group is the consumer group a redis-to-kafka run would read
	// through.
	Group  string `json:"group,omitempty"`
	Format string `json:"format"`
	Follow bool   `json:"follow"`
	// Running tells whether a run holds the mirror's lease now, Holder
	// which: a new run would exit, or wait with --standby.
	Running bool   `json:"running"`
	Holder  string `json:"holder,omitempty"`
	// Items are per source stream or partition, sorted.
	Items []PlanItem `json:"items"`
	// Entries is what the items would mirror, over those whose count is
	// known; EntriesKnown is false when one's is not (see PlanItem).
	Entries      int64 `json:"entries"`
	EntriesKnown bool  `json:"entries_known"`
	// Problems are what would stop the run, each naming its stream,
	// topic or partition and what to do (settings named as {Field}, see
	// setting.Render).
	Problems []error `json:"-"`
}

// A PlanItem is one source stream or partition of a Plan.
type PlanItem struct {
	// Stream is the source stream (redis-to-kafka) or the destination
	// stream (kafka-to-redis); Topic the destination topic or the source
	// topic, Partition the source partition (kafka-to-redis).
	Stream    string `json:"stream"`
	Topic     string `json:"topic"`
	Partition *int32 `json:"partition,omitempty"`
	// Pattern is the stream pattern or topic regex that matched the
	// source, "" for one named.
	Pattern string `json:"pattern,omitempty"`
	// From says where the run would start, for people: "first entry",
	// "after 1700000000000-0 (checkpoint)", "offset 42 (checkpoint)".
	From string `json:"from"`
	// Entries is how many entries (records; for a partition, offsets, so
	// with transactions their markers too) a run would mirror, up to what
	// the source holds now. With EntriesAtMost it is only a bound (Redis
	// cannot count the entries after a given ID without reading them);
	// without EntriesKnown, not even that.
	Entries       int64 `json:"entries"`
	EntriesKnown  bool  `json:"entries_known"`
	EntriesAtMost bool  `json:"entries_at_most,omitempty"`
	// Note says what a run would do besides: create the topic, wait for
	// the stream.
	Note string `json:"note,omitempty"`
}

// Total adds up the items' entries into p.Entries and p.EntriesKnown.
func (p *Plan) Total() {
	p.Entries, p.EntriesKnown = 0, true
	for _, it := range p.Items {
		if !it.EntriesKnown || it.EntriesAtMost {
			p.EntriesKnown = false
		}
		if it.EntriesKnown {
			p.Entries += it.Entries
		}
	}
}

// ReadLease fills in whether a run holds p's mirror's lease, and which:
// a problem, unless the run would wait for it (standby).
func (p *Plan) ReadLease(ctx context.Context, rc rueidis.Client, standby bool) error {
	h, err := checkpoint.LeaseHolder(ctx, rc, p.Kind, p.Name)
	if err != nil || h == nil {
		return err
	}
	p.Running, p.Holder = true, h.String()
	if !standby {
		p.Problems = append(p.Problems, setting.Errorf("mirror %q runs now (%s holds its lease %s); stop that run first, or pass {Standby} to wait for it", p.Name, p.Holder, checkpoint.LeaseKey(p.Kind, p.Name)))
	}
	return nil
}
