package mirror

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
)

func TestEntryIDMillisecondsAreClampedToWhatTheProducerCanWrite(t *testing.T) {
	tests := []struct {
		id   string
		want int64
	}{
		{"0-0", 0},
		{"1700000000000-5", 1700000000000},
		{"9223372036854-0", 9223372036854},
		{"9223372036855-0", maxTimestampMs},
		{"9999999999999-0", maxTimestampMs},
		{"18446744073709551615-18446744073709551615", maxTimestampMs},
	}
	for _, tc := range tests {
		got := idMillis(tc.id)
		if got != tc.want {
			t.Errorf("idMillis(%q) = %d, want %d", tc.id, got, tc.want)
		}
		// What franz-go writes: UnixNano / 1e6, never negative.
		if ts := time.UnixMilli(got).UnixNano() / 1e6; ts != got || ts < 0 {
			t.Errorf("%q: the producer would write %d", tc.id, ts)
		}
	}
}

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
		{"default, year 2262", def, maxTimestampMs, "ahead"},
		{"before bound", timestampPolicy(map[string]string{"message.timestamp.before.max.ms": "86400000"}), now - 2*24*hour, "behind"},
		{"before bound, within", timestampPolicy(map[string]string{"message.timestamp.before.max.ms": "86400000"}), now - hour, ""},
		{"older brokers' difference bound", timestampPolicy(map[string]string{"message.timestamp.difference.max.ms": "3600000"}), now + 2*hour, "message.timestamp.difference.max.ms"},
		{"zero after bound: a margin of zero", timestampPolicy(map[string]string{"message.timestamp.after.max.ms": "0"}), now - 1, ""},
		{"log append time", timestampPolicy(map[string]string{"message.timestamp.type": "LogAppendTime", "message.timestamp.after.max.ms": "0"}), maxTimestampMs, ""},
		{"unbounded", Unbounded(), maxTimestampMs, ""},
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
		unkeyed := &kgo.Record{Headers: []kgo.RecordHeader{{Key: HeaderStream, Value: []byte("stream" + strconv.Itoa(i))}}}
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

