package mirror

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Format is how an entry becomes a record value (and back).
type Format string

// Formats.
const (
	// FormatJSON: the value is a JSON object of the entry's fields.
	FormatJSON Format = "json"
	// FormatRaw: the value is one field's bytes, the other fields headers.
	FormatRaw Format = "raw"
)

// ParseFormat accepts "json" or "raw".
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatJSON, FormatRaw:
		return f, nil
	}
	return "", fmt.Errorf("--format must be json or raw, got %q", s)
}

// KafkaSinkConfig configures a KafkaSink.
type KafkaSinkConfig struct {
	// Client is a producer built with ProducerOpts.
	Client *kgo.Client
	// Topics maps each stream to its destination topic.
	Topics map[string]string
	Format Format
	// ValueField is the field that becomes the value in FormatRaw.
	ValueField string
	// KeyField, when set, is the field whose value becomes the record key.
	KeyField string
	// MaxRecordBytes, when set, is the largest record batch the topics
	// accept (see BatchLimit): an entry whose record cannot fit fails
	// before it is produced, and the batch stops right before it.
	MaxRecordBytes int
	// ConfirmTimeout, when set, fails a batch Kafka has not fully
	// confirmed within it (one-shot runs are bounded; follow runs wait).
	// franz-go's own record timeout cannot serve: it counts from the
	// record's timestamp, which is the entry's time, often long past.
	ConfirmTimeout time.Duration
}

// KafkaSink produces entries as records with franz-go's idempotent producer
// (acks=all) and confirms a batch when Kafka acknowledged all of it.
type KafkaSink struct {
	cfg KafkaSinkConfig
}

// NewKafkaSink returns a sink writing through cfg.Client.
func NewKafkaSink(cfg KafkaSinkConfig) *KafkaSink {
	if cfg.ValueField == "" {
		cfg.ValueField = "value"
	}
	return &KafkaSink{cfg: cfg}
}

// ProducerTuning are the knobs of the producer a user may reach for.
type ProducerTuning struct {
	// Linger is how long a partition's batch waits to fill before it is
	// sent; 0 sends as soon as possible.
	Linger time.Duration
	// Compression is none, gzip, snappy, lz4 or zstd.
	Compression string

	// MaxBufferedRecords bounds the records waiting in the producer:
	// Write blocks beyond it, which bounds memory.
	MaxBufferedRecords int
	// BatchMaxBytes bounds a record batch (see BatchLimit); 0 is 1 MiB.
	BatchMaxBytes int32
}

// ProducerOpts are the kgo options of xmirror's producer: idempotent with
// acks=all (franz-go's defaults, stated so they cannot drift), entries of a
// stream kept in order, and the tuning given.
func ProducerOpts(t ProducerTuning) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(streamPartitioner()),
		kgo.ProducerLinger(t.Linger),
	}
	// Let a partition's batch grow as large as the topic accepts: a
	// one-shot run drains a backlog as fast as Kafka takes it.
	if t.BatchMaxBytes > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(t.BatchMaxBytes))
	} else {
		opts = append(opts, kgo.ProducerBatchMaxBytes(maxProducerBatchBytes))
	}
	if t.MaxBufferedRecords > 0 {
		opts = append(opts, kgo.MaxBufferedRecords(t.MaxBufferedRecords))
	}
	codec, err := compressionCodec(t.Compression)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.ProducerBatchCompression(codec))
	return opts, nil
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "", "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("--compression must be none, gzip, snappy, lz4 or zstd, got %q", name)
}

// streamPartitioner places keyed records as Kafka's Java client does
// (murmur2 of the key), so a key always lands in one partition; records
// without a key go to a partition chosen by their stream's name, so a
// stream's order is kept in the topic. Both are deterministic, which the
// exactly-once restart relies on.
func streamPartitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
		keyed := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
		return func(r *kgo.Record, n int) int {
			if r.Key != nil {
				return keyed.Partition(r, n)
			}
			h := fnv.New32a()
			for _, hd := range r.Headers {
				if hd.Key == HeaderStream {
					h.Write(hd.Value)
					break
				}
			}
			return int(h.Sum32() % uint32(n))
		}
	})
}

// EntryError names the entry a failure is about.
type EntryError struct {
	Stream string
	ID     string
	Topic  string
	Err    error
	// CreateTopic says the mirror creates missing topics at start
	// (--create-topic); it shapes the hint of a topic gone during the run.
	CreateTopic bool
}

func (e *EntryError) Error() string {
	msg := fmt.Sprintf("stream %q entry %s to topic %q: %v", e.Stream, e.ID, e.Topic, e.Err)
	switch {
	case errors.Is(e.Err, kerr.MessageTooLarge), errors.Is(e.Err, kerr.RecordListTooLarge):
		msg += "; the record is larger than the broker or topic accepts (max.message.bytes); raise that limit, or remove or trim the entry"
	case errors.Is(e.Err, kerr.UnknownTopicOrPartition) && e.CreateTopic:
		// The topic was there at start, created if need be.
		msg += "; the topic was deleted during the run; run again and --create-topic creates it again"
	case errors.Is(e.Err, kerr.UnknownTopicOrPartition):
		msg += "; the topic existed when the run started, so it was deleted during the run; create it again (or pass --create-topic) and run again"
	case errors.Is(e.Err, kerr.UnknownTopicID):
		msg += "; the topic was deleted and created again during the run (its topic ID changed), and what the run wrote before went with the old one; run again"
	case errors.Is(e.Err, kerr.TopicAuthorizationFailed):
		msg += "; the Kafka user may not write to this topic"
	}
	return msg
}

