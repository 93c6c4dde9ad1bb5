package mirror

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// The engine is pure logic: these tests drive it with in-memory batches.

type testBatch struct {
	seq  int
	n    int
	keep int // entries of a Prefix
}

func (b *testBatch) Len() int    { return b.n }
func (b *testBatch) Bytes() int  { return b.n * 10 }
func (b *testBatch) Empty() bool { return b.n == 0 }
func (b *testBatch) Unwritten() Unwritten {
	return Unwritten{}
}
func (b *testBatch) Prefix(n int) *testBatch {
	return &testBatch{seq: b.seq, n: n, keep: n}
}

type testSource struct {
	mu        sync.Mutex
	batches   int
	next      int
	failReads int // transient failures before each read succeeds
	committed []*testBatch
	block     bool // after the batches, block until ctx ends (follow)
}

func (s *testSource) Next(ctx context.Context) (*testBatch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failReads > 0 {
		s.failReads--
		return nil, Transient(errors.New("connection refused"))
	}
	if s.next == s.batches {
		if s.block {
			s.mu.Unlock()
			<-ctx.Done()
			s.mu.Lock()
			return nil, ctx.Err()
		}
		return nil, io.EOF
	}
	s.next++
	return &testBatch{seq: s.next, n: 10}, nil
}

func (s *testSource) Commit(_ context.Context, b *testBatch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed = append(s.committed, b)
	return nil
}

func (s *testSource) seqs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, b := range s.committed {
		out = append(out, b.seq)
	}
	return out
}

// testSink confirms each batch after a random delay, so confirmations
// arrive out of order; failAt makes that batch fail after confirming half.
type testSink struct {
	failAt int
	hold   chan struct{} // when set, confirmations wait for it
}

func (k *testSink) Write(_ context.Context, b *testBatch, done func(error)) {
	go func() {
		if k.hold != nil {
			<-k.hold
		}
		time.Sleep(time.Duration(rand.Intn(3)) * time.Millisecond)
		if b.seq == k.failAt {
			done(&PartialError{Confirmed: 5, Err: errors.New("broker said no")})
			return
		}
		done(nil)
	}()
}

func TestEngineCommitsInOrderThoughConfirmationsArriveOutOfOrder(t *testing.T) {
	src := &testSource{batches: 200}
	stats, err := Run[*testBatch](context.Background(), src, &testSink{}, Options{MaxInFlight: 8})
	if err != nil {
		t.Fatal(err)
	}
	seqs := src.seqs()
	if len(seqs) != 200 {
		t.Fatalf("%d batches committed, want 200", len(seqs))
	}
	for i, s := range seqs {
		if s != i+1 {
			t.Fatalf("commit %d was batch %d: out of order", i, s)
		}
	}
	if stats.Entries != 2000 || stats.Bytes != 20000 || stats.Batches != 200 {
		t.Fatalf("stats %+v", stats)
	}
}

func TestEngineCommitsNothingPastAFailedBatchButItsConfirmedPrefix(t *testing.T) {
	src := &testSource{batches: 50}
	_, err := Run[*testBatch](context.Background(), src, &testSink{failAt: 20}, Options{MaxInFlight: 8})
	if err == nil || err.Error() != "broker said no" {
		t.Fatalf("err = %v, want the sink's error", err)
	}
	seqs := src.seqs()
	if len(seqs) != 20 {
		t.Fatalf("committed %v, want batches 1..19 and the prefix of 20", seqs)
	}
	for i, s := range seqs {
		if s != i+1 {
			t.Fatalf("commit %d was batch %d", i, s)
		}
	}
	if last := src.committed[19]; last.keep != 5 {
		t.Fatalf("batch 20 committed with %d entries, want its confirmed prefix of 5", last.keep)
	}
}

func TestEngineStopDrainsWhatIsInFlight(t *testing.T) {
	src := &testSource{batches: 3, block: true}
	hold := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
		close(hold) // confirmations arrive only after the stop
	}()
	_, err := Run[*testBatch](ctx, src, &testSink{hold: hold}, Options{MaxInFlight: 8})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := src.seqs(); len(got) != 3 {
		t.Fatalf("committed %v after the stop, want all 3 batches in flight", got)
	}
}

