package lease

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// CloseBudget bounds the steps of a run's way out once the engine returned
// (finishing the writes to Redis, releasing the lease, closing the
// connections): with the engine's drain timeout (4 s) it keeps a stop
// within the 6 seconds the README promises, with room to spare for the
// process to exit, whatever the servers do.
const CloseBudget = 1500 * time.Millisecond

// Shutdown bounds the steps a run takes on its way out, after the engine
// returned: what was confirmed is committed by then, and what a step still
// sends when it is given up is what a crash at that moment would leave,
// which the checkpoints are made for. The budget starts with the first
// step; a step that is not done when it runs out is left to the exit.
type Shutdown struct {
	log      *slog.Logger
	once     sync.Once
	deadline time.Time
	spawned  []spawned
}

// NewShutdown is the way out of a run that logs to log.
func NewShutdown(log *slog.Logger) *Shutdown { return &Shutdown{log: log} }

// ctx is a context that ends when the budget runs out, which starts now
// unless an earlier step started it.
func (s *Shutdown) ctx() (context.Context, context.CancelFunc) {
	s.once.Do(func() { s.deadline = time.Now().Add(CloseBudget) })
	return context.WithDeadline(context.Background(), s.deadline)
}

// Step runs fn and waits for it within the budget, which fn's ctx carries.
// Steps run in the order they are called.
func (s *Shutdown) Step(what string, fn func(ctx context.Context)) {
	ctx, cancel := s.ctx()
	defer cancel()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		fn(ctx)
	}()
	select {
	case <-ended:
	case <-ctx.Done():
		s.log.Warn("stopping without waiting any longer for a step of the way out: a server does not answer in time", "step", what, "budget", CloseBudget)
	}
}

// Spawn starts fn, a step no later one depends on (closing a Kafka
// client), at once; Wait waits for every spawned step within the budget.
func (s *Shutdown) Spawn(what string, fn func()) {
	s.ctx() // the budget starts
	st := spawned{what: what, ended: make(chan struct{})}
	go func() {
		defer close(st.ended)
		fn()
	}()
	s.spawned = append(s.spawned, st)
}

type spawned struct {
	what  string
	ended chan struct{}
}

// Wait waits for the spawned steps until the budget runs out; the last
// step on the way out.
func (s *Shutdown) Wait() {
	ctx, cancel := s.ctx()
	defer cancel()
	for _, st := range s.spawned {
		select {
		case <-st.ended:
			continue // without a race with a budget run out meanwhile
		default:
		}
		select {
		case <-st.ended:
		case <-ctx.Done():
			s.log.Warn("stopping without waiting any longer for a step of the way out: its time ran out", "step", st.what, "budget", CloseBudget)
		}
	}
}

// Closers are the clients a run opened after taking the lease, closed
// last added first: steps (waited for, in turn) and spawns (started at
// once, then waited for together).
type Closers []closer

type closer struct {
	what  string
	spawn func()
	step  func(ctx context.Context)
}

func (c *Closers) Add(what string, fn func()) {
	*c = append(*c, closer{what: what, spawn: fn})
}

// AddStep adds fn, which the closers after it wait for.
func (c *Closers) AddStep(what string, fn func(ctx context.Context)) {
	*c = append(*c, closer{what: what, step: fn})
}

// hand runs them as steps of sd, on the way out.
func (c Closers) hand(sd *Shutdown) {
	for i := len(c) - 1; i >= 0; i-- {
		if c[i].step != nil {
			sd.Step(c[i].what, c[i].step)
		} else {
			sd.Spawn(c[i].what, c[i].spawn)
		}
	}
}

// close runs them before the mirror is set up again, as a shutdown of its
// own: within CloseBudget, after which what is still closing is left.
func (c Closers) close(log *slog.Logger) {
	sd := NewShutdown(log)
	c.hand(sd)
	sd.Wait()
}
