package cmd_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// stopBound is the README's bound on a stop: the 4 s the batches in flight
// get to be confirmed and checkpointed, and 2 s to release the lease and
// close the connections, whatever the servers do.
const stopBound = 6 * time.Second

// redisPause is how long the tests pause the shared Redis: longer than
// stopBound after the signal, so a stop that waits for Redis shows, and
// short, because the pause stalls every client of that Redis.
const redisPause = 8500 * time.Millisecond

// pauseRedis pauses every client of the test Redis for d (CLIENT PAUSE ALL)
// and returns a function that waits until it answers again.
func pauseRedis(t *testing.T, d time.Duration) (resumed func()) {
	t.Helper()
	c := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, c.B().ClientPause().Timeout(d.Milliseconds()).All().Build()).Error(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	until := time.Now().Add(d)
	return func() {
		t.Helper()
		testenv.Wait(t, time.Until(until)+15*time.Second, "Redis to answer again after CLIENT PAUSE", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return c.Do(ctx, c.B().Ping().Build()).Error() == nil
		})
	}
}

// feeder adds load while a mirror runs, about rate entries a second, until
// stopped.
type feeder struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func startFeeder(rate int, add func(from, n int) error) *feeder {
	f := &feeder{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i += rate / 100 {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			if err := add(i, rate/100); err != nil {
				f.mu.Lock()
				f.err = err
				f.mu.Unlock()
				return
			}
		}
	}()
	return f
}

// halt stops the feeder and fails the test if it could not write.
func (f *feeder) halt(t *testing.T) {
	t.Helper()
	close(f.stop)
	select {
	case <-f.done:
	case <-time.After(time.Minute):
		t.Fatal("the feeder did not stop within a minute")
	}
	if f.err != nil {
		t.Fatalf("feeding the source: %v", f.err)
	}
}

// sigtermInPause sends SIGTERM to a running mirror a second into a pause of
// Redis and fails unless it exits 0 within stopBound; it returns once Redis
// answers again.
func sigtermInPause(t *testing.T, m *started) {
	t.Helper()
	resumed := pauseRedis(t, redisPause)
	// The scenario of the issue: SIGTERM 1 s into the pause, with batches
	// in flight. (A moment of the scenario, not a wait for a condition.)
	time.Sleep(time.Second)
	code, took := m.stop(t, syscall.SIGTERM, redisPause+10*time.Second)
	resumed()
	t.Logf("exit %d %s after SIGTERM, Redis paused; stderr:\n%s", code, took.Round(time.Millisecond), m.stderr)
	if code != 0 {
		t.Fatalf("SIGTERM with Redis paused: exit %d, want 0", code)
	}
	if took > stopBound {
		t.Fatalf("SIGTERM with Redis paused: exit after %s, want at most %s", took.Round(time.Millisecond), stopBound)
	}
}

// sigtermInStall sends SIGTERM to a running mirror whose every Kafka
// connection goes through proxy a second after it froze, and fails unless
// it exits 0 within stopBound; it thaws the proxy afterwards.
func sigtermInStall(t *testing.T, m *started, proxy *kafkaProxy) {
	t.Helper()
	proxy.freeze()
	defer proxy.thaw()
	// A moment of the scenario, not a wait for a condition.
	time.Sleep(time.Second)
	code, took := m.stop(t, syscall.SIGTERM, stopBound+10*time.Second)
	t.Logf("exit %d %s after SIGTERM, broker stalled; stderr:\n%s", code, took.Round(time.Millisecond), m.stderr)
	if code != 0 {
		t.Fatalf("SIGTERM with the broker stalled: exit %d, want 0", code)
	}
	if took > stopBound {
		t.Fatalf("SIGTERM with the broker stalled: exit after %s, want at most %s", took.Round(time.Millisecond), stopBound)
	}
}

func TestBothDirectionsStopWithinTheBoundWhileTheBrokerStalls(t *testing.T) {
	for _, direction := range []string{"redis-to-kafka", "kafka-to-redis"} {
		t.Run(direction, func(t *testing.T) {
			proxy := startKafkaProxy(t)
			stopUnderLoad(t, direction, []string{"--brokers", proxy.addr()}, func(m *started) { sigtermInStall(t, m, proxy) })
		})
	}
}

