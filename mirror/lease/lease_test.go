package lease

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
)

// TestSetUpAgainKeepsTheLease: a follow run whose RunFunc asks to be set
// up again is called again at once under the very lease it held (the
// same value in Redis, never released in between), and the stats of both
// calls add up.
func TestSetUpAgainKeepsTheLease(t *testing.T) {
	rc := testenv.Redis(t)
	redis, err := endpoint.ParseRedisURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	name := testenv.Name(t, "m")
	key := checkpoint.LeaseKey(checkpoint.KindRedisToKafka, name)
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(key).Build()) })
	cfg := mirror.DefaultRunConfig()
	cfg.Name, cfg.Follow = name, true
	var held []string
	calls := 0
	stats, err := Run(context.Background(), &cfg, redis, checkpoint.KindRedisToKafka, nil,
		func(ctx context.Context, c rueidis.Client, _ *Closers, before mirror.Stats) (mirror.Stats, bool, error) {
			calls++
			v, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
			if err != nil {
				return mirror.Stats{}, true, err
			}
			held = append(held, v)
			if calls == 1 {
				return mirror.Stats{Entries: 3}, true, fmt.Errorf("new streams: %w", ErrSetUpAgain)
			}
			if before.Entries != 3 {
				t.Errorf("the second set-up starts from %d entries, want the first one's 3", before.Entries)
			}
			return mirror.Stats{Entries: 4}, true, errors.New("done")
		})
	if err == nil || err.Error() != "done" {
		t.Fatalf("Run = %v, want the second call's error", err)
	}
	if calls != 2 || len(held) != 2 || held[0] != held[1] {
		t.Fatalf("%d calls holding leases %q; want 2 under one lease", calls, held)
	}
	if stats.Entries != 7 {
		t.Errorf("stats count %d entries, want 7", stats.Entries)
	}
}
