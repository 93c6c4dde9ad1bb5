package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadTopicTo reads the committed records of a topic to its end offsets,
// or with stable to its last stable offsets (which never waits, and may
// miss the records of a transaction whose markers are not written yet),
// read_committed, with a plain consumer of its own.
func ReadTopicTo(t *testing.T, topic string, stable bool) []*kgo.Record {
	t.Helper()
	return readTopic(t, func(opts ...kgo.Opt) *kgo.Client { return Kafka(t, opts...) }, topic, stable)
}

// ReadTopic reads every committed record of a topic of the secured broker
// as ReadTopicTo does, through its super-user listener.
func (k KafkaSecure) ReadTopic(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	return readTopic(t, func(opts ...kgo.Opt) *kgo.Client { return k.Admin(t, opts...) }, topic, false)
}

func readTopic(t *testing.T, client func(opts ...kgo.Opt) *kgo.Client, topic string, stable bool) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(client())
	list := adm.ListEndOffsets
	if stable {
		list = adm.ListCommittedOffsets
	}
	ends, err := list(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			total += o.Offset
		}
	})
	if total == 0 {
		return nil
	}
	cl := client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	var recs []*kgo.Record
	for len(want) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading topic %s: timed out with %d records read", topic, len(recs))
		}
		if errs := f.Errors(); len(errs) > 0 {
			t.Fatalf("reading topic %s: %v", topic, errs[0].Err)
		}
		f.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				recs = append(recs, r)
			}
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return recs
}
