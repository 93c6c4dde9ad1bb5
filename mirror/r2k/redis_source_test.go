package r2k

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

func TestReadCount(t *testing.T) {
	tests := []struct {
		name                  string
		batchSize, batchBytes int
		avg                   int
		want                  int
	}{
		{"small entries: the entry bound holds", 2000, 1 << 20, 100, 2000},
		{"1 KiB entries: about 1 MiB of them", 2000, 1 << 20, 1025, 1048576 / (1025 + entryOverhead)},
		{"an entry larger than the bound: one at a time", 2000, 1 << 20, 4 << 20, 1},
		{"empty fields still cost their overhead", 100000, 1 << 20, 0, 1048576 / entryOverhead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readCount(tt.batchSize, tt.batchBytes, tt.avg); got != tt.want {
				t.Errorf("readCount(%d, %d, %d) = %d, want %d", tt.batchSize, tt.batchBytes, tt.avg, got, tt.want)
			}
		})
	}
}

// Streams of large entries are read in batches of about BatchBytes per
// stream, not of BatchSize entries; the stream of the largest entries sets
// the count for all; every entry still comes once, in order.
func TestLastOfEachStream(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    []string // stream/ID of each last entry
	}{
		{"empty batch", nil, nil},
		{"one entry", []Entry{{Stream: "a", ID: "1-0"}}, []string{"a/1-0"}},
		{"one stream", []Entry{{Stream: "a", ID: "1-0"}, {Stream: "a", ID: "1-1"}, {Stream: "a", ID: "2-0"}}, []string{"a/2-0"}},
		{"streams one after the other", []Entry{{Stream: "a", ID: "1-0"}, {Stream: "a", ID: "3-0"}, {Stream: "b", ID: "2-0"}, {Stream: "c", ID: "5-0"}, {Stream: "c", ID: "6-0"}}, []string{"a/3-0", "b/2-0", "c/6-0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range (&EntryBatch{Entries: tt.entries}).lastOfEachStream() {
				got = append(got, e.Stream+"/"+e.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("lastOfEachStream() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRedisSourceBoundsABatchByItsBytes(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	const entries, batchBytes = 300, 20_000
	tests := []struct {
		name  string
		sizes []int // value size of each stream's entries
	}{
		{"one stream of 2000 B entries", []int{2000}},
		{"a stream of 100 B entries and one of 2000 B", []int{100, 2000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var streams []string
			want := map[string][]string{}
			for _, size := range tt.sizes {
				stream := testenv.Stream(t, c)
				streams = append(streams, stream)
				value := strings.Repeat("v", size)
				var cmds rueidis.Commands
				for range entries {
					cmds = append(cmds, c.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("value", value).Build())
				}
				for _, r := range c.DoMulti(ctx, cmds...) {
					id, err := r.ToString()
					if err != nil {
						t.Fatalf("XADD: %v", err)
					}
					want[stream] = append(want[stream], id)
				}
			}
			src, err := NewRedisSource(ctx, RedisSourceConfig{
				Client: c, Streams: streams, Group: "g", Consumer: "c", Start: "0",
				BatchSize: entries, BatchBytes: batchBytes,
			})
			if err != nil {
				t.Fatal(err)
			}
			perBatch := readCount(entries, batchBytes, len("value")+slices.Max(tt.sizes))
			got := map[string][]string{}
			full := 0 // batches after the first with a stream's full count
			for i := 0; ; i++ {
				b, err := src.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				// The first read knows nothing of the entries' size yet.
				limit := perBatch
				if i == 0 {
					limit = firstReadCount
				}
				per := map[string]int{}
				for _, e := range b.Entries {
					got[e.Stream] = append(got[e.Stream], e.ID)
					per[e.Stream]++
				}
				for stream, n := range per {
					if n > limit {
						t.Errorf("batch %d holds %d entries of stream %s, want at most %d", i, n, stream, limit)
					}
					if i > 0 && n == perBatch {
						full++
					}
				}
			}
			if full == 0 {
				t.Errorf("no batch after the first held %d entries of a stream: the count does not follow the bound", perBatch)
			}
			for _, stream := range streams {
				if !slices.Equal(got[stream], want[stream]) {
					t.Errorf("stream %s: read %d entries, want each of the %d once and in order", stream, len(got[stream]), len(want[stream]))
				}
			}
		})
	}
}

// The commit of several batches acknowledges every entry of every stream
// and checkpoints each stream's last entry and each partition's next
// offset, whether the batches are committed together or one by one.
func TestRedisSourceCommitsEveryStreamAndPartitionOfItsBatches(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	const perStream = 7
	for _, together := range []bool{true, false} {
		name := "one by one"
		if together {
			name = "together"
		}
		t.Run(name, func(t *testing.T) {
			// Stream a's records all go to partition 0; stream b's
			// alternate between partitions 1 and 2, as keyed records do.
			streams := []string{testenv.Stream(t, c), testenv.Stream(t, c)}
			partitionOf := func(stream, n int) int32 {
				if stream == 0 {
					return 0
				}
				return int32(1 + n%2)
			}
			var last []string
			for _, stream := range streams {
				var cmds rueidis.Commands
				for range perStream {
					cmds = append(cmds, c.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("v", "x").Build())
				}
				var id string
				for _, r := range c.DoMulti(ctx, cmds...) {
					var err error
					if id, err = r.ToString(); err != nil {
						t.Fatalf("XADD: %v", err)
					}
				}
				last = append(last, id)
			}
			mirror := testenv.Name(t, "m")
			t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(checkpoint.R2KKey(mirror)).Build()) })
			src, err := NewRedisSource(ctx, RedisSourceConfig{
				Client: c, Streams: streams, Group: "g", Consumer: "c", Start: "0",
				BatchSize: 3, Mirror: mirror,
			})
			if err != nil {
				t.Fatal(err)
			}
			// Confirm every batch as the sink would: a record per entry,
			// with the partition and offset Kafka gave it.
			var batches []*EntryBatch
			nth := map[string]int{}   // entries of each stream so far
			next := map[int32]int64{} // next offset of each partition
			for {
				b, err := src.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b.records = make([]kgo.Record, len(b.Entries))
				for i, e := range b.Entries {
					p := partitionOf(slices.Index(streams, e.Stream), nth[e.Stream])
					nth[e.Stream]++
					b.records[i] = kgo.Record{Topic: "t", Partition: p, Offset: next[p]}
					next[p]++
				}
				batches = append(batches, b)
			}
			if len(batches) < 3 {
				t.Fatalf("read %d batches, want several of each stream", len(batches))
			}
			if together {
				err = src.CommitMany(ctx, batches)
			} else {
				for _, b := range batches {
					if err = src.Commit(ctx, b); err != nil {
						break
					}
				}
			}
			if err != nil {
				t.Fatal(err)
			}

			for _, stream := range streams {
				if n, err := c.Do(ctx, c.B().Xpending().Key(stream).Group("g").Build()).ToArray(); err != nil {
					t.Fatalf("XPENDING %s: %v", stream, err)
				} else if pending, _ := n[0].AsInt64(); pending != 0 {
					t.Errorf("stream %s: %d entries still pending after the commit, want 0", stream, pending)
				}
			}
			ck, found, err := checkpoint.LoadR2K(ctx, c, mirror)
			if err != nil || !found {
				t.Fatalf("checkpoint of %s: found %v, %v", mirror, found, err)
			}
			for i, stream := range streams {
				if got := ck.Streams[stream]; got != last[i] {
					t.Errorf("checkpoint of stream %s at %s, want its last entry %s", stream, got, last[i])
				}
			}
			want := map[checkpoint.TopicPartition]int64{}
			for p, n := range next {
				want[checkpoint.TopicPartition{Topic: "t", Partition: p}] = n
			}
			if !maps.Equal(ck.Partitions, want) {
				t.Errorf("checkpointed partitions %v, want %v", ck.Partitions, want)
			}
			if ck.Entries != 2*perStream {
				t.Errorf("checkpoint counts %d entries, want %d", ck.Entries, 2*perStream)
			}
		})
	}
}