func (e *EntryError) Unwrap() error { return e.Err }

// Write produces the batch's entries and calls done once Kafka confirmed
// all of them, or with a *PartialError saying how many leading entries were
// confirmed before the first failure.
//
// This is the hot path: one allocation each for the batch's records, their
// headers and the JSON values, one promise for the whole batch, and field
// values handed to Kafka without a copy.
func (k *KafkaSink) Write(ctx context.Context, b *EntryBatch, done func(error)) {
	n := len(b.Entries)
	b.records = make([]kgo.Record, n)
	records := b.records
	headers := make([]kgo.RecordHeader, 0, k.headerCount(b))
	var arena []byte
	if k.cfg.Format == FormatJSON {
		arena = make([]byte, 0, b.size+n*16)
	}

	var (
		remaining atomic.Int64
		mu        sync.Mutex
		firstErr  = n // index of the first failed entry
		err       error
	)
	// remaining counts the records produced and not yet answered, plus
	// one held until every record of the batch is produced.
	remaining.Store(1)
	var (
		once  sync.Once
		timer *time.Timer
	)
	finish := func() {
		if remaining.Add(-1) != 0 {
			return
		}
		once.Do(func() {
			if timer != nil {
				timer.Stop()
			}
			mu.Lock()
			defer mu.Unlock()
			if firstErr == n {
				done(nil)
				return
			}
			done(&PartialError{Confirmed: firstErr, Err: err})
		})
	}
	if k.cfg.ConfirmTimeout > 0 {
		timer = time.AfterFunc(k.cfg.ConfirmTimeout, func() {
			once.Do(func() {
				done(fmt.Errorf("kafka did not confirm a batch of %d records within %s (--timeout); is the broker reachable? Nothing unconfirmed was acknowledged", b.written, k.cfg.ConfirmTimeout))
			})
		})
	}
	// One promise for every record: a failed record's index is its place
	// in the records slice.
	base, size := uintptr(unsafe.Pointer(&records[0])), unsafe.Sizeof(records[0])
	promise := func(r *kgo.Record, perr error) {
		if perr != nil {
			i := int((uintptr(unsafe.Pointer(r)) - base) / size)
			mu.Lock()
			if i < firstErr {
				firstErr = i
				e := &b.Entries[i]
				err = &EntryError{Stream: e.Stream, ID: e.ID, Topic: r.Topic, Err: perr}
			}
			mu.Unlock()
		}
		finish()
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.skip != skipNone {
			continue
		}
		r := &records[i]
		r.Topic = k.cfg.Topics[e.Stream]
		r.Timestamp = idTime(e.ID)
		hstart := len(headers)
		headers = append(headers, kgo.RecordHeader{Key: HeaderStream, Value: bytesOf(e.Stream)}, kgo.RecordHeader{Key: HeaderID, Value: bytesOf(e.ID)})
		valueSet := false
		for _, f := range e.Fields {
			if k.cfg.KeyField != "" && r.Key == nil && f.Name == k.cfg.KeyField {
				r.Key = bytesOf(f.Value)
			}
			if k.cfg.Format == FormatRaw {
				if !valueSet && f.Name == k.cfg.ValueField {
					r.Value = bytesOf(f.Value)
					valueSet = true
					continue
				}
				headers = append(headers, kgo.RecordHeader{Key: f.Name, Value: bytesOf(f.Value)})
			}
		}
		if k.cfg.Format == FormatJSON {
			start := len(arena)
			arena = appendJSONObject(arena, e.Fields)
			r.Value = arena[start:len(arena):len(arena)]
		}
		r.Headers = headers[hstart:len(headers):len(headers)]
		if k.cfg.MaxRecordBytes > 0 {
			if size := recordSize(r); size > k.cfg.MaxRecordBytes-recordOverhead {
				// Refuse it here rather than let Kafka refuse it: the
				// entries after it are not produced, so the stream's
				// order holds when the limit is raised and it is retried.
				mu.Lock()
				if i < firstErr { // an earlier record may already have failed
					firstErr = i
					err = &EntryError{Stream: e.Stream, ID: e.ID, Topic: r.Topic,
						Err: fmt.Errorf("%w: the record takes %d bytes, the topic accepts %d", kerr.MessageTooLarge, size, k.cfg.MaxRecordBytes-recordOverhead)}
				}
				mu.Unlock()
				break
			}
		}
		remaining.Add(1)
		k.cfg.Client.Produce(ctx, r, promise)
	}
	finish()
}

// recordOverhead is what a record batch of one record adds to the record's
// key, value and headers, rounded up: the batch header (61 bytes) and the
// record's own length fields.
const recordOverhead = 128

// recordSize is the bytes of a record's key, value and headers.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// headerCount is how many headers the batch's records need in all.
func (k *KafkaSink) headerCount(b *EntryBatch) int {
	n := 2 * len(b.Entries)
	if k.cfg.Format == FormatRaw {
		for _, e := range b.Entries {
			n += len(e.Fields)
		}
	}
	return n
}

// bytesOf is s as bytes without a copy: the strings come from the Redis
// reply and are never modified, and franz-go only reads record bytes. An
// empty string gives an empty, non-nil slice, so an empty value stays
// distinct from a missing (null) one.
func bytesOf(s string) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// idTime is the millisecond part of an entry ID as a time.
func idTime(id string) time.Time {
	var ms int64
	for i := 0; i < len(id) && id[i] != '-'; i++ {
		if ms > 1<<53 {
			return time.Time{}
		}
		ms = ms*10 + int64(id[i]-'0')
	}
	return time.UnixMilli(ms)
}
