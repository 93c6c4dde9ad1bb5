package r2k

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// KafkaSinkConfig configures a KafkaSink.
type KafkaSinkConfig struct {
	// Client is a producer built with ProducerOpts and a transactional
	// ID (see TransactionalID): every batch is produced in a transaction,
	// and confirmed when that transaction committed.
	Client *kgo.Client
	// Mirror is the mirror's name, for the error of a fenced producer.
	Mirror string
	// Denied, when set, turns a refusal by Kafka's authorizer into an
	// error naming the ACL to grant (endpoint.Kafka.Denied).
	Denied func(err error, operation, resource, name string) error
	// TransactionalID is the producer's, for the ACL a refusal of it
	// names.
	TransactionalID string
	// TxnBatches is the most batches one transaction holds (default
	// mirror.DefaultMaxInFlight): at most the engine's in-flight limit, since no
	// more batches come before some are confirmed.
	TxnBatches int
	// TxnBytes commits a transaction once it holds that much payload
	// (default DefaultTxnBytes).
	TxnBytes int
	// TxnIdle commits a transaction when no batch came for that long
	// (default DefaultTxnIdle).
	TxnIdle time.Duration
	// Topics maps each stream to its destination topic.
	Topics map[string]string
	Format mapping.Format
	// ValueField is the field that becomes the value in FormatRaw.
	ValueField string
	// KeyField, when set, is the field whose value becomes the record key.
	KeyField string
	// Limits, when set, are the record batch limits of the topics (see
	// kafkatopic.ReadLimits): an entry whose record cannot fit its topic's
	// fails before it is produced, and the batch stops right before it.
	Limits map[string]kafkatopic.RecordLimit
	// WarnFields, when set, is kafka-to-redis's MaxFields: an entry
	// with more fields is written all the same, and a warning says, once
	// per stream, that the reverse direction would refuse its record.
	WarnFields int
	// ConfirmTimeout, when set, fails a batch Kafka has not fully
	// confirmed within it (one-shot runs are bounded; follow runs wait).
	// franz-go's own record timeout cannot serve: it counts from the
	// record's timestamp, which is the entry's time, often long past.
	ConfirmTimeout time.Duration
	// Timestamp is where a record's timestamp comes from: TimestampID
	// (the default) or TimestampNow.
	Timestamp TimestampSource
	// TimestampPolicies maps topics to the timestamps they accept (see
	// TimestampPolicies): a record outside them is refused before it is
	// produced, as one too large is. A topic not in it is not checked.
	TimestampPolicies map[string]TimestampPolicy
	// OnError is what an entry Kafka refuses or would refuse (too large,
	// a timestamp out of range) does: OnErrorFail (the default: the batch
	// stops right before it), OnErrorSkip or OnErrorDeadLetter (the batch
	// goes on without it; the source acknowledges it, copying it to its
	// dead-letter stream first for dead-letter).
	OnError string
	// Logger receives a warning per entry skipped or dead-lettered, and
	// the one of WarnFields.
	Logger *slog.Logger
}

// TimestampSource is where a record's timestamp comes from.
type TimestampSource string

// Timestamp sources.
const (
	// TimestampID: the millisecond part of the entry ID, clamped to
	// mapping.MaxTimestampMs.
	TimestampID TimestampSource = "id"
	// TimestampNow: the time the batch is produced.
	TimestampNow TimestampSource = "now"
)

// ParseTimestampSource accepts "id" or "now".
func ParseTimestampSource(s string) (TimestampSource, error) {
	switch t := TimestampSource(s); t {
	case TimestampID, TimestampNow:
		return t, nil
	}
	return "", fmt.Errorf("must be id or now, got %q", s)
}

// KafkaSink produces entries as records with franz-go's transactional
// producer (acks=all) and confirms a batch when the transaction holding it
// committed. A transaction holds the batches that come while it is open:
// it commits when it holds TxnBatches batches or TxnBytes of payload, or
// when no batch came for TxnIdle; while it commits, the next Write waits.
type KafkaSink struct {
	cfg KafkaSinkConfig
	log *slog.Logger

	// halted is set once a batch stopped at an entry Kafka refuses or
	// would refuse: the run ends with that batch's error, and a later
	// batch produced meanwhile would only land ahead of the entries it
	// kept back.
	halted atomic.Bool

	mu sync.Mutex
	// warnedWide: streams warned of an entry wider than WarnFields.
	warnedWide map[string]bool

	// sem (capacity 1) is held while producing into the transaction or
	// ending it; what follows is guarded by it.
	sem chan struct{}
	// txn is the open transaction, nil between two.
	txn *openTxn
	gen uint64
	// idle commits the open transaction when no batch follows in time.
	idle *time.Timer
	// committed is when the last transaction committed.
	committed time.Time
	// fatal fails every batch once the producer cannot go on (fenced).
	fatal error
}

