package k2r

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
)

func TestRedisSinkConfirmsABatchOnlyOnceWritten(t *testing.T) {
	base := testenv.Redis(t)
	ctx := context.Background()
	tests := []struct {
		name string
		// setup returns the client the sink uses and its dead-letter stream.
		setup     func(t *testing.T) (rueidis.Client, string)
		dead      bool // the second batch dead-letters a record
		wantDone  [2]bool
		wantXLEN  int64
		wantError string
	}{
		{
			name: "a group applied whose reply was lost is retried as a replay",
			setup: func(t *testing.T) (rueidis.Client, string) {
				return &failingCall{Client: base, nth: 1, applied: true}, ""
			},
			wantDone: [2]bool{true, true},
			wantXLEN: 6,
		},
		{
			name: "a dead letter that cannot be written confirms no batch of its group",
			setup: func(t *testing.T) (rueidis.Client, string) {
				dead := testenv.Stream(t, base)
				base.Do(ctx, base.B().Set().Key(dead).Value("not a stream").Build())
				return base, dead
			},
			dead:      true,
			wantDone:  [2]bool{false, false},
			wantXLEN:  0,
			wantError: "WRONGTYPE",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, deadStream := tt.setup(t)
			stream, name := sinkTarget(t, base)
			s := &RedisSink{c: c, opt: stepOptions{Name: name}, deadStream: deadStream, retryFor: 5 * time.Second, log: slog.New(slog.DiscardHandler), redisName: "test"}
			batch := func(from, to int64) *Batch {
				w := &Write{Stream: stream, Moves: []Move{{Partition: checkpoint.TopicPartition{Topic: "t"}, From: from, To: to}}}
				for i := 0; i < 3; i++ {
					w.AddEntry("*")
					w.AddField("f", "v")
				}
				return &Batch{writes: []*Write{w}, entries: 3}
			}
			b := [2]*Batch{batch(checkpoint.NoPosition, 3), batch(3, 6)}
			if tt.dead {
				b[1].dead = []deadLetter{{rec: &kgo.Record{Topic: "t", Offset: 6}, reason: "bad"}}
			}
			var got [2]error
			var group []sinkJob
			for i := range b {
				group = append(group, sinkJob{ctx: ctx, b: b[i], step: s.newStep(b[i].writes, time.Now()), done: func(err error) { got[i] = err }})
			}
			s.apply(group)
			for i := range got {
				if (got[i] == nil) != tt.wantDone[i] {
					t.Errorf("batch %d: done(%v), want confirmed %v", i, got[i], tt.wantDone[i])
				}
				if got[i] != nil && tt.wantError != "" && !strings.Contains(got[i].Error(), tt.wantError) {
					t.Errorf("batch %d: %v, want %q", i, got[i], tt.wantError)
				}
			}
			if n, _ := base.Do(ctx, base.B().Xlen().Key(stream).Build()).AsInt64(); n != tt.wantXLEN {
				t.Errorf("XLEN = %d, want %d", n, tt.wantXLEN)
			}
		})
	}
}

// failingCall fails the nth pipeline of XADDs it is given: after Redis ran it
// (its reply lost) or, a moment later, without sending it. It refuses the
// refuse-th without sending it. It counts those pipelines in flight at
// once.
type failingCall struct {
	rueidis.Client
	nth     int64
	applied bool
	refuse  int64

	calls, inflight, maxInflight atomic.Int64
}

func (f *failingCall) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	if !slices.ContainsFunc(multi, func(c rueidis.Completed) bool { return c.Commands()[0] == "XADD" }) {
		return f.Client.DoMulti(ctx, multi...)
	}
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for m := f.maxInflight.Load(); n > m && !f.maxInflight.CompareAndSwap(m, n); m = f.maxInflight.Load() {
	}
	call := f.calls.Add(1)
	switch {
	case call == f.nth && f.applied:
		f.Client.DoMulti(ctx, multi...)
	case call == f.nth:
		// The calls after it are sent meanwhile, and wait for it.
		time.Sleep(100 * time.Millisecond)
	case call == f.refuse:
	default:
		return f.Client.DoMulti(ctx, multi...)
	}
	res := make([]rueidis.RedisResult, len(multi))
	for i := range res {
		res[i] = rueidis.NewErrorResult(errors.New("read tcp: connection reset by peer"))
	}
	return res
}