func TestEngineAbandonsUnconfirmedBatchesAfterTheDrainTimeout(t *testing.T) {
	src := &testSource{batches: 3, block: true}
	hold := make(chan struct{}) // never closed: Kafka never answers
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	begin := time.Now()
	_, err := Run[*testBatch](ctx, src, &testSink{hold: hold}, Options{DrainTimeout: 100 * time.Millisecond})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("stop took %s", took)
	}
	if got := src.seqs(); len(got) != 0 {
		t.Fatalf("committed %v, but nothing was confirmed", got)
	}
}

func TestEngineRetriesTransientFailuresOnlyForRetryFor(t *testing.T) {
	src := &testSource{batches: 1, failReads: 2}
	if _, err := Run[*testBatch](context.Background(), src, &testSink{}, Options{RetryFor: 5 * time.Second}); err != nil {
		t.Fatalf("two transient failures: %v", err)
	}
	src = &testSource{batches: 1, failReads: 1 << 30}
	_, err := Run[*testBatch](context.Background(), src, &testSink{}, Options{RetryFor: 300 * time.Millisecond})
	if err == nil || !IsTransient(err) {
		t.Fatalf("err = %v, want the transient failure after giving up", err)
	}
}

// blockingSink's Write takes its time before handing the batch on, as
// building and producing a large batch does; it records the order of the
// calls and whether two ever overlapped.
type blockingSink struct {
	mu      sync.Mutex
	busy    bool
	overlap bool
	order   []int
	release chan struct{} // the first Write waits for it
}

func (k *blockingSink) Write(_ context.Context, b *testBatch, done func(error)) {
	k.mu.Lock()
	if k.busy {
		k.overlap = true
	}
	k.busy = true
	k.order = append(k.order, b.seq)
	first := len(k.order) == 1
	k.mu.Unlock()
	if first {
		<-k.release
	}
	k.mu.Lock()
	k.busy = false
	k.mu.Unlock()
	done(nil)
}

func TestEngineReadsTheNextBatchWhileTheSinkTakesThisOne(t *testing.T) {
	src := &readCounter{testSource: testSource{batches: 20}, read: make(chan int, 20)}
	sink := &blockingSink{release: make(chan struct{})}
	result := make(chan error, 1)
	go func() {
		_, err := Run[*testBatch](context.Background(), src, sink, Options{MaxInFlight: 4})
		result <- err
	}()
	// Batch 1's Write has not returned; reading goes on regardless.
	for want := 1; want <= 3; want++ {
		select {
		case <-src.read:
		case <-time.After(5 * time.Second):
			t.Fatalf("batch %d was not read while the sink held batch 1", want)
		}
	}
	close(sink.release)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if sink.overlap {
		t.Fatal("two Write calls ran at once")
	}
	for i, s := range sink.order {
		if s != i+1 {
			t.Fatalf("Write %d got batch %d: out of order", i, s)
		}
	}
	if got := len(src.seqs()); got != 20 {
		t.Fatalf("%d batches committed, want 20", got)
	}
}

// readCounter reports each batch it hands out.
type readCounter struct {
	testSource
	read chan int
}

func (s *readCounter) Next(ctx context.Context) (*testBatch, error) {
	b, err := s.testSource.Next(ctx)
	if err == nil {
		s.read <- b.seq
	}
	return b, err
}

// groupingSource commits consecutive confirmed batches together.
type groupingSource struct {
	testSource
	groups []int // size of each CommitMany
}

func (s *groupingSource) CommitMany(ctx context.Context, batches []*testBatch) error {
	for _, b := range batches {
		s.Commit(ctx, b)
	}
	s.mu.Lock()
	s.groups = append(s.groups, len(batches))
	s.mu.Unlock()
	return nil
}

func TestEngineCommitsConfirmedBatchesTogetherInOrder(t *testing.T) {
	tests := []struct {
		name      string
		failAt    int
		committed int // batches committed, a failed one's prefix included
	}{
		{"all confirmed", 0, 100},
		{"one fails", 40, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &groupingSource{testSource: testSource{batches: 100}}
			hold := make(chan struct{})
			go func() { time.Sleep(50 * time.Millisecond); close(hold) }()
			_, err := Run[*testBatch](context.Background(), src, &testSink{failAt: tt.failAt, hold: hold}, Options{MaxInFlight: 16})
			if (err != nil) != (tt.failAt > 0) {
				t.Fatalf("err = %v", err)
			}
			seqs := src.seqs()
			if len(seqs) != tt.committed {
				t.Fatalf("committed %d batches, want %d: %v", len(seqs), tt.committed, seqs)
			}
			for i, s := range seqs {
				if s != i+1 {
					t.Fatalf("commit %d was batch %d: out of order", i, s)
				}
			}
			if tt.failAt > 0 && src.committed[len(seqs)-1].keep != 5 {
				t.Fatalf("the failed batch was committed whole, not its confirmed prefix")
			}
			if len(src.groups) == 0 {
				t.Fatal("batches confirmed together were never committed together")
			}
		})
	}
}