// errHalted fails the batches after one stopped at an entry Kafka refuses;
// the engine reports that earlier batch's error, which names the entry.
var errHalted = errors.New("not produced: an earlier batch stopped at an entry Kafka refuses")

// denied names the ACL a refusal by Kafka's authorizer lacks: a record
// to topic ("" for the commit), or the transaction it is in, needs Write on the topic, on the
// transactional ID, or (an idempotent producer's ID) IdempotentWrite on
// the cluster, as the refusal's code says.
func (k *KafkaSink) denied(err error, topic string) error {
	if k.cfg.Denied == nil {
		return err
	}
	switch {
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return k.cfg.Denied(err, endpoint.KafkaWrite, endpoint.KafkaTransactionalID, k.cfg.TransactionalID)
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		return k.cfg.Denied(err, "IdempotentWrite", endpoint.KafkaCluster, "")
	case topic == "":
		// A refusal of no one record (the commit): nothing to name.
		return err
	}
	return k.cfg.Denied(err, endpoint.KafkaWrite, endpoint.KafkaTopic, topic)
}

// NewKafkaSink returns a sink writing through cfg.Client.
func NewKafkaSink(cfg KafkaSinkConfig) *KafkaSink {
	if cfg.ValueField == "" {
		cfg.ValueField = "value"
	}
	if cfg.Timestamp == "" {
		cfg.Timestamp = TimestampID
	}
	if cfg.OnError == "" {
		cfg.OnError = mirror.OnErrorFail
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = log
	if cfg.TxnBatches <= 0 {
		cfg.TxnBatches = mirror.DefaultMaxInFlight
	}
	if cfg.TxnBytes <= 0 {
		cfg.TxnBytes = DefaultTxnBytes
	}
	if cfg.TxnIdle <= 0 {
		cfg.TxnIdle = DefaultTxnIdle
	}
	return &KafkaSink{cfg: cfg, log: log, warnedWide: map[string]bool{}, sem: make(chan struct{}, 1)}
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
	// Limits are what the topics and brokers accept (kafkatopic.ReadLimits):
	// a partition's batch may grow to its topic's limit, and requests to
	// the brokers' request limit. Without them, Kafka's defaults.
	Limits kafkatopic.Limits

	// KeptPartitions maps topics to the partition count their records
	// are hashed over (the count when the mirror first wrote them; see
	// streamPartitioner); a topic not in it is hashed over its current
	// count.
	KeptPartitions map[string]int32
	// PartitionsAdded, when set, is called once per topic seen with more
	// partitions than it keeps.
	PartitionsAdded func(topic string, partitions, kept int)
}

// producerMetadataMaxAge is how often the producer refreshes what it knows
// of the topics (franz-go's default is 5 minutes): partitions added to a
// topic during a follow run are noticed, and reported, within it.
const producerMetadataMaxAge = 10 * time.Second

// producerRetryBackoff retries quickly at first: the first produce of a
// transaction is refused (CONCURRENT_TRANSACTIONS) until the markers of
// the one before are written, a few milliseconds, and franz-go's default
// backoff (250 ms and up) would add 100 ms or more to every transaction.
// After ten quick tries it backs off as usual, from 20 ms up to a second,
// so a broker that is down is not asked in a tight loop.
func producerRetryBackoff(fails int) time.Duration {
	const quick, quickTries = 2 * time.Millisecond, 10
	if fails <= quickTries {
		return quick
	}
	return min(20*time.Millisecond<<min(fails-quickTries-1, 6), time.Second)
}

// txnConcurrentBackoff is how long the producer waits before asking
// again when the broker is still writing the markers of the transaction
// before (CONCURRENT_TRANSACTIONS): a few milliseconds.
const txnConcurrentBackoff = 2 * time.Millisecond

// ProducerOpts are the kgo options of xmirror's producer: idempotent with
// acks=all (franz-go's defaults, stated so they cannot drift), entries of a
// stream kept in order, and the tuning given. redis-to-kafka adds a
// kgo.TransactionalID (see TransactionalID) for the KafkaSink.
func ProducerOpts(t ProducerTuning) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(streamPartitioner(t.KeptPartitions, t.PartitionsAdded)),
		kgo.MetadataMaxAge(producerMetadataMaxAge),
		kgo.ProducerLinger(t.Linger),
		kgo.RetryBackoffFn(producerRetryBackoff),
		// The same for the transactional requests franz-go retries on
		// CONCURRENT_TRANSACTIONS (AddPartitionsToTxn, EndTxn), whose
		// own default is 20 ms; it backs off further by itself when the
		// broker stays in that state for long.
		kgo.ConcurrentTransactionsBackoff(txnConcurrentBackoff),
	}
	// Let a partition's batch grow as large as its topic accepts: a
	// one-shot run drains a backlog as fast as Kafka takes it, and a
	// record as large as the topic allows can be sent at all (franz-go
	// refuses a record larger than the batch limit). The memory a batch
	// holds stays bounded by MaxBufferedRecords, not by this limit.
	request := t.Limits.RequestBytes
	if request <= 0 {
		request = kafkatopic.DefaultSocketRequestMaxBytes
	}
	fallback := min(int32(kafkatopic.DefaultMessageMaxBytes), request-kafkatopic.ProduceRequestOverhead)
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
	return kgo.CompressionCodec{}, fmt.Errorf("must be none, gzip, snappy, lz4 or zstd, got %q", name)
}

