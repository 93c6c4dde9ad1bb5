package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
)

// k2r checks kafka-to-redis: the suite produces records {"seq":…,"pad":…},
// record seq to partition seq % partitions (so within a partition, offset
// order is seq order), with franz-go's idempotent producer, and reads the
// stream back with plain XRANGE.
type k2r struct {
	rc     rueidis.Client // the Redis holding the destination stream
	e      *env
	cfg    config
	topic  string
	stream string
	n      int
	parts  int32

	producer *kgo.Client
}

func (d *k2r) kind() string { return "kafka-to-redis" }

func (d *k2r) setup(ctx context.Context) error {
	if err := createTopic(ctx, d.e.adm, d.topic, d.parts); err != nil {
		return err
	}
	var err error
	d.producer, err = kgo.NewClient(kgo.SeedBrokers(d.e.brokers...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.DefaultProduceTopic(d.topic))
	return err
}

func (d *k2r) mirrorArgs(name string) []string {
	return []string{"kafka-to-redis", "--topic", d.topic, "--stream", d.stream, "--name", name, "--lease-ttl", "1s"}
}

// write produces records [from, to). The idempotent producer retries
// without duplicating, through a broker restart too; a chunk that still
// fails is not retried here (that could duplicate), it fails the run.
func (d *k2r) write(ctx context.Context, from, to int) error {
	recs := make([]*kgo.Record, 0, to-from)
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{
			Partition: int32(i % int(d.parts)),
			Value:     []byte(fmt.Sprintf(`{"seq":"%d","pad":"%s"}`, i, pad(i))),
		})
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := d.producer.ProduceSync(cctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce records %d-%d to %s: %w", from, to-1, d.topic, err)
	}
	return nil
}

func (d *k2r) progress(ctx context.Context) int64 {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	n, err := d.rc.Do(ctx, d.rc.B().Xlen().Key(d.stream).Build()).AsInt64()
	if err != nil {
		return -1
	}
	return n
}

func (d *k2r) verify(ctx context.Context, r *row) error {
	if n := topicEnd(ctx, d.e.adm, d.topic); n != int64(d.n) {
		r.fail("the source topic holds %d records, want %d (the suite's producer is wrong, not the mirror)", n, d.n)
	}
	seen := make([]int, d.n)
	lastSeq := map[int]int{}
	var badExample string
	start := "-"
	for {
		es, err := d.rc.Do(ctx, d.rc.B().Xrange().Key(d.stream).Start(start).End("+").Count(10000).Build()).AsXRange()
		if err != nil {
			return fmt.Errorf("XRANGE %s: %w", d.stream, err)
		}
		for _, e := range es {
			r.got++
			seq, err := strconv.Atoi(e.FieldValues["seq"])
			if err != nil || seq < 0 || seq >= d.n {
				r.bad++
				badExample = fmt.Sprintf("entry %s: %v", e.ID, e.FieldValues)
				continue
			}
			if len(e.FieldValues) != 2 || e.FieldValues["pad"] != pad(seq) {
				r.bad++
				badExample = fmt.Sprintf("entry %s: %v", e.ID, e.FieldValues)
			}
			seen[seq]++
			if seen[seq] > 1 {
				r.dup++
				continue
			}
			p := seq % int(d.parts)
			if last, ok := lastSeq[p]; ok && seq < last {
				r.ooo++
				continue
			}
			lastSeq[p] = seq
		}
		if len(es) < 10000 {
			break
		}
		start = "(" + es[len(es)-1].ID
	}
	for _, c := range seen {
		if c == 0 {
			r.lost++
		}
	}
	if badExample != "" {
		r.info("first bad entry: %s", badExample)
	}
	return nil
}

func (d *k2r) cleanup(ctx context.Context) {
	if d.producer != nil {
		d.producer.Close()
	}
	d.rc.Do(ctx, d.rc.B().Del().Key(d.stream).Build())
	d.e.adm.DeleteTopics(ctx, d.topic)
}
