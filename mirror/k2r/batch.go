package k2r

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror"
)

// Batch is what kafka-to-redis moves in one step, from the KafkaSource to
// the RedisSink: per destination stream the entries and the partition
// positions they bring (a Write each, the hand-off the sink applies
// atomically), and the records bound for the dead-letter stream.
type Batch struct {
	writes []*Write
	// preserved (PreserveIDs) has, per write, what the sink needs to
	// handle entries whose ID the check finds present or below the top.
	preserved []*preservedWrite
	dead      []deadLetter
	// deadDone is how many of dead are in the dead-letter stream.
	deadDone int
	// entries are the entries of the writes, present ones (which the
	// sink finds already in their streams) included; skipped and
	// deadLettered count the records set aside.
	entries      int
	skipped      int
	deadLettered int
	present      int64
	bytes        int
	// lastIDs are, per write, the last entry ID it added (once applied).
	lastIDs []string
}

// Len counts the entries the batch writes to its streams.
func (b *Batch) Len() int { return b.entries - int(b.present) }

// Empty says the batch accounts for no record at all: a batch of only
// skipped or dead-lettered records still reaches the sink, which moves
// the checkpoint past them.
func (b *Batch) Empty() bool { return b.entries+b.skipped+b.deadLettered == 0 }

// Unwritten counts the records the batch acknowledges without writing an
// entry.
func (b *Batch) Unwritten() mirror.Unwritten {
	return mirror.Unwritten{Skipped: int64(b.skipped), DeadLettered: int64(b.deadLettered), Present: b.present}
}

// Positions are, per partition, the next offset after the batch and, per
// stream it wrote to, the last entry ID it added.
func (b *Batch) Positions() []mirror.Position {
	var ps []mirror.Position
	for i, w := range b.writes {
		for _, m := range w.Moves {
			p := mirror.Position{Topic: m.Partition.Topic, Partition: m.Partition.Partition, Offset: m.To, Source: true}
			if m.From >= 0 {
				p.Entries = m.To - m.From
			}
			ps = append(ps, p)
		}
		if i < len(b.lastIDs) && b.lastIDs[i] != "" {
			ps = append(ps, mirror.Position{Stream: w.Stream, ID: b.lastIDs[i]})
		}
	}
	return ps
}

// Bytes is the payload of the entries written to the streams.
func (b *Batch) Bytes() int { return b.bytes }

// preservedWrite is, under PreserveIDs, what a write's entries came
// from and how the sink handled those the check did not find new.
type preservedWrite struct {
	recs []*kgo.Record // the record of each entry
	// handled marks the entries below the top already logged (and
	// dead-lettered), so that a write checked again does not repeat it.
	handled []bool
	// skipped and dead count the write's entries below the top under
	// OnErrorSkip and dead-letter, as last classified; unwritten is
	// the size of the entries not written.
	skipped, dead int
	unwritten     int64
	// failure (OnErrorFail) is an entry below the top: the write
	// was cut before it and fails once applied.
	failure error
}

// deadLetter is a record the format could not decode, bound for the
// dead-letter stream.
type deadLetter struct {
	rec    *kgo.Record
	reason string
}