// streamPartitioner places keyed records as Kafka's Java client does
// (murmur2 of the key), so a key always lands in one partition; records
// without a key go to a partition chosen by their stream's name, so a
// stream's order is kept in the topic. Both are deterministic, which the
// exactly-once restart relies on.
//
// Both hash over the partition count kept for the topic, not the current
// one: partitions added to the topic would otherwise move keys and
// streams to other partitions, splitting their order. added is told, once
// per topic, that the topic has grown past it. A topic with fewer
// partitions than kept (recreated; the mirror refuses that at start) is
// hashed over what it has.
func streamPartitioner(kept map[string]int32, added func(topic string, partitions, kept int)) kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
		keyed := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
		keep, hasKeep := kept[topic]
		var warned atomic.Bool
		return func(r *kgo.Record, n int) int {
			if hasKeep && n > int(keep) {
				if added != nil && !warned.Swap(true) {
					added(topic, n, int(keep))
				}
				n = int(keep)
			}
			if r.Key != nil {
				return keyed.Partition(r, n)
			}
			h := fnv.New32a()
			for _, hd := range r.Headers {
				if hd.Key == mapping.HeaderStream {
					h.Write(hd.Value)
					break
				}
			}
			return int(h.Sum32() % uint32(n))
		}
	})
}

// KeepPartitionCounts decides, for each topic of current (its partition
// counts now), the count its records are hashed over: the one stored in
// the mirror's checkpoint (checkpointKey), or for a topic the checkpoint
// has none of yet, the current one, returned in fresh to be stored. A
// topic with fewer partitions than stored was recreated (Kafka cannot
// remove partitions), and the mirror's keys would move: refused.
func KeepPartitionCounts(stored, current map[string]int32, checkpointKey string) (kept, fresh map[string]int32, err error) {
	kept, fresh = map[string]int32{}, map[string]int32{}
	topics := make([]string, 0, len(current))
	for t := range current {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		n := current[t]
		s, ok := stored[t]
		switch {
		case !ok:
			kept[t], fresh[t] = n, n
		case n < s:
			return nil, nil, setting.Errorf("topic %q has %d partitions, fewer than the %d this mirror hashes its records over (checkpoint %q): the topic was deleted and created again? Kafka cannot remove partitions; create it with at least %d, or mirror afresh under a new {Name}", t, n, s, checkpointKey, s)
		default:
			kept[t] = s
		}
	}
	return kept, fresh, nil
}

// EntryError names the entry a failure is about.
type EntryError struct {
	Stream string
	ID     string
	Topic  string
	Err    error
	// CreateTopic says the mirror creates missing topics at start
	// (Config.CreateTopic); it shapes the hint of a topic gone during the
	// run.
	CreateTopic bool
}

