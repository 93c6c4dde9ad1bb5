package r2k

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// Entry is one stream entry on its way to Kafka.
type Entry struct {
	Stream string
	ID     string
	// Fields are the entry's fields in order, duplicates kept.
	Fields []mapping.Field
	// skip says why the entry is acknowledged without being written.
	skip skipReason
}

type skipReason uint8

const (
	skipNone    skipReason = iota
	skipTrimmed            // pending, but its body was trimmed from the stream
	skipWritten            // already in Kafka: found by the read-back, or at or below what Kafka confirmed
	skipRefused            // refused by Kafka (or it would be), and the error policy goes past it
	// skipAgain: pending again, re-read after Redis may have lost acks;
	// this process handled it before, and counted it then
	skipAgain
)

// EntryBatch is a batch of stream entries, read by the RedisSource and
// produced by the KafkaSink. The hand-off back is named: the sink records
// where each written entry landed (records, partition and offset filled
// in by the producer before the sink confirms the batch), and the source
// reads that through landed to checkpoint each partition's position.
type EntryBatch struct {
	Entries []Entry
	size    int
	written int
	// records are the batch's records, one per entry (zero for skipped
	// ones); the producer fills in partition and offset before the sink
	// confirms the batch, and Commit checkpoints them.
	records []kgo.Record
	// refused are the entries Kafka refused or would refuse, which the
	// sink set aside (skipRefused); deadWritten says they are in the
	// dead-letter stream already, so a retried commit does not add them
	// again.
	refused     []refusal
	deadWritten bool
	// floors are, per stream read, the ID at or below which every entry
	// was handled when the batch was read (see useBound): its commit
	// never records a lower stream:<s>, as acknowledging entries a group
	// moved back delivers again would otherwise do, and a restart in the
	// middle would take the lower position for what Kafka holds.
	floors []floor
	// lost counts entries trimmed before they were read that the source
	// went past (OnGapSkip) since the batch before; deadLetter says
	// refused entries go to the dead-letter stream (else they are
	// skipped).
	lost       int64
	deadLetter bool
}

type floor struct{ stream, id string }

// refusal is an entry of a batch set aside, the topic it was for and why.
type refusal struct {
	index  int
	topic  string
	ts     int64 // the record's timestamp, Unix ms
	reason string
}

// refuse sets entry i aside: it is acknowledged without a record (and
// dead-lettered when the source has a dead-letter stream).
func (b *EntryBatch) refuse(i int, topic string, ts time.Time, err error) {
	e := &b.Entries[i]
	if e.skip != skipNone {
		return
	}
	e.skip = skipRefused
	b.written--
	b.size -= entrySize(*e)
	b.refused = append(b.refused, refusal{index: i, topic: topic, ts: ts.UnixMilli(), reason: err.Error()})
}

// Len is the number of entries the batch writes to Kafka.
func (b *EntryBatch) Len() int { return b.written }

// Bytes is the payload size of the entries written.
func (b *EntryBatch) Bytes() int { return b.size }

// Empty says there is nothing to produce: the batch only acknowledges
// entries (already in Kafka, trimmed, refused before they were sent).
func (b *EntryBatch) Empty() bool { return b.written == 0 }

// Unwritten counts the entries the batch acknowledges without a record.
func (b *EntryBatch) Unwritten() mirror.Unwritten {
	u := mirror.Unwritten{Lost: b.lost}
	for i := range b.Entries {
		switch b.Entries[i].skip {
		case skipTrimmed:
			u.Lost++
		case skipWritten:
			u.Present++
		case skipRefused:
			if b.deadLetter {
				u.DeadLettered++
			} else {
				u.Skipped++
			}
		}
	}
	return u
}

// Positions are, per stream, the last entry the batch handled and, per
// partition it wrote to, the offset after its last record.
func (b *EntryBatch) Positions() []mirror.Position {
	var ps []mirror.Position
	for _, e := range b.lastOfEachStream() {
		ps = append(ps, mirror.Position{Stream: e.Stream, ID: e.ID, Source: true})
	}
	for i := range b.Entries {
		for j := range ps {
			if ps[j].Stream == b.Entries[i].Stream {
				ps[j].Entries++
				break
			}
		}
	}
	for i := range b.Entries {
		tp, offset, ok := b.landed(i)
		if !ok {
			continue
		}
		found := false
		for j := range ps {
			if p := &ps[j]; p.Stream == "" && p.Topic == tp.Topic && p.Partition == tp.Partition {
				p.Offset, found = max(p.Offset, offset+1), true
				break
			}
		}
		if !found {
			ps = append(ps, mirror.Position{Topic: tp.Topic, Partition: tp.Partition, Offset: offset + 1})
		}
	}
	return ps
}

// lastOfEachStream is the last entry of each stream in the batch. A read's
// reply holds each stream's entries together and in ID order, so these are
// the highest IDs read, found without comparing every entry's ID.
func (b *EntryBatch) lastOfEachStream() []Entry {
	var last []Entry
	for i, e := range b.Entries {
		if i+1 == len(b.Entries) || b.Entries[i+1].Stream != e.Stream {
			last = append(last, e)
		}
	}
	return last
}

// Prefix is the batch cut to its first n entries, for committing what the
// sink confirmed before a failure.
func (b *EntryBatch) Prefix(n int) *EntryBatch {
	p := &EntryBatch{Entries: b.Entries[:n], floors: b.floors, lost: b.lost, deadLetter: b.deadLetter}
	if len(b.records) >= n {
		p.records = b.records[:n]
	}
	for _, e := range p.Entries {
		if e.skip == skipNone {
			p.written++
			p.size += entrySize(e)
		}
	}
	for _, r := range b.refused {
		if r.index < n {
			p.refused = append(p.refused, r)
		}
	}
	return p
}

// landed is where the record of entry i went, once the sink confirmed
// the batch: ok is false for an entry written without a record (skipped,
// set aside) or a batch the sink did not produce.
func (b *EntryBatch) landed(i int) (tp checkpoint.TopicPartition, offset int64, ok bool) {
	if i >= len(b.records) || b.Entries[i].skip != skipNone {
		return tp, 0, false
	}
	r := &b.records[i]
	if r.Topic == "" {
		return tp, 0, false
	}
	return checkpoint.TopicPartition{Topic: r.Topic, Partition: r.Partition}, r.Offset, true
}

func entrySize(e Entry) int {
	n := 0
	for _, f := range e.Fields {
		n += len(f.Name) + len(f.Value)
	}
	return n
}
