package mirror

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/internal/testenv"
)

func TestReadCount(t *testing.T) {
	tests := []struct {
		name                  string
		batchSize, batchBytes int
		size, n               int
		want                  int
	}{
		{"small entries: the entry bound holds", 2000, 1 << 20, 2000 * 100, 2000, 2000},
		{"1 KiB entries: about 1 MiB of them", 2000, 1 << 20, 1000 * 1025, 1000, 1048576 / (1025 + entryOverhead)},
		{"an entry larger than the bound: one at a time", 2000, 1 << 20, 4 << 20, 1, 1},
		{"empty fields still cost their overhead", 100000, 1 << 20, 0, 10, 1048576 / entryOverhead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readCount(tt.batchSize, tt.batchBytes, tt.size, tt.n); got != tt.want {
				t.Errorf("readCount(%d, %d, %d, %d) = %d, want %d", tt.batchSize, tt.batchBytes, tt.size, tt.n, got, tt.want)
			}
		})
	}
}

// A stream of large entries is read in batches of about --batch-bytes, not
// of --batch-size entries, and every entry still comes once, in order.
func TestRedisSourceBoundsABatchByItsBytes(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, c)
	const entries, valueSize, batchBytes = 300, 2000, 20_000
	value := strings.Repeat("v", valueSize)
	var cmds rueidis.Commands
	for range entries {
		cmds = append(cmds, c.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("value", value).Build())
	}
	var want []string
	for _, r := range c.DoMulti(ctx, cmds...) {
		id, err := r.ToString()
		if err != nil {
			t.Fatalf("XADD: %v", err)
		}
		want = append(want, id)
	}
	src, err := NewRedisSource(ctx, RedisSourceConfig{
		Client: c, Streams: []string{stream}, Group: "g", Consumer: "c", Start: "0",
		BatchSize: entries, BatchBytes: batchBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	perBatch := batchBytes / (len("value") + valueSize + entryOverhead)
	var got []string
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
		if len(b.Entries) > limit {
			t.Errorf("batch %d holds %d entries of %d B, want at most %d", i, len(b.Entries), valueSize, limit)
		}
		for _, e := range b.Entries {
			got = append(got, e.ID)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("read %d entries, want each of the %d once and in order", len(got), len(want))
	}
}