func TestBothDirectionsStopWithinTheBoundWhileRedisIsPaused(t *testing.T) {
	for _, direction := range []string{"redis-to-kafka", "kafka-to-redis"} {
		t.Run(direction, func(t *testing.T) {
			stopUnderLoad(t, direction, nil, func(m *started) { sigtermInPause(t, m) })
		})
	}
}

// stopUnderLoad runs a follow mirror of direction (with extra flags) over a
// backlog of 20,000 entries, feeds its source 2,000 entries a second, stops
// it with stop once it mirrors, then, once its lease is gone, reruns it
// one-shot and checks that every entry arrived exactly once.
func stopUnderLoad(t *testing.T, direction string, extra []string, stop func(*started)) {
	t.Helper()
	const preload = 20_000
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	name := testenv.Name(t, "m")
	var (
		args      []string
		progress  func() int64
		startFeed func() *feeder
		verify    func()
	)
	switch direction {
	case "redis-to-kafka":
		adm := kadm.NewClient(kc)
		topic := testenv.Topic(t, kc, 1)
		delKeys(t, rc, checkpoint.R2KKey(name))
		addEntries(t, rc, stream, 0, preload, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
		args = []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--lease-ttl", "3s"}
		progress = func() int64 { return endOffset(t, adm, topic) }
		startFeed = func() *feeder { return feedStream(t, stream, preload) }
		verify = func() {
			var ids []string
			for _, e := range readStream(t, rc, stream) {
				ids = append(ids, e.ID)
			}
			exactlyOnce(t, topic, ids)
		}
	case "kafka-to-redis":
		const partitions = 3
		topic := testenv.Topic(t, kc, partitions)
		delKeys(t, rc, checkpoint.K2RKey(name, stream))
		produce(t, topic, numbered(0, preload, partitions))
		args = []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--lease-ttl", "3s"}
		progress = func() int64 {
			v, _ := rc.Do(context.Background(), rc.B().Xlen().Key(stream).Build()).AsInt64()
			return v
		}
		var written func() int
		startFeed = func() *feeder {
			var f *feeder
			f, written = feedTopic(t, topic, preload, partitions)
			return f
		}
		verify = func() { checkOnceInOrder(t, readStream(t, rc, stream), preload+written()) }
	}

	m := startXmirror(t, append(append(args, "--follow"), extra...)...)
	testenv.Wait(t, time.Minute, "mirroring to start", func() bool { return progress() >= 5_000 })
	feed := startFeed()
	testenv.Wait(t, time.Minute, "the feeder to add to the source", func() bool { return progress() >= preload+1_000 })
	stop(m)
	feed.halt(t)

	// A rerun once the lease is gone (released, or expired if Redis could
	// not take the release) mirrors the rest: nothing lost, nothing twice.
	waitLeaseExpired(t, rc, direction, name)
	mustMirror(t, args...)
	verify()
}

// feedStream adds entries {value: <i>} from i = from on, 2,000 a second,
// with a client of its own (whose XADDs wait out a pause).
func feedStream(t *testing.T, stream string, from int) *feeder {
	fc := testenv.Redis(t)
	return startFeeder(2000, func(i, n int) error {
		cmds := make(rueidis.Commands, 0, n)
		for j := from + i; j < from+i+n; j++ {
			cmds = append(cmds, fc.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("value", strconv.Itoa(j)).Build())
		}
		for _, r := range fc.DoMulti(context.Background(), cmds...) {
			if err := r.Error(); err != nil {
				return fmt.Errorf("XADD %s: %w", stream, err)
			}
		}
		return nil
	})
}

// feedTopic produces numbered records from id from on, 2,000 a second,
// straight to the broker; written says how many it produced.
func feedTopic(t *testing.T, topic string, from int, partitions int32) (*feeder, func() int) {
	pc := testenv.Kafka(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var (
		mu      sync.Mutex
		written int
	)
	feed := startFeeder(2000, func(i, n int) error {
		recs := numbered(from+i, n, partitions)
		for _, r := range recs {
			r.Topic = topic
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pc.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("produce to %s: %w", topic, err)
		}
		mu.Lock()
		written = i + n
		mu.Unlock()
		return nil
	})
	return feed, func() int {
		mu.Lock()
		defer mu.Unlock()
		return written
	}
}
