package r2k

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

func TestTimestampPolicyRefusesWhatTheTopicWouldWithAMargin(t *testing.T) {
	const now = int64(1_800_000_000_000)
	hour := time.Hour.Milliseconds()
	minute := time.Minute.Milliseconds()
	def := timestampPolicy(map[string]string{"message.timestamp.type": "CreateTime", "message.timestamp.after.max.ms": "3600000", "message.timestamp.before.max.ms": "9223372036854775807"})
	tests := []struct {
		name   string
		p      TimestampPolicy
		ts     int64
		refuse string // "" accepted, else a part of the error
	}{
		{"default, now", def, now, ""},
		{"default, a day old", def, now - 24*hour, ""},
		{"default, 58 min ahead", def, now + 58*minute, ""},
		{"default, 59.5 min ahead: in the margin", def, now + 59*minute + 30_000, "ahead"},
		{"default, 2 h ahead", def, now + 2*hour, "message.timestamp.after.max.ms=3600000"},
		{"default, year 2262", def, mapping.MaxTimestampMs, "ahead"},
		{"before bound", timestampPolicy(map[string]string{"message.timestamp.before.max.ms": "86400000"}), now - 2*24*hour, "behind"},
		{"before bound, within", timestampPolicy(map[string]string{"message.timestamp.before.max.ms": "86400000"}), now - hour, ""},
		{"older brokers' difference bound", timestampPolicy(map[string]string{"message.timestamp.difference.max.ms": "3600000"}), now + 2*hour, "message.timestamp.difference.max.ms"},
		{"zero after bound: a margin of zero", timestampPolicy(map[string]string{"message.timestamp.after.max.ms": "0"}), now - 1, ""},
		{"log append time", timestampPolicy(map[string]string{"message.timestamp.type": "LogAppendTime", "message.timestamp.after.max.ms": "0"}), mapping.MaxTimestampMs, ""},
		{"unbounded", Unbounded(), mapping.MaxTimestampMs, ""},
	}
	for _, tc := range tests {
		err := tc.p.check(tc.ts, now)
		switch {
		case tc.refuse == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.refuse != "" && (err == nil || !strings.Contains(err.Error(), tc.refuse) || !errors.Is(err, kerr.InvalidTimestamp)):
			t.Errorf("%s: err %v, want INVALID_TIMESTAMP saying %q", tc.name, err, tc.refuse)
		}
	}
}

func TestKeepPartitionCounts(t *testing.T) {
	kept, fresh, err := KeepPartitionCounts(map[string]int32{"a": 2, "b": 4}, map[string]int32{"a": 4, "b": 4, "c": 3}, "xmirror:r2k:m")
	if err != nil {
		t.Fatal(err)
	}
	if kept["a"] != 2 || kept["b"] != 4 || kept["c"] != 3 || len(fresh) != 1 || fresh["c"] != 3 {
		t.Fatalf("kept %v, fresh %v; want a:2 b:4 c:3, only c fresh", kept, fresh)
	}
	_, _, err = KeepPartitionCounts(map[string]int32{"a": 6}, map[string]int32{"a": 3}, "xmirror:r2k:m")
	if err == nil || !strings.Contains(err.Error(), `topic "a" has 3 partitions, fewer than the 6`) || !strings.Contains(err.Error(), "xmirror:r2k:m") {
		t.Fatalf("a topic recreated with fewer partitions: err %v", err)
	}
}

func TestPartitionerKeepsHashingOverTheKeptCount(t *testing.T) {
	var added []string
	p := streamPartitioner(map[string]int32{"t": 2}, func(topic string, n, kept int) {
		added = append(added, topic+":"+strconv.Itoa(n)+">"+strconv.Itoa(kept))
	})
	kept := p.ForTopic("t")
	other := p.ForTopic("u")
	for i := range 200 {
		keyed := &kgo.Record{Key: []byte("key" + strconv.Itoa(i))}
		unkeyed := &kgo.Record{Headers: []kgo.RecordHeader{{Key: mapping.HeaderStream, Value: []byte("stream" + strconv.Itoa(i))}}}
		for _, r := range []*kgo.Record{keyed, unkeyed} {
			if a, b := kept.Partition(r, 2), kept.Partition(r, 7); a != b {
				t.Fatalf("record %d: partition %d of 2, %d of 7; want the same", i, a, b)
			}
			if got := other.Partition(r, 7); got < 0 || got >= 7 {
				t.Fatalf("a topic without a kept count: partition %d of 7", got)
			}
		}
	}
	if strings.Join(added, ",") != "t:7>2" {
		t.Fatalf("told %v, want once that t has 7 partitions and keeps 2", added)
	}
}

