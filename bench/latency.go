package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
)

// latencySize is the payload of latency entries: small, so the figure is
// xmirror's delay, not transfer time.
const latencySize = 100

// latencyResult is one follow-mode latency run.
type latencyResult struct {
	Direction string  `json:"direction"`
	Rate      int     `json:"rate"`
	Seconds   float64 `json:"seconds"`
	Sent      int64   `json:"sent"`
	Received  int64   `json:"received"`
	Achieved  float64 `json:"achieved_rate"`
	// Burst marks a run whose entries were all sent at once.
	Burst      bool    `json:"burst,omitempty"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	P999ms     float64 `json:"p999_ms"`
	MaxMs      float64 `json:"max_ms"`
	PeakRSSKiB int64   `json:"peak_rss_kib"`
}

// samples collects latencies from one receiving goroutine.
type samples struct {
	mu       sync.Mutex
	lat      []time.Duration
	received atomic.Int64
	ready    atomic.Bool // the primer (ts 0) arrived: the mirror runs
	bad      atomic.Int64
}

func (s *samples) add(sendNanos int64, now time.Time) {
	if sendNanos == 0 {
		s.ready.Store(true)
		return
	}
	s.mu.Lock()
	s.lat = append(s.lat, now.Sub(time.Unix(0, sendNanos)))
	s.mu.Unlock()
	s.received.Add(1)
}

// latencyFloor is the direction name of Kafka alone.
const latencyFloor = "raw kafka (produce -> consume)"

// latencyWarmup bounds the unreported warm-up round of the latency runs:
// enough for the JIT of the broker and the connections to settle.
const latencyWarmup = 5 * time.Second

// latencyRounds runs the follow-mode latency figures: cfg.runs rounds (after
// a short warm-up round, if cfg.warmup), each round Kafka alone, then each
// direction in turn. Interleaving them spreads the machine's slow moments
// over every direction alike; each direction reports its median run by p99.
func latencyRounds(ctx context.Context, cfg *config, e *env, res *results) error {
	type direction struct {
		name string
		run  func(context.Context, *config, *env) (latencyResult, error)
	}
	// The floor: Kafka alone, produce to consume, on this machine now.
	dirs := []direction{{"raw kafka", latencyRawKafka}}
	if cfg.cases["r2k"] || !cfg.cases["k2r"] {
		dirs = append(dirs, direction{"redis-to-kafka", latencyR2K})
	}
	if cfg.k2rAvailable && (cfg.cases["k2r"] || !cfg.cases["r2k"]) {
		dirs = append(dirs, direction{"kafka-to-redis", latencyK2R})
	}
	// Each direction under a burst too: cfg.burst entries sent at once
	// into the following mirror (the floor as well, for reference).
	if cfg.burst > 0 {
		for _, d := range slices.Clone(dirs) {
			dirs = append(dirs, direction{burstName(d.name, cfg.burst), func(ctx context.Context, cfg *config, e *env) (latencyResult, error) {
				c := *cfg
				// All of it due in the first millisecond of pace.
				c.latRate, c.latDuration = cfg.burst*1000, time.Millisecond
				l, err := d.run(ctx, &c, e)
				l.Direction, l.Rate, l.Burst = burstName(l.Direction, cfg.burst), 0, true
				return l, err
			}})
		}
	}
	rounds := cfg.runs
	if cfg.warmup {
		rounds++
	}
	for i := 0; i < rounds; i++ {
		warm := cfg.warmup && i == 0
		rc := cfg
		label := fmt.Sprintf("round %d/%d", i+1-btoi(cfg.warmup), cfg.runs)
		if warm {
			c := *cfg
			c.latDuration = min(cfg.latDuration, latencyWarmup)
			rc, label = &c, "warm-up"
		}
		for _, d := range dirs {
			progress("latency %s, %s: %d entries/s for %s", d.name, label, rc.latRate, rc.latDuration)
			l, err := d.run(ctx, rc, e)
			if err != nil {
				return fmt.Errorf("latency %s, %s: %w", d.name, label, err)
			}
			res.addLatency(l, warm)
		}
	}
	return nil
}

func burstName(direction string, n int) string {
	return fmt.Sprintf("%s, burst of %d", direction, n)
}

// latencyR2K: XADD with the send time in a field, xmirror r2k --follow,
// a franz-go consumer takes arrival - send.
func latencyR2K(ctx context.Context, cfg *config, e *env) (latencyResult, error) {
	res := latencyResult{Direction: "redis-to-kafka", Rate: cfg.latRate}
	stream, topic, name := e.newStream("lat"), e.newTopic("lat"), e.newName("lat")
	defer func() {
		e.dropTopic(ctx, topic)
		e.dropStream(ctx, stream)
		e.dropKeys(ctx, name)
	}()
	if err := e.createTopic(ctx, topic); err != nil {
		return res, err
	}
	c := e.redis
	v := payload(latencySize)
	xadd := func(ts int64) rueidis.Completed {
		return c.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("ts", strconv.FormatInt(ts, 10)).FieldValue("v", v).Build()
	}
	// The primer makes the stream exist and tells when xmirror is running.
	if err := c.Do(ctx, xadd(0)).Error(); err != nil {
		return res, fmt.Errorf("XADD to %q: %w", stream, err)
	}

	// read_committed, as the README says a consumer of the topic must
	// read: a record counts once its transaction committed.
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return res, err
	}
	defer cl.Close()
	var s samples
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				ts, ok := jsonTS(r.Value)
				if !ok {
					s.bad.Add(1)
					return
				}
				s.add(ts, now)
			})
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	f, err := startFollow(cfg, []string{"redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name})
	if err != nil {
		return res, err
	}
	defer func() {
		if f != nil {
			f.stop()
		}
	}()
	if err := waitFor(ctx, 60*time.Second, "the primer entry to reach Kafka", &s.ready, f); err != nil {
		return res, err
	}

	sent, elapsed, err := pace(ctx, cfg.latRate, cfg.latDuration, func(k int) error {
		cmds := make(rueidis.Commands, k)
		for i := range cmds {
			cmds[i] = xadd(time.Now().UnixNano())
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return fmt.Errorf("XADD to %q: %w", stream, err)
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	waitCount(ctx, 15*time.Second, &s.received, sent)
	cancel()
	wg.Wait()
	p, err := f.stop()
	f = nil
	if err != nil {
		return res, err
	}
	res.PeakRSSKiB = p.rssKiB
	if n := s.bad.Load(); n > 0 {
		return res, fmt.Errorf("%d records in %q without a ts field", n, topic)
	}
	return finishLatency(res, &s, sent, elapsed), nil
}

// latencyK2R: a franz-go producer (acks=all, no linger) with the send
// time in the value, xmirror k2r --follow, XREAD BLOCK on the destination
// stream takes arrival - send.
func latencyK2R(ctx context.Context, cfg *config, e *env) (latencyResult, error) {
	res := latencyResult{Direction: "kafka-to-redis", Rate: cfg.latRate}
	topic, stream, name := e.newTopic("latk"), e.newStream("latk"), e.newName("latk")
	defer func() {
		e.dropTopic(ctx, topic)
		e.dropStream(ctx, stream)
		e.dropKeys(ctx, name)
	}()
	if err := e.createTopic(ctx, topic); err != nil {
		return res, err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
	if err != nil {
		return res, err
	}
	defer prod.Close()
	v := payload(latencySize)
	value := func(ts int64) []byte {
		return []byte(`{"ts":"` + strconv.FormatInt(ts, 10) + `","v":"` + v + `"}`)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Value: value(0)}).FirstErr(); err != nil {
		return res, fmt.Errorf("produce to %q: %w", topic, err)
	}

	var s samples
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var readErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := e.redis
		last := "0"
		for cctx.Err() == nil {
			// A blocking command: rueidis runs it on a dedicated connection.
			xr, err := c.Do(cctx, c.B().Xread().Count(1000).Block(200).Streams().Key(stream).Id(last).Build()).AsXRead()
			now := time.Now()
			if rueidis.IsRedisNil(err) {
				continue
			}
			if err != nil {
				if cctx.Err() == nil {
					readErr = fmt.Errorf("XREAD %q: %w", stream, err)
				}
				return
			}
			for _, en := range xr[stream] {
				last = en.ID
				ts, err := strconv.ParseInt(en.FieldValues["ts"], 10, 64)
				if err != nil {
					s.bad.Add(1)
					continue
				}
				s.add(ts, now)
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	f, err := startFollow(cfg, []string{"kafka-to-redis", "--topic", topic, "--stream", stream, "--name", name})
	if err != nil {
		return res, err
	}
	defer func() {
		if f != nil {
			f.stop()
		}
	}()
	if err := waitFor(ctx, 60*time.Second, "the primer record to reach Redis", &s.ready, f); err != nil {
		return res, err
	}

	sent, elapsed, err := produceAtRate(ctx, cfg, prod, topic, value)
	if err != nil {
		return res, err
	}
	waitCount(ctx, 15*time.Second, &s.received, sent)
	cancel()
	wg.Wait()
	p, err := f.stop()
	f = nil
	if err != nil {
		return res, err
	}
	res.PeakRSSKiB = p.rssKiB
	if readErr != nil {
		return res, readErr
	}
	if n := s.bad.Load(); n > 0 {
		return res, fmt.Errorf("%d entries in %q without a ts field", n, stream)
	}
	return finishLatency(res, &s, sent, elapsed), nil
}

// pace calls send(k) every millisecond with k = the entries due by then,
// for d at rate per second. It returns how many were sent and over what
// time.
func pace(ctx context.Context, rate int, d time.Duration, send func(k int) error) (int64, time.Duration, error) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	var sent int64
	total := int64(float64(rate) * d.Seconds())
	for sent < total {
		select {
		case <-ctx.Done():
			return sent, time.Since(start), ctx.Err()
		case <-tick.C:
		}
		due := min(int64(time.Since(start).Seconds()*float64(rate)), total) - sent
		if due <= 0 {
			continue
		}
		if err := send(int(due)); err != nil {
			return sent, time.Since(start), err
		}
		sent += due
	}
	return sent, time.Since(start), nil
}

// waitFor polls until flag is set, failing if the follower exits first.
func waitFor(ctx context.Context, d time.Duration, what string, flag *atomic.Bool, f *follower) error {
	deadline := time.Now().Add(d)
	for !flag.Load() {
		if err := f.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// waitCount polls until n reaches want or d passes.
func waitCount(ctx context.Context, d time.Duration, n *atomic.Int64, want int64) {
	deadline := time.Now().Add(d)
	for n.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

func finishLatency(res latencyResult, s *samples, sent int64, elapsed time.Duration) latencyResult {
	res.Sent, res.Received = sent, s.received.Load()
	res.Seconds = elapsed.Seconds()
	if res.Seconds > 0 {
		res.Achieved = float64(sent) / res.Seconds
	}
	lat := s.lat
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := int(p * float64(len(lat)-1))
		return float64(lat[i]) / float64(time.Millisecond)
	}
	res.P50ms, res.P99ms, res.P999ms, res.MaxMs = q(0.50), q(0.99), q(0.999), q(1)
	return res
}

// jsonTS finds "ts":"<nanos>" in a record value written by xmirror's json
// format.
func jsonTS(v []byte) (int64, bool) {
	const key = `"ts":"`
	i := bytes.Index(v, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := v[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return n, err == nil
}

// latencyRawKafka is the floor under both directions' latency: a plain
// franz-go producer (acks=all, no linger) straight to a plain consumer, no
// xmirror and no Redis, at the same rate on the same machine.
func latencyRawKafka(ctx context.Context, cfg *config, e *env) (latencyResult, error) {
	res := latencyResult{Direction: latencyFloor, Rate: cfg.latRate}
	topic := e.newTopic("latraw")
	defer e.dropTopic(ctx, topic)
	if err := e.createTopic(ctx, topic); err != nil {
		return res, err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
	if err != nil {
		return res, err
	}
	defer prod.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return res, err
	}
	defer cl.Close()
	v := payload(latencySize)
	value := func(ts int64) []byte {
		return []byte(`{"ts":"` + strconv.FormatInt(ts, 10) + `","v":"` + v + `"}`)
	}
	var s samples
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				if ts, ok := jsonTS(r.Value); ok {
					s.add(ts, now)
				} else {
					s.bad.Add(1)
				}
			})
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	if err := prod.ProduceSync(ctx, &kgo.Record{Value: value(0)}).FirstErr(); err != nil {
		return res, fmt.Errorf("produce to %q: %w", topic, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !s.ready.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	sent, elapsed, err := produceAtRate(ctx, cfg, prod, topic, value)
	if err != nil {
		return res, err
	}
	waitCount(ctx, 15*time.Second, &s.received, sent)
	cancel()
	wg.Wait()
	if s.received.Load() != sent {
		return res, fmt.Errorf("raw kafka latency: %d of %d records arrived", s.received.Load(), sent)
	}
	return finishLatency(res, &s, sent, elapsed), nil
}

// produceAtRate produces records stamped with their send time at the
// latency rate, waits until all are acknowledged, and fails on the first
// record Kafka refused.
func produceAtRate(ctx context.Context, cfg *config, prod *kgo.Client, topic string, value func(ts int64) []byte) (int64, time.Duration, error) {
	var (
		once  sync.Once
		first error
	)
	cb := func(_ *kgo.Record, err error) {
		if err != nil {
			once.Do(func() { first = err })
		}
	}
	sent, elapsed, err := pace(ctx, cfg.latRate, cfg.latDuration, func(k int) error {
		for i := 0; i < k; i++ {
			prod.Produce(ctx, &kgo.Record{Value: value(time.Now().UnixNano())}, cb)
		}
		return nil
	})
	if err != nil {
		return sent, elapsed, err
	}
	if err := prod.Flush(ctx); err != nil {
		return sent, elapsed, err
	}
	if first != nil {
		return sent, elapsed, fmt.Errorf("produce to %q: %w", topic, first)
	}
	return sent, elapsed, nil
}
