package k2r

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
)

// deadKafkaSource is a source whose broker never answers (nothing listens
// on port 1): kgo retries quietly and delivers nothing, as with a broker
// that stalled. Its partition orders/2 is at offset 120 of a snapshot
// ending at 500.
func deadKafkaSource(t *testing.T, follow bool, log *slog.Logger) *KafkaSource {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.DialTimeout(100*time.Millisecond),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {2: kgo.NewOffset().At(120)}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	st := &partState{tp: checkpoint.TopicPartition{Topic: "orders", Partition: 2}, next: 120, stored: 120, target: 500}
	return &KafkaSource{
		cl: cl, admin: cl, kafkaName: "127.0.0.1:1", follow: follow, batchSize: 100, log: log,
		parts:     map[string]map[int32]*partState{"orders": {2: st}},
		streams:   []string{"orders"},
		remaining: 1,
		retryFor:  2 * time.Second,
		pollWait:  50 * time.Millisecond, probeAfter: 100 * time.Millisecond, probeWait: 200 * time.Millisecond,
		stallWarn: 300 * time.Millisecond, partitionCheck: time.Hour,
		lastPartitionCheck: time.Now(),
	}
}

func TestKafkaSourceOneShotFailsWhenNoPartitionProgressesForRetryFor(t *testing.T) {
	src := deadKafkaSource(t, false, nil)
	src.log = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := src.Next(ctx)
	took := time.Since(begin)
	want := "kafka 127.0.0.1:1: no progress for 2s on orders/2 (at offset 120, mirroring up to 500); is the broker reachable?"
	if err == nil || err.Error() != want {
		t.Fatalf("after %s: %v\nwant: %s", took, err, want)
	}
	if took > 5*time.Second {
		t.Fatalf("took %s for a 2s limit", took)
	}
}

// syncBuffer is a log destination safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestKafkaSourceFollowRidesOutAStallAndWarns(t *testing.T) {
	var logs syncBuffer
	src := deadKafkaSource(t, true, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := src.Next(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("follow Next ended with %v, want it to wait for the caller's context", err)
	}
	if n := strings.Count(logs.String(), "no progress"); n < 2 {
		t.Fatalf("%d stall warnings in 3s, want one about every 300ms:\n%s", n, logs.String())
	}
}