// TestBrokerRefusedBatchStopsTheRunWhateverOnError: without the check made
// before producing (a topic config changed since the start, say), the
// broker refuses the whole record batch for one record 2 h ahead. Which
// entry of it is at fault is not known, so the batch fails naming its
// first entry and the refusal, whatever OnError says, and the batch
// written after it produces nothing: it would land ahead of what the first
// one kept back.
func TestBrokerRefusedBatchStopsTheRunWhateverOnError(t *testing.T) {
	kc := testenv.Kafka(t)
	now := time.Now().UnixMilli()
	batch := func(stream string, ms ...int64) *EntryBatch {
		b := &EntryBatch{}
		for i, m := range ms {
			e := Entry{Stream: stream, ID: strconv.FormatInt(m, 10) + "-" + strconv.Itoa(i), Fields: []mapping.Field{{Name: "v", Value: strconv.Itoa(i)}}}
			b.Entries = append(b.Entries, e)
			b.written++
			b.size += entrySize(e)
		}
		return b
	}
	ahead := now + 2*time.Hour.Milliseconds()
	for _, mode := range []string{mirror.OnErrorFail, mirror.OnErrorSkip, mirror.OnErrorDeadLetter} {
		t.Run(mode, func(t *testing.T) {
			topic := testenv.Topic(t, kc, 1)
			// A linger puts the whole batch in one record batch.
			opts, err := ProducerOpts(ProducerTuning{Linger: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			producer := testenv.Kafka(t, append(opts, kgo.TransactionalID(testenv.Name(t, "txn")))...)
			a, c := testenv.Name(t, "a"), testenv.Name(t, "c")
			sink := NewKafkaSink(KafkaSinkConfig{Client: producer, Topics: map[string]string{a: topic, c: topic}, Format: mapping.FormatJSON, OnError: mode})
			first := batch(a, now-3000, now-2000, ahead, now-1000)
			got := make(chan error, 1)
			sink.Write(context.Background(), first, func(err error) { got <- err })
			var werr error
			select {
			case werr = <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("the batch was not answered within 30s")
			}
			var partial *mirror.PartialError
			var refused *BrokerRefusedError
			if !errors.As(werr, &partial) || partial.Confirmed != 0 || !errors.As(werr, &refused) || !errors.Is(werr, kerr.InvalidTimestamp) ||
				!strings.Contains(setting.Render(werr, flags), "--timestamp now") {
				t.Fatalf("err %v; want a PartialError confirming nothing, the broker's refusal and what to do", werr)
			}
			// The error names the first entry of the record batch the
			// broker refused: the first of the batch, unless the
			// producer sent the entries before the refused one apart
			// (the linger is a hint, not a promise).
			named := false
			for _, e := range first.Entries[:3] {
				named = named || strings.Contains(werr.Error(), "entry "+e.ID+" ")
			}
			if !named {
				t.Fatalf("err %v; want it to name an entry of the refused record batch, at or before %s", werr, first.Entries[2].ID)
			}
			second := batch(c, now-500)
			sink.Write(context.Background(), second, func(err error) { got <- err })
			select {
			case werr = <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("the second batch was not answered within 30s")
			}
			if !errors.Is(werr, errHalted) {
				t.Fatalf("second batch: err %v, want it refused unproduced (%v)", werr, errHalted)
			}
			if recs := readTopicRecords(t, kc, topic); len(recs) != 0 {
				t.Fatalf("topic holds %d records, want none", len(recs))
			}
		})
	}
}

// readTopicRecords reads the committed records of a one-partition topic,
// read_committed to its end offset (waiting for the markers of the last
// transaction), with a plain consumer.
func readTopicRecords(t *testing.T, kc *kgo.Client, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(kc).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	cl := testenv.Kafka(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	var recs []*kgo.Record
	for at := int64(0); at < end.Offset; {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read to offset %d of the %d of %s", at, end.Offset, topic)
		}
		f.EachRecord(func(r *kgo.Record) {
			at = r.Offset + 1
			if !r.Attrs.IsControl() {
				recs = append(recs, r)
			}
		})
	}
	return recs
}

// TestBrokerRefusedLargeBatchLandsNothingTwiceNorOutOfOrder: a batch
// larger than one produce request, refused by the broker in its middle,
// fails confirming nothing: the transaction holding it is aborted, so
// nothing of it is committed (read_committed sees none of it), and a rerun
// sends it whole.
func TestBrokerRefusedLargeBatchLandsNothingTwiceNorOutOfOrder(t *testing.T) {
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	opts, err := ProducerOpts(ProducerTuning{Limits: kafkatopic.Limits{Topics: map[string]kafkatopic.RecordLimit{topic: {Topic: topic, Bytes: 16 << 10}}}})
	if err != nil {
		t.Fatal(err)
	}
	producer := testenv.Kafka(t, append(opts, kgo.TransactionalID(testenv.Name(t, "txn")))...)
	a, c := testenv.Name(t, "a"), testenv.Name(t, "c")
	now := time.Now().UnixMilli()
	b := &EntryBatch{}
	add := func(stream string, ms int64, seq int) {
		e := Entry{Stream: stream, ID: strconv.FormatInt(ms, 10) + "-" + strconv.Itoa(seq), Fields: []mapping.Field{{Name: "v", Value: strings.Repeat("x", 100)}}}
		b.Entries = append(b.Entries, e)
		b.written++
		b.size += entrySize(e)
	}
	for i := range 1000 {
		add(a, now-5000, i)
	}
	add(a, now+2*time.Hour.Milliseconds(), 0)
	for i := range 29000 {
		add(c, now-4000, i)
	}
	sink := NewKafkaSink(KafkaSinkConfig{Client: producer, Topics: map[string]string{a: topic, c: topic}, Format: mapping.FormatJSON, OnError: mirror.OnErrorSkip})
	got := make(chan error, 1)
	sink.Write(context.Background(), b, func(err error) { got <- err })
	var werr error
	select {
	case werr = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("the batch was not answered within 60s")
	}
	var partial *mirror.PartialError
	if !errors.As(werr, &partial) || partial.Confirmed != 0 || !errors.Is(werr, kerr.InvalidTimestamp) {
		t.Fatalf("err %v; want a PartialError confirming nothing: the transaction is aborted", werr)
	}
	if recs := readTopicRecords(t, kc, topic); len(recs) != 0 {
		t.Fatalf("%d records of the aborted transaction are committed, want none", len(recs))
	}
}

// The sink refuses a record before franz-go would: batchSize must be
// exactly where franz-go's own batch limit check draws the line, or a
// record it passes could still fail inside franz-go, after the records
// behind it were produced. franz-go checks before it sends, so a limit one
// byte short fails without the broker being asked.
func TestBatchSizeIsWhereTheProducerDrawsTheLine(t *testing.T) {
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	wide := make([]kgo.RecordHeader, 0, 20000)
	for i := 0; i < 20000; i++ {
		wide = append(wide, kgo.RecordHeader{Key: "f" + strconv.Itoa(i), Value: []byte(strings.Repeat("v", i%200))})
	}
	records := map[string]*kgo.Record{
		"empty":          {},
		"small":          {Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: mapping.HeaderStream, Value: []byte("s")}}},
		"large value":    {Value: make([]byte, 300000)},
		"many headers":   {Value: []byte("x"), Headers: wide},
		"long header":    {Headers: []kgo.RecordHeader{{Key: strings.Repeat("n", 70000), Value: make([]byte, 20000)}}},
		"value of 16383": {Value: make([]byte, 16383)},
		"value of 16384": {Value: make([]byte, 16384)},
	}
	for name, r := range records {
		t.Run(name, func(t *testing.T) {
			size := batchSize(r)
			for _, limit := range []int{size, size - 1} {
				cl := testenv.Kafka(t, kgo.ProducerBatchMaxBytes(int32(max(limit, 512))), kgo.RequiredAcks(kgo.AllISRAcks()))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				rec := *r
				rec.Topic = topic
				err := cl.ProduceSync(ctx, &rec).FirstErr()
				cancel()
				switch tooLarge := errors.Is(err, kerr.MessageTooLarge); {
				case limit == size && err != nil:
					t.Fatalf("batch limit %d = batchSize: %v, want it produced", limit, err)
				case limit == size-1 && limit >= 512 && !tooLarge:
					t.Fatalf("batch limit %d, one short of batchSize: %v, want MESSAGE_TOO_LARGE", limit, err)
				}
			}
		})
	}
}

