package mirror

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
)

// A Status is what a mirror's checkpoint, its lease and its servers say
// of it now: what it mirrors, where it stands in each stream or
// partition, how far behind it is, and whether it runs.
type Status struct {
	Kind string `json:"direction"`
	Name string `json:"mirror"`
	// Source, Destination, Group and Format are what the mirror's last
	// run recorded; empty for a mirror that last ran before runs
	// recorded them (Described false).
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
	Group       string `json:"group,omitempty"`
	Format      string `json:"format,omitempty"`
	Described   bool   `json:"described"`
	// Running tells whether a run holds the mirror's lease, Holder which
	// (pid and host), LeaseExpires when its lease lapses unless renewed.
	Running      bool       `json:"running"`
	Holder       string     `json:"holder,omitempty"`
	LeaseExpires *time.Time `json:"lease_expires,omitempty"`
	// Checkpointed is when the checkpoint last moved (zero if never);
	// Age is how long ago, when Status was taken.
	Checkpointed *time.Time    `json:"checkpointed,omitempty"`
	Age          time.Duration `json:"-"`
	AgeSeconds   float64       `json:"checkpoint_age_seconds,omitempty"`
	// Entries and Bytes are what the mirror mirrored over all its runs.
	Entries int64 `json:"entries"`
	Bytes   int64 `json:"bytes"`
	// Trimmed is what the mirror removed from its source streams once
	// they were mirrored, over all its runs (redis-to-kafka
	// --trim-source), the sum of its positions' Trimmed.
	Trimmed int64 `json:"trimmed,omitempty"`
	// Lag is the entries (records) of the source not yet mirrored, over
	// every stream or partition whose lag is known; LagKnown is false when
	// one's is not (see PositionStatus.Note).
	Lag      int64 `json:"lag"`
	LagKnown bool  `json:"lag_known"`
	// Positions are per stream (redis-to-kafka) or per partition
	// (kafka-to-redis), sorted.
	Positions []PositionStatus `json:"positions"`
}

// A PositionStatus is where a mirror stands in one stream or partition of
// its source.
type PositionStatus struct {
	// Stream is the source stream (redis-to-kafka) or the destination
	// stream the partition feeds (kafka-to-redis; empty when its mirror
	// did not record it).
	Stream string
	// ID is the last entry of Stream the mirror checkpointed
	// (redis-to-kafka; empty before its first).
	ID string
	// Topic and Partition name a source partition, Offset the next
	// offset the mirror reads there (checkpoint.NoPosition before it has
	// one), End the partition's end offset (kafka-to-redis).
	Topic     string
	Partition int32
	Offset    int64
	End       int64
	// Lag is the entries (records) not yet mirrored, when LagKnown; for
	// redis-to-kafka the group's undelivered entries plus its pending
	// ones, whose delivery Kafka has not confirmed yet.
	Lag      int64
	LagKnown bool
	// Pending are entries read but not yet confirmed (redis-to-kafka).
	Pending int64
	// Trimmed are the entries the mirror removed from Stream once they
	// were mirrored (redis-to-kafka --trim-source).
	Trimmed int64
	// Note says what is unusual: a stream or group missing, a lag Redis
	// cannot tell.
	Note string
}

// positionJSON is a PositionStatus as status -o json writes it: a
// stream's fields or a partition's, not both.
type positionJSON struct {
	Stream    string `json:"stream,omitempty"`
	ID        string `json:"id,omitempty"`
	Topic     string `json:"topic,omitempty"`
	Partition *int32 `json:"partition,omitempty"`
	Offset    *int64 `json:"offset,omitempty"`
	End       *int64 `json:"end_offset,omitempty"`
	Lag       *int64 `json:"lag"`
	Pending   *int64 `json:"pending,omitempty"`
	Trimmed   int64  `json:"trimmed,omitempty"`
	Note      string `json:"note,omitempty"`
}

// MarshalJSON writes p with only the fields of its kind, and a lag that
// is not known as null.
func (p PositionStatus) MarshalJSON() ([]byte, error) {
	j := positionJSON{Stream: p.Stream, ID: p.ID, Topic: p.Topic, Note: p.Note, Trimmed: p.Trimmed}
	if p.LagKnown {
		j.Lag = &p.Lag
	}
	if p.Topic != "" {
		j.Partition, j.End = &p.Partition, &p.End
		if p.Offset >= 0 {
			j.Offset = &p.Offset
		}
	} else {
		j.Pending = &p.Pending
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *PositionStatus) UnmarshalJSON(b []byte) error {
	var j positionJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = PositionStatus{Stream: j.Stream, ID: j.ID, Topic: j.Topic, Note: j.Note, Trimmed: j.Trimmed, Offset: -1}
	for dst, src := range map[*int64]*int64{&p.Offset: j.Offset, &p.End: j.End, &p.Pending: j.Pending, &p.Lag: j.Lag} {
		if src != nil {
			*dst = *src
		}
	}
	if j.Partition != nil {
		p.Partition = *j.Partition
	}
	p.LagKnown = j.Lag != nil
	return nil
}

// Total adds up the lags of s's positions into s.Lag and s.LagKnown, and
// the checkpoint's age as of now.
func (s *Status) Total(now time.Time) {
	if s.Checkpointed != nil {
		s.Age = now.Sub(*s.Checkpointed)
		s.AgeSeconds = s.Age.Round(time.Millisecond).Seconds()
	}
	s.Lag, s.LagKnown = 0, true
	for _, p := range s.Positions {
		if !p.LagKnown {
			s.LagKnown = false
			continue
		}
		s.Lag += p.Lag
	}
}

// ReadLease fills in whether a run holds s's mirror's lease, and which.
func (s *Status) ReadLease(ctx context.Context, rc rueidis.Client) error {
	h, err := checkpoint.LeaseHolder(ctx, rc, s.Kind, s.Name)
	if err != nil || h == nil {
		return err
	}
	s.Running, s.Holder = true, h.String()
	if !h.Expires.IsZero() {
		s.LeaseExpires = &h.Expires
	}
	return nil
}

// A Moved position is one stream's or partition's before and after a
// checkpoint reset: entry IDs for a stream, offsets for a partition.
type Moved struct {
	Stream    string `json:"stream,omitempty"`
	Topic     string `json:"topic,omitempty"`
	Partition int32  `json:"partition"`
	Before    string `json:"before"`
	After     string `json:"after"`
}