func TestRedisSinkKeepsCallsInFlightInOrderThroughAFailure(t *testing.T) {
	base := testenv.Redis(t)
	ctx := context.Background()
	if err := checkOrderAccess(ctx, base, "test"); err != nil {
		t.Fatal(err)
	}
	for _, applied := range []bool{true, false} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			stream, name := sinkTarget(t, base)
			c := &failingCall{Client: base, nth: 3, applied: applied, refuse: 5}
			s := &RedisSink{c: c, opt: stepOptions{Name: name}, retryFor: 5 * time.Second,
				log: slog.New(slog.DiscardHandler), redisName: "test", ordered: true}
			const batches, per = 40, 5
			start := time.Now()
			results := writeNumbered(s, stream, batches, per)
			s.Close(context.Background())
			// The calls waiting for the failed one were let go at once,
			// not when their wait timed out.
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
			if m := c.maxInflight.Load(); m < 2 {
				t.Errorf("at most %d calls were in flight at once, want several", m)
			}
			checkNumbered(t, base, name, stream, results, batches, per)
		})
	}
}

// sinkTarget is a new stream and mirror name, whose checkpoint is deleted
// after the test.
func sinkTarget(t *testing.T, c rueidis.Client) (stream, name string) {
	stream, name = testenv.Stream(t, c), testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(checkpoint.K2RKey(name, stream)).Build()) })
	return stream, name
}

// confirmations records the batches a sink confirmed, in their order,
// and the errors of those that failed: kept, not reported, since the
// sink's goroutines may outlive a failed test.
type confirmations struct {
	mu        sync.Mutex
	confirmed []int
	errs      []error
}

// done is the sink's done for batch i.
func (c *confirmations) done(i int) func(error) {
	return func(err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("batch %d: %w", i, err))
		}
		c.confirmed = append(c.confirmed, i)
	}
}

// check fails t unless every one of batches was confirmed, in order,
// and none failed.
func (c *confirmations) check(t *testing.T, batches int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		t.Error(err)
	}
	for i, b := range c.confirmed {
		if b != i {
			t.Fatalf("confirmed in the order %v", c.confirmed)
		}
	}
	if len(c.confirmed) != batches {
		t.Fatalf("%d batches confirmed, want %d", len(c.confirmed), batches)
	}
}

// writeNumbered writes batches of per entries numbered from 0 in field n,
// each batch moving partition t from where the one before left it.
func writeNumbered(s *RedisSink, stream string, batches, per int) *confirmations {
	c := &confirmations{}
	tp := checkpoint.TopicPartition{Topic: "t"}
	for i := 0; i < batches; i++ {
		from := int64(i * per)
		if i == 0 {
			from = checkpoint.NoPosition
		}
		w := &Write{Stream: stream, Moves: []Move{{Partition: tp, From: from, To: int64((i + 1) * per)}}}
		for e := 0; e < per; e++ {
			w.AddEntry("*")
			w.AddField("n", strconv.Itoa(i*per+e))
		}
		s.Write(context.Background(), &Batch{writes: []*Write{w}, entries: per}, c.done(i))
	}
	return c
}

// checkNumbered checks what writeNumbered wrote, once the sink is closed:
// no batch failed, every batch confirmed in order, every entry in the
// stream once and in order, and the checkpoint at the end.
func checkNumbered(t *testing.T, c rueidis.Client, name, stream string, confirmed *confirmations, batches, per int) {
	t.Helper()
	ctx := context.Background()
	confirmed.check(t, batches)
	entries, err := c.Do(ctx, c.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		if e.FieldValues["n"] != strconv.Itoa(i) {
			t.Fatalf("entry %d holds n=%s: %d entries, each once and in order expected", i, e.FieldValues["n"], batches*per)
		}
	}
	if len(entries) != batches*per {
		t.Fatalf("XLEN = %d, want %d", len(entries), batches*per)
	}
	ck, _, err := checkpoint.LoadK2R(ctx, c, name, stream)
	if tp := (checkpoint.TopicPartition{Topic: "t"}); err != nil || ck.Partitions[tp] != int64(batches*per) || ck.Entries != int64(batches*per) {
		t.Fatalf("checkpoint %+v, %v", ck, err)
	}
}

// stallingCall never answers the first call chained to another (one that
// starts with BLPOP): like a server that stopped answering on a connection
// without a read deadline, it returns only once ctx is done.
type stallingCall struct {
	rueidis.Client
	chained, stalled atomic.Int64
}

func (f *stallingCall) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	if len(multi) == 0 || multi[0].Commands()[0] != "BLPOP" || f.chained.Add(1) != 1 {
		return f.Client.DoMulti(ctx, multi...)
	}
	f.stalled.Add(1)
	<-ctx.Done()
	res := make([]rueidis.RedisResult, len(multi))
	for i := range res {
		res[i] = rueidis.NewErrorResult(ctx.Err())
	}
	return res
}