func TestTooLargeNamesTheSettingAndHowToRaiseIt(t *testing.T) {
	r := &kgo.Record{Topic: "t", Value: make([]byte, 5<<20)}
	for _, tc := range []struct {
		limit kafkatopic.RecordLimit
		want  []string
	}{
		{kafkatopic.RecordLimit{Topic: "t", Bytes: 3 << 20, Setting: kafkatopic.SettingTopic}, []string{"its max.message.bytes", "raise the topic's max.message.bytes", "--entity-name t --add-config max.message.bytes=6291456"}},
		{kafkatopic.RecordLimit{Topic: "t", Bytes: 1048588, Setting: kafkatopic.SettingBroker}, []string{"the broker's message.max.bytes", "no max.message.bytes of its own", "--add-config max.message.bytes=6291456"}},
		{kafkatopic.RecordLimit{Topic: "t", Bytes: 4 << 20, Setting: kafkatopic.SettingRequest}, []string{"the broker's socket.request.max.bytes", "raise the broker's socket.request.max.bytes"}},
	} {
		k := &KafkaSink{cfg: KafkaSinkConfig{Limits: map[string]kafkatopic.RecordLimit{"t": tc.limit}}}
		err := k.tooLarge(r)
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("%s: %v, want a MESSAGE_TOO_LARGE", tc.limit.Setting, err)
		}
		msg := (&EntryError{Stream: "s", ID: "1-1", Topic: "t", Err: err}).Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", tc.limit.Setting, msg, w)
			}
		}
		if k.tooLarge(&kgo.Record{Topic: "t", Value: []byte("small")}) != nil {
			t.Errorf("%s: a small record refused", tc.limit.Setting)
		}
	}
}