func (e *EntryError) Error() string { return e.RenderSettings(nil) }

// RenderSettings is the error's text with its settings named by names.
func (e *EntryError) RenderSettings(names setting.Names) string {
	msg := fmt.Sprintf("stream %q entry %s to topic %q: %s", e.Stream, e.ID, e.Topic, setting.Render(e.Err, names))
	var tooLarge *RecordTooLargeError
	switch {
	case errors.Is(e.Err, kerr.InvalidTimestamp) && errors.As(e.Err, new(*BrokerRefusedError)):
		msg += setting.Text(names, "; check the topic's message.timestamp.* settings and that this machine's clock agrees with the broker's, or pass {Timestamp} now; a rerun checks the entries against the settings as they are then")
	case errors.As(e.Err, &tooLarge):
		msg += "; " + tooLarge.Limit.Hint(tooLarge.Size)
	case errors.Is(e.Err, kerr.MessageTooLarge), errors.Is(e.Err, kerr.RecordListTooLarge):
		msg += fmt.Sprintf("; the record is larger than the broker or topic accepts: raise the topic's max.message.bytes (kafka-configs --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config max.message.bytes=N), or remove or trim the entry", e.Topic)
	case errors.Is(e.Err, kerr.UnknownTopicOrPartition) && e.CreateTopic:
		// The topic was there at start, created if need be.
		msg += setting.Text(names, "; the topic was deleted during the run; run again and {CreateTopic} creates it again")
	case errors.Is(e.Err, kerr.UnknownTopicOrPartition):
		msg += setting.Text(names, "; the topic existed when the run started, so it was deleted during the run; create it again (or pass {CreateTopic}) and run again")
	case errors.Is(e.Err, kerr.UnknownTopicID):
		msg += "; the topic was deleted and created again during the run (its topic ID changed), and what the run wrote before went with the old one; run again"
	case errors.As(e.Err, new(*endpoint.DeniedError)):
		// It says what to grant.
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
	if k.halted.Load() {
		done(errHalted)
		return
	}
	// One transaction at a time: while the last one commits, this batch
	// waits (backpressure), bounded by ctx.
	if err := k.txnWait(ctx); err != nil {
		done(err)
		return
	}
	defer k.txnRelease()
	if err := k.begin(ctx); err != nil {
		done(err)
		return
	}
	tb := &txnBatch{answered: make(chan struct{})}
	now := time.Now()
	n := len(b.Entries)
	headers, arena := k.recordBuffers(b)
	records := b.records

	var (
		remaining atomic.Int64
		mu        sync.Mutex
		firstErr  = n // index of the first failed entry
		err       error
		// failed: Kafka failed a record, so the transaction holding
		// the batch cannot commit.
		failed bool
	)
	// remaining counts the records produced and not yet answered, plus
	// one held until every record of the batch is produced.
	remaining.Store(1)
	var timer *time.Timer
	finish := func() {
		if remaining.Add(-1) != 0 {
			return
		}
		mu.Lock()
		switch {
		case failed:
			// Nothing of an aborted transaction is confirmed.
			tb.refused = &mirror.PartialError{Confirmed: 0, Err: err}
		case firstErr < n:
			tb.result = &mirror.PartialError{Confirmed: firstErr, Err: err}
		}
		mu.Unlock()
		close(tb.answered)
	}
	// done is called once: when the transaction holding the batch ended,
	// or at ConfirmTimeout, whichever comes first.
	var doneOnce sync.Once
	tb.done = func(err error) {
		doneOnce.Do(func() {
			if timer != nil {
				timer.Stop()
			}
			done(err)
		})
	}
	if k.cfg.ConfirmTimeout > 0 {
		timer = time.AfterFunc(k.cfg.ConfirmTimeout, func() {
			tb.done(setting.Errorf("kafka did not confirm a batch of %d records within %s ({Timeout}); is the broker reachable? Nothing unconfirmed was acknowledged", b.written, k.cfg.ConfirmTimeout))
		})
	}
	// One promise for every record: a failed record's index is its place
	// in the records slice.
	base, size := uintptr(unsafe.Pointer(&records[0])), unsafe.Sizeof(records[0])
	promise := func(r *kgo.Record, perr error) {
		if perr != nil {
			i := int((uintptr(unsafe.Pointer(r)) - base) / size)
			// The transaction holding the batch is aborted: nothing
			// more is produced.
			k.halted.Store(true)
			if brokerRefused(perr) {
				// The check before producing missed it (a topic config
				// changed since the start, clocks apart).
				perr = &BrokerRefusedError{Err: perr}
			}
			if fenced(perr) {
				perr = &FencedError{Mirror: k.cfg.Mirror, Err: perr}
			}
			perr = k.denied(perr, r.Topic)
			mu.Lock()
			failed = true
			if i < firstErr {
				firstErr = i
				e := &b.Entries[i]
				err = &EntryError{Stream: e.Stream, ID: e.ID, Topic: r.Topic, Err: perr}
			}
			mu.Unlock()
		}
		finish()
	}
	var (
		polTopic string
		pol      TimestampPolicy
		hasPol   bool
	)
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.skip != skipNone {
			continue
		}
		r := &records[i]
		headers, arena = k.buildRecord(r, e, headers, arena, now)
		if k.cfg.WarnFields > 0 && len(e.Fields) > k.cfg.WarnFields {
			k.warnWide(e, r.Topic)
		}
		if r.Topic != polTopic {
			// A batch holds each stream's entries together: look the
			// policy up when the topic changes, not for every record.
			polTopic = r.Topic
			pol, hasPol = k.cfg.TimestampPolicies[r.Topic]
		}
		if rerr := k.refusal(r, now, pol, hasPol); rerr != nil {
			// Refuse it here rather than let Kafka refuse it (and its
			// whole record batch with it). With fail, the entries after
			// it are not produced, so the stream's order holds when it
			// is retried; otherwise the batch goes on without it.
			if k.cfg.OnError != mirror.OnErrorFail {
				k.setAside(b, i, r.Topic, rerr)
				continue
			}
			mu.Lock()
			if i < firstErr { // an earlier record may already have failed
				firstErr = i
				err = &EntryError{Stream: e.Stream, ID: e.ID, Topic: r.Topic, Err: rerr}
			}
			mu.Unlock()
			k.halted.Store(true)
			break
		}
		if k.halted.Load() {
			// A record batch was refused meanwhile (see the promise):
			// what is not produced yet stays back, in order.
			mu.Lock()
			if i < firstErr {
				firstErr, err = i, errHalted
			}
			mu.Unlock()
			break
		}
		remaining.Add(1)
		k.cfg.Client.Produce(ctx, r, promise)
	}
	finish()
	k.txn.batches = append(k.txn.batches, tb)
	k.txn.bytes += b.size
	k.added(ctx)
}