// lateFirstSink confirms batch 2 at once, fails batch 3 after confirming
// half of it, and only then confirms batch 1.
type lateFirstSink struct{ release chan struct{} }

func (k *lateFirstSink) Write(_ context.Context, b *testBatch, done func(error)) {
	switch b.seq {
	case 1:
		go func() { <-k.release; done(nil) }()
	case 2:
		done(nil)
	default:
		done(&PartialError{Confirmed: 5, Err: errors.New("broker said no")})
		close(k.release)
	}
}

func TestEngineGroupsOnlyTheConfirmedBatchesBeforeAFailedOne(t *testing.T) {
	src := &groupingSource{testSource: testSource{batches: 3}}
	_, err := Run[*testBatch](context.Background(), src, &lateFirstSink{release: make(chan struct{})}, Options{MaxInFlight: 4})
	if err == nil || err.Error() != "broker said no" {
		t.Fatalf("err = %v, want the sink's error", err)
	}
	if seqs := src.seqs(); len(seqs) != 3 || seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 {
		t.Fatalf("committed %v, want 1 and 2, then the prefix of 3", seqs)
	}
	if src.committed[2].keep != 5 {
		t.Fatal("batch 3 was committed whole, not its confirmed prefix")
	}
	if len(src.groups) != 1 || src.groups[0] != 2 {
		t.Fatalf("commit groups %v, want one of batches 1 and 2", src.groups)
	}
}

// inFlightWatch sums an observer's InFlight changes, and records the
// least and the most the sum reached.
type inFlightWatch struct {
	mu              sync.Mutex
	now, least, top int
}

func (w *inFlightWatch) observer() *Observer {
	return &Observer{InFlight: func(d int) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.now += d
		w.least, w.top = min(w.least, w.now), max(w.top, w.now)
	}}
}

func TestEngineBatchesInFlightGoBackToZeroHoweverTheRunEnds(t *testing.T) {
	const maxInFlight = 4
	tests := []struct {
		name string
		run  func(obs *Observer) error
	}{
		{"finished", func(obs *Observer) error {
			_, err := Run[*testBatch](context.Background(), &testSource{batches: 100}, &testSink{}, Options{MaxInFlight: maxInFlight, Observer: obs})
			return err
		}},
		{"committed in groups", func(obs *Observer) error {
			src := &groupingSource{testSource: testSource{batches: 100}}
			_, err := Run[*testBatch](context.Background(), src, &testSink{}, Options{MaxInFlight: maxInFlight, Observer: obs})
			return err
		}},
		{"a batch failed", func(obs *Observer) error {
			_, err := Run[*testBatch](context.Background(), &testSource{batches: 100}, &testSink{failAt: 30}, Options{MaxInFlight: maxInFlight, Observer: obs})
			if err == nil {
				return errors.New("the failed batch did not fail the run")
			}
			return nil
		}},
		{"stopped and abandoned", func(obs *Observer) error {
			ctx, cancel := context.WithCancel(context.Background())
			go func() { time.Sleep(20 * time.Millisecond); cancel() }()
			_, err := Run[*testBatch](ctx, &testSource{batches: 3, block: true}, &testSink{hold: make(chan struct{})},
				Options{MaxInFlight: maxInFlight, DrainTimeout: 50 * time.Millisecond, Observer: obs})
			if !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w inFlightWatch
			if err := tt.run(w.observer()); err != nil {
				t.Fatal(err)
			}
			if w.now != 0 || w.least < 0 {
				t.Fatalf("batches in flight: %d at the end (least %d), want 0 and never below", w.now, w.least)
			}
			// The channel's MaxInFlight, the one the committer holds and
			// the one the read loop is handing over; a committer that
			// groups holds up to MaxInFlight and the one after them
			// (held), while the channel fills again behind them.
			most := maxInFlight + 2
			if tt.name == "committed in groups" {
				most = 2*maxInFlight + 2
			}
			if w.top < 1 || w.top > most {
				t.Fatalf("batches in flight reached %d, want 1 to %d", w.top, most)
			}
		})
	}
}