// TestNewProducerFencesAnOpenTransaction: a sink whose transaction is open
// (its records produced, not committed) when another producer of the same
// transactional ID initialises (a new run of the mirror) commits nothing:
// its batch fails with a FencedError, so it is never acknowledged, a later
// batch too, and a read_committed reader sees none of its records.
func TestNewProducerFencesAnOpenTransaction(t *testing.T) {
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	txnID := testenv.Name(t, "txn")
	opts, err := ProducerOpts(ProducerTuning{})
	if err != nil {
		t.Fatal(err)
	}
	old := testenv.Kafka(t, append(opts, kgo.TransactionalID(txnID))...)
	stream := testenv.Name(t, "s")
	// Nothing commits the transaction but the test.
	sink := NewKafkaSink(KafkaSinkConfig{Client: old, Mirror: "m", Topics: map[string]string{stream: topic}, Format: mapping.FormatJSON, TxnBatches: 100, TxnIdle: time.Hour})
	b := &EntryBatch{}
	for i := range 10 {
		e := Entry{Stream: stream, ID: "1-" + strconv.Itoa(i), Fields: []mapping.Field{{Name: "v", Value: strconv.Itoa(i)}}}
		b.Entries = append(b.Entries, e)
		b.written++
		b.size += entrySize(e)
	}
	got := make(chan error, 2)
	ctx := context.Background()
	sink.Write(ctx, b, func(err error) { got <- err })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(sink.txnWait(ctx))
	tb := sink.txn.batches[0]
	sink.txnRelease()
	select {
	case <-tb.answered:
	case <-time.After(30 * time.Second):
		t.Fatal("the records were not answered within 30s")
	}
	if tb.refused != nil {
		t.Fatalf("produced records refused: %v", tb.refused)
	}

	// A new run initialises its producer: the old one is fenced.
	fresh := testenv.Kafka(t, append(opts, kgo.TransactionalID(txnID))...)
	initCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	must(InitProducer(initCtx, fresh, "m"))
	cancel()

	must(sink.txnWait(ctx))
	sink.end(ctx)
	sink.txnRelease()
	var werr error
	select {
	case werr = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the batch was not answered within 30s")
	}
	var fencedErr *FencedError
	if !errors.As(werr, &fencedErr) || !strings.Contains(werr.Error(), `another run of mirror "m" started`) {
		t.Fatalf("batch: err %v; want a FencedError", werr)
	}
	sink.Write(ctx, b, func(err error) { got <- err })
	if werr := <-got; !errors.As(werr, &fencedErr) && !errors.Is(werr, errHalted) {
		t.Fatalf("a batch after the fence: err %v; want it refused", werr)
	}
	if recs := readTopicRecords(t, kc, topic); len(recs) != 0 {
		t.Fatalf("%d records of the fenced transaction are committed, want none", len(recs))
	}
}