// recordBuffers makes the batch's records, one per entry, and returns room
// for all their headers and, in json, their values: one allocation each,
// which the records share (see buildRecord).
func (k *KafkaSink) recordBuffers(b *EntryBatch) (headers []kgo.RecordHeader, arena []byte) {
	n := len(b.Entries)
	b.records = make([]kgo.Record, n)
	headers = make([]kgo.RecordHeader, 0, k.headerCount(b))
	if k.cfg.Format == mapping.FormatJSON {
		arena = make([]byte, 0, b.size+n*16)
	}
	return headers, arena
}

// buildRecord fills in r, the zero record of entry e, produced at now: its
// topic, timestamp, key, value and headers, as the README's mapping says.
// Its headers are appended to headers and, in json, its value to arena,
// both returned grown; r keeps slices of them capped at its own part, and
// of e's strings, which are never copied (see bytesOf).
func (k *KafkaSink) buildRecord(r *kgo.Record, e *Entry, headers []kgo.RecordHeader, arena []byte, now time.Time) ([]kgo.RecordHeader, []byte) {
	r.Topic = k.cfg.Topics[e.Stream]
	r.Timestamp = k.timestamp(e.ID, now)
	hstart := len(headers)
	headers = append(headers, kgo.RecordHeader{Key: mapping.HeaderStream, Value: bytesOf(e.Stream)}, kgo.RecordHeader{Key: mapping.HeaderID, Value: bytesOf(e.ID)})
	valueSet := false
	for _, f := range e.Fields {
		if k.cfg.KeyField != "" && r.Key == nil && f.Name == k.cfg.KeyField {
			r.Key = bytesOf(f.Value)
		}
		if k.cfg.Format == mapping.FormatRaw {
			if !valueSet && f.Name == k.cfg.ValueField {
				r.Value = bytesOf(f.Value)
				valueSet = true
				continue
			}
			// A name in xmirror's namespace is escaped, so that no
			// field can pass for lineage (see ReservedPrefix); only
			// such a name costs an allocation.
			headers = append(headers, kgo.RecordHeader{Key: mapping.HeaderKey(f.Name), Value: bytesOf(f.Value)})
		}
	}
	if k.cfg.Format == mapping.FormatJSON {
		start := len(arena)
		arena = mapping.AppendJSONObject(arena, e.Fields)
		r.Value = arena[start:len(arena):len(arena)]
	}
	r.Headers = headers[hstart:len(headers):len(headers)]
	return headers, arena
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
	k.cfg.Logger.Warn(fmt.Sprintf("an entry has more fields than kafka-to-redis takes with a field limit of %d: it is written, but mirroring it back needs kafka-to-redis with a limit of %d or more (warned once per stream)", k.cfg.WarnFields, len(e.Fields)),
		"stream", e.Stream, "entry", e.ID, "topic", topic, "fields", len(e.Fields))
}

