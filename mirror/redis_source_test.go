package mirror

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/redis/rueidis"

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