// A chained write that gets no reply fails once its bound passed and is
// applied again with the writes after it: the run neither hangs nor loses
// or repeats an entry.
func TestRedisSinkBoundsAChainedWriteThatGetsNoReply(t *testing.T) {
	base := testenv.Redis(t)
	if err := checkOrderAccess(context.Background(), base, "test"); err != nil {
		t.Fatal(err)
	}
	stream, name := sinkTarget(t, base)
	c := &stallingCall{Client: base}
	var logs syncBuffer
	s := &RedisSink{c: c, opt: stepOptions{Name: name}, retryFor: 5 * time.Second,
		log: slog.New(slog.NewTextHandler(&logs, nil)), redisName: "test", ordered: true,
		chainedCallTimeout: 300 * time.Millisecond}
	const batches, per = 40, 5
	// Buffered: if the test gives up waiting, the writer does not block.
	finished := make(chan *confirmations, 1)
	go func() {
		results := writeNumbered(s, stream, batches, per)
		s.Close(context.Background())
		finished <- results
	}()
	var results *confirmations
	select {
	case results = <-finished:
	case <-time.After(15 * time.Second):
		t.Fatalf("still writing after 15s: the write that got no reply is not bounded (log: %s)", logs.String())
	}
	if c.stalled.Load() != 1 {
		t.Fatalf("%d chained writes were left without a reply, want 1 (no write was chained to another?)", c.stalled.Load())
	}
	if want := "no reply to a write within 300ms"; !strings.Contains(logs.String(), want) {
		t.Errorf("log does not say %q:\n%s", want, logs.String())
	}
	checkNumbered(t, base, name, stream, results, batches, per)
}

// delayingCall stages the writes of TestRedisSinkAppliesAgainAWriteThatRan
// BeforeItsPartitionMoved: it holds the first pipeline of XADDs for delay
// before sending it, shortens the wait of the second (chained to the first)
// to shortWait, and records whether the third was chained and got the
// token it waited for. It tells sent of the first three as they come.
type delayingCall struct {
	rueidis.Client
	delay, shortWait time.Duration
	sent             chan struct{}

	calls                      atomic.Int64
	thirdChained, thirdGotTurn atomic.Bool
}

func (f *delayingCall) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	if !slices.ContainsFunc(multi, func(c rueidis.Completed) bool { return c.Commands()[0] == "XADD" }) {
		return f.Client.DoMulti(ctx, multi...)
	}
	n := f.calls.Add(1)
	if n <= 3 {
		f.sent <- struct{}{}
	}
	chained := multi[0].Commands()[0] == "BLPOP"
	switch {
	case n == 1:
		time.Sleep(f.delay)
	case n == 2 && chained:
		multi = append(rueidis.Commands{f.Client.B().Blpop().Key(multi[0].Commands()[1]).Timeout(f.shortWait.Seconds()).Build()}, multi[1:]...)
	case n == 3:
		f.thirdChained.Store(chained)
	}
	res := f.Client.DoMulti(ctx, multi...)
	if n == 3 && chained {
		f.thirdGotTurn.Store(res[0].Error() == nil)
	}
	return res
}

