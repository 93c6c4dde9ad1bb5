package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// keys is how many distinct --key-field values the r2k entries carry: enough
// to spread over the partitions, few enough that each key has many entries
// whose order can be checked.
const keys = 64

// pad is an entry's filler: deterministic, so the reader can check it.
func pad(i int) string {
	return strings.Repeat(fmt.Sprintf("%08x", uint32(i)*2654435761), 6)
}

// r2k checks redis-to-kafka: the suite XADDs entries {seq, k, pad} with IDs
// <baseMs>-<seq>, a chunk per transaction (explicit IDs make a chunk retried
// after a lost reply harmless: Redis refuses an ID at or below the top), and
// reads the topic back with a plain franz-go consumer.
type r2k struct {
	rc     rueidis.Client // the Redis holding the source stream
	e      *env
	stream string
	topic  string
	n      int
	parts  int32
	baseMs int64

	mu      sync.Mutex
	retries []string // the writer's first failed attempts, for a report
}

func (d *r2k) kind() string { return "redis-to-kafka" }

func (d *r2k) setup(ctx context.Context) error {
	return createTopic(ctx, d.e.adm, d.topic, d.parts)
}

func (d *r2k) mirrorArgs(name string) []string {
	return []string{"redis-to-kafka", "--stream", d.stream, "--topic", d.topic, "--key-field", "k", "--name", name, "--lease-ttl", "1s"}
}

func (d *r2k) id(i int) string { return fmt.Sprintf("%d-%d", d.baseMs, i) }

func (d *r2k) write(ctx context.Context, from, to int) error {
	// The chunk goes in one MULTI/EXEC, all or nothing. Pipelined plain
	// XADDs are not: a Redis restarting from its AOF answers -LOADING to
	// the first commands it reads and runs the rest once loaded, so the
	// tail would land without the head, which could never be added
	// after it (an ID below the top is refused). A rejected XADD aborts
	// the transaction instead (EXECABORT), and a broken connection
	// discards it.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// Built anew for each attempt: rueidis recycles sent commands.
		cmds := make(rueidis.Commands, 0, to-from+2)
		cmds = append(cmds, d.rc.B().Multi().Build())
		for i := from; i < to; i++ {
			cmds = append(cmds, d.rc.B().Xadd().Key(d.stream).Id(d.id(i)).FieldValue().
				FieldValue("seq", strconv.Itoa(i)).FieldValue("k", strconv.Itoa(i%keys)).FieldValue("pad", pad(i)).Build())
		}
		cmds = append(cmds, d.rc.B().Exec().Build())
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res := d.rc.DoMulti(cctx, cmds...)
		cancel()
		replies, err := res[len(res)-1].ToArray()
		if err == nil {
			for i, r := range replies {
				// An ID at or below the top: an earlier attempt whose
				// EXEC reply was lost did write the chunk.
				if err := r.Error(); err != nil && !strings.Contains(err.Error(), "equal or smaller than the target stream top item") {
					return fmt.Errorf("XADD %s entry %d: %w", d.stream, from+i, err)
				}
			}
			return nil
		}
		d.mu.Lock()
		if len(d.retries) < 10 {
			d.retries = append(d.retries, fmt.Sprintf("%s seq %d-%d: %v", time.Now().Format("15:04:05.000"), from, to-1, err))
		}
		d.mu.Unlock()
		if time.Now().After(deadline) {
			return fmt.Errorf("XADD %s entries %d-%d: still failing after 2 minutes: %w", d.stream, from, to-1, err)
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func (d *r2k) progress(ctx context.Context) int64 {
	return topicEnd(ctx, d.e.adm, d.topic)
}

func (d *r2k) verify(ctx context.Context, r *row) error {
	n, err := d.rc.Do(ctx, d.rc.B().Xlen().Key(d.stream).Build()).AsInt64()
	if err != nil {
		return fmt.Errorf("XLEN %s: %w", d.stream, err)
	}
	if n != int64(d.n) {
		r.fail("the source stream holds %d entries, want %d (the suite's writer is wrong, not the mirror)%s", n, d.n, d.sourceGaps(ctx))
		d.mu.Lock()
		r.info("the writer's failed attempts: %s", strings.Join(d.retries, "; "))
		d.mu.Unlock()
	}
	seen := make([]int, d.n)
	lastSeq := map[int32]int{}
	keyPart := map[string]int32{}
	var badExample string
	err = readTopic(ctx, d.e, d.topic, func(rec *kgo.Record) {
		r.got++
		seq, ok := seqOf(rec.Value)
		if !ok || seq < 0 || seq >= d.n {
			r.bad++
			badExample = fmt.Sprintf("partition %d offset %d: value %q", rec.Partition, rec.Offset, rec.Value)
			return
		}
		want := fmt.Sprintf(`{"seq":"%d","k":"%d","pad":"%s"}`, seq, seq%keys, pad(seq))
		key := strconv.Itoa(seq % keys)
		if string(rec.Value) != want || string(rec.Key) != key || header(rec, "xmirror.id") != d.id(seq) || header(rec, "xmirror.stream") != d.stream {
			r.bad++
			badExample = fmt.Sprintf("partition %d offset %d: key %q value %q headers %v", rec.Partition, rec.Offset, rec.Key, rec.Value, rec.Headers)
		}
		if p, ok := keyPart[key]; ok && p != rec.Partition {
			r.ooo++
			badExample = fmt.Sprintf("key %q in partitions %d and %d", key, p, rec.Partition)
		}
		keyPart[key] = rec.Partition
		seen[seq]++
		if seen[seq] > 1 {
			r.dup++
			return
		}
		if last, ok := lastSeq[rec.Partition]; ok && seq < last {
			r.ooo++
			return
		}
		lastSeq[rec.Partition] = seq
	})
	if err != nil {
		return err
	}
	for _, c := range seen {
		if c == 0 {
			r.lost++
		}
	}
	if badExample != "" {
		r.info("first bad record: %s", badExample)
	}
	return nil
}

// sourceGaps names the entries missing from the source stream, for a
// report: ": missing seq 100-539, ..." (at most 5 ranges), or "" when it
// cannot tell.
func (d *r2k) sourceGaps(ctx context.Context) string {
	var gaps []string
	expect, start := 0, "-"
	for len(gaps) < 5 {
		page, err := d.rc.Do(ctx, d.rc.B().Xrange().Key(d.stream).Start(start).End("+").Count(10000).Build()).AsXRange()
		if err != nil {
			return ""
		}
		for _, e := range page {
			_, sq, _ := strings.Cut(e.ID, "-")
			seq, err := strconv.Atoi(sq)
			if err != nil {
				return ""
			}
			if seq > expect {
				gaps = append(gaps, fmt.Sprintf("%d-%d", expect, seq-1))
			}
			expect = seq + 1
		}
		if len(page) < 10000 {
			break
		}
		start = "(" + page[len(page)-1].ID
	}
	if expect < d.n && len(gaps) < 5 {
		gaps = append(gaps, fmt.Sprintf("%d-%d", expect, d.n-1))
	}
	if len(gaps) == 0 {
		return ""
	}
	return ": missing seq " + strings.Join(gaps, ", ")
}

func (d *r2k) cleanup(ctx context.Context) {
	d.rc.Do(ctx, d.rc.B().Del().Key(d.stream).Build())
	d.e.adm.DeleteTopics(ctx, d.topic)
}

// seqOf reads the "seq" member that opens the suite's JSON values.
func seqOf(v []byte) (int, bool) {
	const prefix = `{"seq":"`
	s := string(v)
	if !strings.HasPrefix(s, prefix) {
		return 0, false
	}
	s = s[len(prefix):]
	end := strings.IndexByte(s, '"')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(s[:end])
	return n, err == nil
}

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func createTopic(ctx context.Context, adm *kadm.Client, topic string, parts int32) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, parts, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// topicEnd is the sum of the topic's end offsets, -1 when Kafka does not
// answer. For a topic redis-to-kafka writes, that counts its transaction
// markers too: a measure of progress, not of records.
func topicEnd(ctx context.Context, adm *kadm.Client, topic string) int64 {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			n = -1 << 62
		}
		n += o.Offset
	})
	return max(n, -1)
}