// RecordTooLargeError refuses a record larger than its topic accepts.
type RecordTooLargeError struct {
	Size  int // the record batch it would take, in bytes
	Limit kafkatopic.RecordLimit
}

func (e *RecordTooLargeError) Error() string {
	setting := "its " + kafkatopic.SettingTopic
	if e.Limit.Setting != kafkatopic.SettingTopic {
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
	if k.cfg.Format == mapping.FormatRaw {
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

// timestamp is the timestamp of the record of entry id, produced at now.
func (k *KafkaSink) timestamp(id string, now time.Time) time.Time {
	if k.cfg.Timestamp == TimestampNow {
		return now
	}
	return time.UnixMilli(mapping.IDMillis(id))
}

// refusal is why Kafka would refuse r, produced at now: too large for the
// topic, or a timestamp out of the topic's range; nil if it would not.
// p is the topic's policy, if it has one (hasPolicy).
func (k *KafkaSink) refusal(r *kgo.Record, now time.Time, p TimestampPolicy, hasPolicy bool) error {
	if err := k.tooLarge(r); err != nil {
		return err
	}
	if hasPolicy {
		if err := p.check(r.Timestamp.UnixMilli(), now.UnixMilli()); err != nil {
			return setting.Errorf("%w; pass {Timestamp} now to stamp records with the time they are produced, {OnError} skip or dead-letter to go past such entries, or raise the topic's limit", err)
		}
	}
	return nil
}

// setAside takes entry i out of the batch's records: Kafka refused it or
// would refuse it, and OnError says to go on without it.
func (k *KafkaSink) setAside(b *EntryBatch, i int, topic string, err error) {
	e := &b.Entries[i]
	what := "skipping"
	if k.cfg.OnError == mirror.OnErrorDeadLetter {
		what = "dead-lettering"
	}
	k.log.Warn(what+" an entry Kafka refuses", "stream", e.Stream, "id", e.ID, "topic", topic, "err", err)
	b.refuse(i, topic, b.records[i].Timestamp, err)
	b.records[i] = kgo.Record{}
}

// brokerRefused says whether a produce error is the broker refusing a
// record batch for the content of one of its records.
func brokerRefused(err error) bool {
	return errors.Is(err, kerr.InvalidTimestamp) || errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
}

// BrokerRefusedError is the broker refusing a record batch that passed the
// check made before producing (see refusal): the topic's configuration
// changed since the start, or the clocks of this machine and the broker
// differ by more than the check's margin. The broker refuses a whole
// record batch, so the entry named is the first of it, not necessarily the
// one at fault; the run stops whatever OnError says, since which entry
// to skip is not known. Records produced to the partition before the
// refusal was known may have landed after the batch: a rerun finds them
// in its read-back and sends only the refused batch, behind them.
type BrokerRefusedError struct{ Err error }

func (e *BrokerRefusedError) Error() string {
	return fmt.Sprintf("the broker refused the record batch holding this entry (it may be another entry of that batch) although it passed xmirror's check against the topic's limits read at start: %v", e.Err)
}

func (e *BrokerRefusedError) Unwrap() error { return e.Err }