// A write whose wait for the write before it timed out runs early: a
// write of another partition succeeds, and the write chained to it finds
// its own partition not moved yet, a conflict like another process's,
// with nothing to tell it ran early. It is applied again once the writes
// before it are, and succeeds; nothing is lost or written twice.
func TestRedisSinkAppliesAgainAWriteThatRanBeforeItsPartitionMoved(t *testing.T) {
	base := testenv.Redis(t)
	ctx := context.Background()
	if err := checkOrderAccess(ctx, base, "test"); err != nil {
		t.Fatal(err)
	}
	stream, name := sinkTarget(t, base)
	c := &delayingCall{Client: base, delay: 2 * time.Second, shortWait: 500 * time.Millisecond, sent: make(chan struct{}, 3)}
	var logs syncBuffer
	s := &RedisSink{c: c, opt: stepOptions{Name: name}, retryFor: 5 * time.Second,
		log: slog.New(slog.NewTextHandler(&logs, nil)), redisName: "test", ordered: true}
	// Batch i writes entries "p<i%2>-<k>" of partition i%2, from where
	// batch i-2 left it.
	const batches, per = 12, 5
	var confirmed confirmations
	for i := 0; i < batches; i++ {
		p := int32(i % 2)
		start, to := int64(i/2*per), int64((i/2+1)*per)
		from := start
		if i < 2 {
			from = checkpoint.NoPosition
		}
		w := &Write{Stream: stream, Moves: []Move{{Partition: checkpoint.TopicPartition{Topic: "t", Partition: p}, From: from, To: to}}}
		for k := start; k < to; k++ {
			w.AddEntry("*")
			w.AddField("n", fmt.Sprintf("p%d-%d", p, k))
		}
		s.Write(ctx, &Batch{writes: []*Write{w}, entries: per}, confirmed.done(i))
		if i < 3 {
			// One batch per write: the first is held; the second's
			// wait for it ends, and it runs; the third, sent while the
			// second waits, runs right after it, both before the first.
			<-c.sent
		}
	}
	s.Close(context.Background())
	if !c.thirdChained.Load() || !c.thirdGotTurn.Load() {
		t.Fatalf("the third write was chained: %v, got its turn: %v; the scenario did not happen", c.thirdChained.Load(), c.thirdGotTurn.Load())
	}
	if want := "partition t/0 holds no position, but this mirror continues from offset 5"; !strings.Contains(logs.String(), want) {
		t.Errorf("no write reported %q; the scenario did not happen:\n%s", want, logs.String())
	}
	confirmed.check(t, batches)
	entries, err := base.Do(ctx, base.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	next := [2]int{}
	for _, e := range entries {
		n := e.FieldValues["n"]
		var p, k int
		if _, err := fmt.Sscanf(n, "p%d-%d", &p, &k); err != nil || p < 0 || p > 1 {
			t.Fatalf("entry %s: not written by this test", n)
		}
		if k != next[p] {
			t.Fatalf("partition %d: entry %s after %d entries: out of order or repeated", p, n, next[p])
		}
		next[p]++
	}
	if len(entries) != batches*per || next != [2]int{batches / 2 * per, batches / 2 * per} {
		t.Fatalf("%d entries (%v per partition), want %d, each once", len(entries), next, batches*per)
	}
	ck, _, err := checkpoint.LoadK2R(ctx, base, name, stream)
	if err != nil || ck.Entries != batches*per {
		t.Fatalf("checkpoint %+v, %v", ck, err)
	}
	for p := int32(0); p < 2; p++ {
		if got := ck.Partitions[checkpoint.TopicPartition{Topic: "t", Partition: p}]; got != batches/2*per {
			t.Errorf("checkpoint of partition %d at %d, want %d", p, got, batches/2*per)
		}
	}
}

// Batches in flight together, PreserveIDs: one holds entries below the
// top, one a duplicate. Each entry is written with its ID, found present
// (the duplicate) or skipped and counted, and every batch is confirmed.
func TestRedisSinkPreservedIDsBelowTheTopAreSkippedAndCounted(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := sinkTarget(t, c)
	s := &RedisSink{c: c, opt: stepOptions{Name: name, PreserveIDs: true}, onError: mirror.OnErrorSkip, ordered: true,
		retryFor: 5 * time.Second, log: slog.New(slog.DiscardHandler), redisName: "test"}
	tp := checkpoint.TopicPartition{Topic: "t"}
	offset := int64(0)
	batch := func(seqs ...int) *Batch {
		w := &Write{Stream: stream, Moves: []Move{{Partition: tp, From: offset, To: offset + int64(len(seqs))}}}
		p := &preservedWrite{}
		for _, n := range seqs {
			id := "100-" + strconv.Itoa(n)
			w.AddEntry(id)
			w.AddField("v", id)
			p.recs = append(p.recs, &kgo.Record{Topic: "t", Offset: offset})
			offset++
		}
		return &Batch{writes: []*Write{w}, preserved: []*preservedWrite{p}, entries: len(seqs)}
	}
	batches := []*Batch{batch(4, 5, 6), batch(1, 2, 3), batch(7, 8), batch(8, 9), batch(10)}
	if err := checkpoint.InitK2RPartitions(ctx, c, name, map[string]checkpoint.K2RInit{stream: {Starts: map[checkpoint.TopicPartition]int64{tp: 0}}}); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Add(1)
		s.Write(ctx, b, func(err error) { errs[i] = err; wg.Done() })
	}
	wg.Wait()
	s.Close(ctx)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	es, err := c.Do(ctx, c.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	if got := strings.Join(ids, ","); got != "100-4,100-5,100-6,100-7,100-8,100-9,100-10" {
		t.Fatalf("stream holds %s", got)
	}
	var present int64
	for _, b := range batches {
		present += b.present
	}
	if batches[1].skipped != 3 || batches[1].entries != 0 || present != 1 || batches[0].Len() < 0 {
		t.Fatalf("skipped %d, entries %d, present %d (%d to write first): want 3 skipped, 1 present", batches[1].skipped, batches[1].entries, present, batches[0].Len())
	}
	if pos, _ := c.Do(ctx, c.B().Hget().Key(checkpoint.K2RKey(name, stream)).Field("t:0").Build()).ToString(); pos != "11" {
		t.Fatalf("checkpoint at %s, want 11", pos)
	}
}
