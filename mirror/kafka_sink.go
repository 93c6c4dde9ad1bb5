package mirror

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kbin"
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
	// Limits, when set, are the record batch limits of the topics (see
	// ReadTopicLimits): an entry whose record cannot fit its topic's
	// fails before it is produced, and the batch stops right before it.
	Limits map[string]RecordLimit
	// WarnFields, when set, is kafka-to-redis's --max-fields: an entry
	// with more fields is written all the same, and a warning says, once
	// per stream, that the reverse direction would refuse its record.
	WarnFields int
	// Logger receives that warning.
	Logger *slog.Logger
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

	mu         sync.Mutex
	warnedWide map[string]bool // streams warned of an entry wider than WarnFields
}

// NewKafkaSink returns a sink writing through cfg.Client.
func NewKafkaSink(cfg KafkaSinkConfig) *KafkaSink {
	if cfg.ValueField == "" {
		cfg.ValueField = "value"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &KafkaSink{cfg: cfg, warnedWide: map[string]bool{}}
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
	// Limits are what the topics and brokers accept (ReadTopicLimits):
	// a partition's batch may grow to its topic's limit, and requests to
	// the brokers' request limit. Without them, Kafka's defaults.
	Limits TopicLimits
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
	// Let a partition's batch grow as large as its topic accepts: a
	// one-shot run drains a backlog as fast as Kafka takes it, and a
	// record as large as the topic allows can be sent at all (franz-go
	// refuses a record larger than the batch limit). The memory a batch
	// holds stays bounded by MaxBufferedRecords, not by this limit.
	request := t.Limits.RequestBytes
	if request <= 0 {
		request = defaultSocketRequestMaxBytes
	}
	fallback := min(int32(defaultMessageMaxBytes), request-produceRequestOverhead)
	topics := t.Limits.Topics
	opts = append(opts,
		kgo.BrokerMaxWriteBytes(request),
		kgo.ProducerBatchMaxBytesFn(func(topic string) int32 {
			if l, ok := topics[topic]; ok && l.Bytes > 0 {
				return l.Bytes
			}
			return fallback
		}))
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
}

func (e *EntryError) Error() string {
	msg := fmt.Sprintf("stream %q entry %s to topic %q: %v", e.Stream, e.ID, e.Topic, e.Err)
	var tooLarge *RecordTooLargeError
	switch {
	case errors.As(e.Err, &tooLarge):
		msg += "; " + tooLarge.Limit.Hint(tooLarge.Size)
	case errors.Is(e.Err, kerr.MessageTooLarge), errors.Is(e.Err, kerr.RecordListTooLarge):
		msg += fmt.Sprintf("; the record is larger than the broker or topic accepts: raise the topic's max.message.bytes (kafka-configs --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config max.message.bytes=N), or remove or trim the entry", e.Topic)
	case errors.Is(e.Err, kerr.UnknownTopicOrPartition):
		msg += "; does the topic exist? (--create-topic creates it)"
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
		if k.cfg.WarnFields > 0 && len(e.Fields) > k.cfg.WarnFields {
			k.warnWide(e, r.Topic)
		}
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
		if tooLarge := k.tooLarge(r); tooLarge != nil {
			// Refuse it here rather than let Kafka refuse it: the
			// entries after it are not produced, so the stream's
			// order holds when the limit is raised and it is retried.
			mu.Lock()
			if i < firstErr { // an earlier record may already have failed
				firstErr = i
				err = &EntryError{Stream: e.Stream, ID: e.ID, Topic: r.Topic, Err: tooLarge}
			}
			mu.Unlock()
			break
		}
		remaining.Add(1)
		k.cfg.Client.Produce(ctx, r, promise)
	}
	finish()
}

// warnWide says, once per stream, that an entry is written whose record
// kafka-to-redis would refuse: as many fields as the entry has is what its
// record maps back to, in either format.
func (k *KafkaSink) warnWide(e *Entry, topic string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.warnedWide[e.Stream] {
		return
	}
	k.warnedWide[e.Stream] = true
	k.cfg.Logger.Warn(fmt.Sprintf("an entry has more fields than kafka-to-redis takes with --max-fields %d: it is written, but mirroring it back needs kafka-to-redis --max-fields %d or more (warned once per stream)", k.cfg.WarnFields, len(e.Fields)),
		"stream", e.Stream, "entry", e.ID, "topic", topic, "fields", len(e.Fields))
}

// RecordTooLargeError refuses a record larger than its topic accepts.
type RecordTooLargeError struct {
	Size  int // the record batch it would take, in bytes
	Limit RecordLimit
}

func (e *RecordTooLargeError) Error() string {
	setting := "its " + SettingTopic
	if e.Limit.Setting != SettingTopic {
		setting = "the broker's " + e.Limit.Setting
	}
	return fmt.Sprintf("%v: the record takes %d bytes, more than the %d the topic accepts (%s)", kerr.MessageTooLarge, e.Size, e.Limit.Bytes, setting)
}

// Unwrap makes it a kerr.MessageTooLarge, as Kafka's own refusal is.
func (e *RecordTooLargeError) Unwrap() error { return kerr.MessageTooLarge }

// tooLarge refuses r when a batch of r alone exceeds its topic's limit.
func (k *KafkaSink) tooLarge(r *kgo.Record) error {
	l, ok := k.cfg.Limits[r.Topic]
	if !ok || l.Bytes <= 0 {
		return nil
	}
	if size := batchSize(r); size > int(l.Bytes) {
		return &RecordTooLargeError{Size: size, Limit: l}
	}
	return nil
}

// batchSize is the bytes of a record batch holding r alone, as franz-go
// measures it against the batch limit before it sends it (Kafka measures
// the same batch 4 bytes smaller, without the array length): the batch
// header, and the record with a length field for each of its parts. A
// header costs its name and value plus two length fields, which adds up on
// an entry of many fields.
func batchSize(r *kgo.Record) int {
	// Array length, base offset, batch length, leader epoch, magic, CRC,
	// attributes, last offset delta, first and max timestamps, producer
	// ID and epoch, base sequence, record count.
	const batchHeader = 4 + 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4
	// Attributes, and the timestamp and offset deltas, 0 for the first
	// record of a batch.
	n := 1 + 1 + 1
	n += kbin.VarintLen(int32(len(r.Key))) + len(r.Key)
	n += kbin.VarintLen(int32(len(r.Value))) + len(r.Value)
	n += kbin.VarintLen(int32(len(r.Headers)))
	for _, h := range r.Headers {
		n += kbin.VarintLen(int32(len(h.Key))) + len(h.Key) + kbin.VarintLen(int32(len(h.Value))) + len(h.Value)
	}
	return batchHeader + kbin.VarintLen(int32(n)) + n
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