// readTopic hands every committed record of the topic, partition by
// partition in offset order, to fn, with a plain consumer that shares
// nothing with xmirror: read_committed to the end offsets, as
// xmirror's redis-to-kafka writes in transactions (whose markers take
// offsets but are no records).
func readTopic(ctx context.Context, e *env, topic string, fn func(*kgo.Record)) error {
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	from := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			from[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(want) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("reading topic %s: %w with %d partitions unfinished", topic, ctx.Err(), len(want))
		}
		for _, fe := range f.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) {
				return fmt.Errorf("reading topic %s partition %d: %w", topic, fe.Partition, fe.Err)
			}
		}
		f.EachRecord(func(rec *kgo.Record) {
			end, ok := want[rec.Partition]
			if !ok {
				return
			}
			if !rec.Attrs.IsControl() {
				fn(rec)
			}
			if rec.Offset+1 >= end {
				delete(want, rec.Partition)
			}
		})
	}
	return nil
}

// deleteKeys removes the keys matching pattern: the mirror's checkpoint
// and lease (their names are xmirror's business; the suite only knows they
// carry the mirror's name).
func deleteKeys(ctx context.Context, rc rueidis.Client, pattern string) {
	cursor := uint64(0)
	for {
		e, err := rc.Do(ctx, rc.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
		if err != nil {
			return
		}
		for _, k := range e.Elements {
			rc.Do(ctx, rc.B().Del().Key(k).Build())
		}
		if e.Cursor == 0 {
			return
		}
		cursor = e.Cursor
	}
}