// TestBrokerRefusedBatchIsResentOneRecordAtATime: without the client-side
// check, the broker refuses the whole record batch for one record 2 h
// ahead; the sink finds it by producing the refused records one at a time.
func TestBrokerRefusedBatchIsResentOneRecordAtATime(t *testing.T) {
	kc := testenv.Kafka(t)
	now := time.Now().UnixMilli()
	batch := func(stream string) *EntryBatch {
		b := &EntryBatch{}
		for i, ms := range []int64{now - 3000, now - 2000, now + 2*time.Hour.Milliseconds(), now + 2*time.Hour.Milliseconds()} {
			e := Entry{Stream: stream, ID: strconv.FormatInt(ms, 10) + "-" + strconv.Itoa(i), Fields: []Field{{Name: "v", Value: strconv.Itoa(i)}}}
			b.Entries = append(b.Entries, e)
			b.written++
			b.size += entrySize(e)
		}
		// Another stream's valid entry after them, in the same partition.
		e := Entry{Stream: stream + "-b", ID: strconv.FormatInt(now-1000, 10) + "-0", Fields: []Field{{Name: "v", Value: "b"}}}
		b.Entries = append(b.Entries, e)
		b.written++
		b.size += entrySize(e)
		return b
	}
	for _, mode := range []string{OnErrorFail, OnErrorSkip} {
		t.Run(mode, func(t *testing.T) {
			topic := testenv.Topic(t, kc, 1)
			opts, err := ProducerOpts(ProducerTuning{Linger: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			producer := testenv.Kafka(t, opts...)
			stream := testenv.Name(t, "s")
			sink := NewKafkaSink(KafkaSinkConfig{Client: producer, Topics: map[string]string{stream: topic, stream + "-b": topic}, Format: FormatJSON, OnError: mode})
			b := batch(stream)
			got := make(chan error, 1)
			sink.Write(context.Background(), b, func(err error) { got <- err })
			var werr error
			select {
			case werr = <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("the batch was not answered within 30s")
			}
			var ids []string
			for _, r := range readTopicRecords(t, kc, topic) {
				for _, h := range r.Headers {
					if h.Key == HeaderID {
						ids = append(ids, string(h.Value))
					}
				}
			}
			switch mode {
			case OnErrorFail:
				var partial *PartialError
				if !errors.As(werr, &partial) || partial.Confirmed != 2 || !strings.Contains(werr.Error(), b.Entries[2].ID) || !errors.Is(werr, kerr.InvalidTimestamp) {
					t.Fatalf("err %v, want a PartialError confirming 2 and naming %s", werr, b.Entries[2].ID)
				}
				if want := b.Entries[0].ID + "," + b.Entries[1].ID; strings.Join(ids, ",") != want {
					t.Fatalf("topic holds %v, want %s", ids, want)
				}
			case OnErrorSkip:
				if werr != nil {
					t.Fatalf("err %v, want the batch confirmed without the refused entries", werr)
				}
				if want := b.Entries[0].ID + "," + b.Entries[1].ID + "," + b.Entries[4].ID; strings.Join(ids, ",") != want {
					t.Fatalf("topic holds %v, want %s", ids, want)
				}
				if len(b.refused) != 2 || b.Entries[2].skip != skipRefused || b.Entries[3].skip != skipRefused || b.Len() != 3 {
					t.Fatalf("refused %v, len %d; want entries 2 and 3 set aside, 3 written", b.refused, b.Len())
				}
				if b.records[4].Offset != 2 {
					t.Fatalf("the last entry's record is at offset %d, want 2", b.records[4].Offset)
				}
			}
		})
	}
}

// readTopicRecords reads a one-partition topic to its end with a plain
// consumer.
func readTopicRecords(t *testing.T, kc *kgo.Client, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(kc).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	cl := testenv.Kafka(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	var recs []*kgo.Record
	for int64(len(recs)) < end.Offset {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of the %d records of %s", len(recs), end.Offset, topic)
		}
		f.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	return recs
}

// TestBrokerRefusedLargeBatchKeepsItsOrder: a batch larger than one
// produce request, refused by the broker in its middle, is delivered whole
// but for the refused entry, in order.
func TestBrokerRefusedLargeBatchKeepsItsOrder(t *testing.T) {
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	opts, err := ProducerOpts(ProducerTuning{Limits: TopicLimits{Topics: map[string]RecordLimit{topic: {Topic: topic, Bytes: 16 << 10}}}})
	if err != nil {
		t.Fatal(err)
	}
	producer := testenv.Kafka(t, opts...)
	a, c := testenv.Name(t, "a"), testenv.Name(t, "c")
	now := time.Now().UnixMilli()
	b := &EntryBatch{}
	add := func(stream string, ms int64, seq int) {
		e := Entry{Stream: stream, ID: strconv.FormatInt(ms, 10) + "-" + strconv.Itoa(seq), Fields: []Field{{Name: "v", Value: strings.Repeat("x", 100)}}}
		b.Entries = append(b.Entries, e)
		b.written++
		b.size += entrySize(e)
	}
	for i := range 1000 {
		add(a, now-5000, i)
	}
	add(a, now+2*time.Hour.Milliseconds(), 0)
	for i := range 999 {
		add(c, now-4000, i)
	}
	sink := NewKafkaSink(KafkaSinkConfig{Client: producer, Topics: map[string]string{a: topic, c: topic}, Format: FormatJSON, OnError: OnErrorSkip})
	got := make(chan error, 1)
	sink.Write(context.Background(), b, func(err error) { got <- err })
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("err %v, want the batch confirmed without the refused entry", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the batch was not answered within 60s")
	}
	var want []string
	for i, e := range b.Entries {
		if i != 1000 {
			want = append(want, e.ID)
		}
	}
	var ids []string
	for _, r := range readTopicRecords(t, kc, topic) {
		for _, h := range r.Headers {
			if h.Key == HeaderID {
				ids = append(ids, string(h.Value))
			}
		}
	}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Fatalf("topic holds %d records, want the %d valid ones in batch order", len(ids), len(want))
	}
	if len(b.refused) != 1 || b.refused[0].index != 1000 {
		t.Fatalf("refused %v, want entry 1000", b.refused)
	}
}

// TestBrokerRefusedBatchIsResentBeforeTheNextBatch: the batch written
// right after a refused one, into the same partition, lands after the
// refused batch's valid records, and both are confirmed.
func TestBrokerRefusedBatchIsResentBeforeTheNextBatch(t *testing.T) {
	kc := testenv.Kafka(t)
	opts, err := ProducerOpts(ProducerTuning{})
	if err != nil {
		t.Fatal(err)
	}
	producer := testenv.Kafka(t, opts...)
	a, c := testenv.Name(t, "a"), testenv.Name(t, "c")
	now := time.Now().UnixMilli()
	batch := func(stream string, ms []int64) *EntryBatch {
		b := &EntryBatch{}
		for i, m := range ms {
			e := Entry{Stream: stream, ID: strconv.FormatInt(m, 10) + "-" + strconv.Itoa(i), Fields: []Field{{Name: "v", Value: "x"}}}
			b.Entries = append(b.Entries, e)
			b.written++
			b.size += entrySize(e)
		}
		return b
	}
	ahead := now + 2*time.Hour.Milliseconds()
	for _, mode := range []string{OnErrorSkip, OnErrorFail} {
		t.Run(mode, func(t *testing.T) {
			topic := testenv.Topic(t, kc, 1)
			first := batch(a, []int64{now - 3000, now - 3000, ahead, ahead})
			second := batch(c, []int64{now - 2000, now - 2000, now - 2000})
			sink := NewKafkaSink(KafkaSinkConfig{Client: producer, Topics: map[string]string{a: topic, c: topic}, Format: FormatJSON, OnError: mode})
			got := [2]chan error{make(chan error, 1), make(chan error, 1)}
			sink.Write(context.Background(), first, func(err error) { got[0] <- err })
			sink.Write(context.Background(), second, func(err error) { got[1] <- err })
			var errs [2]error
			for i := range got {
				select {
				case errs[i] = <-got[i]:
				case <-time.After(30 * time.Second):
					t.Fatal("the batches were not answered within 30s")
				}
			}
			want := []string{first.Entries[0].ID, first.Entries[1].ID, second.Entries[0].ID, second.Entries[1].ID, second.Entries[2].ID}
			if mode == OnErrorFail {
				// The second batch must not land ahead of what the
				// first one kept back.
				var partial *PartialError
				if !errors.As(errs[0], &partial) || partial.Confirmed != 2 || errs[1] == nil {
					t.Fatalf("errors %v, %v; want the first batch confirmed up to its refused entry, the second failed", errs[0], errs[1])
				}
				want = want[:2]
			} else if errs[0] != nil || errs[1] != nil {
				t.Fatalf("errors %v, %v; want both batches confirmed", errs[0], errs[1])
			}
			var ids []string
			for _, r := range readTopicRecords(t, kc, topic) {
				for _, h := range r.Headers {
					if h.Key == HeaderID {
						ids = append(ids, string(h.Value))
					}
				}
			}
			if strings.Join(ids, ",") != strings.Join(want, ",") {
				t.Fatalf("topic holds %v, want %v", ids, want)
			}
		})
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
		"small":          {Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: HeaderStream, Value: []byte("s")}}},
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
		limit RecordLimit
		want  []string
	}{
		{RecordLimit{Topic: "t", Bytes: 3 << 20, Setting: SettingTopic}, []string{"its max.message.bytes", "raise the topic's max.message.bytes", "--entity-name t --add-config max.message.bytes=6291456"}},
		{RecordLimit{Topic: "t", Bytes: 1048588, Setting: SettingBroker}, []string{"the broker's message.max.bytes", "no max.message.bytes of its own", "--add-config max.message.bytes=6291456"}},
		{RecordLimit{Topic: "t", Bytes: 4 << 20, Setting: SettingRequest}, []string{"the broker's socket.request.max.bytes", "raise the broker's socket.request.max.bytes"}},
	} {
		k := &KafkaSink{cfg: KafkaSinkConfig{Limits: map[string]RecordLimit{"t": tc.limit}}}
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
