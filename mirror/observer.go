package mirror

import "time"

// An Observer watches a mirror run: progress output, logs and metrics all
// hang off this one seam, so none of them needs a hook of its own in a
// direction's code. Any func may be nil. They are called from the run's
// own goroutines, some of them concurrently, beside the hot path: they
// must return quickly and must not call back into the mirror.
type Observer struct {
	// Started is called once a run is set up and before it reads: after
	// the lease is taken and the checkpoint loaded, and for a one-shot
	// run once the start snapshot says how much there is to do. A follow
	// run set up again (its lease lost, say) calls it again.
	Started func(Start)
	// Committed is called after each commit with what it acknowledged and
	// the positions it stored.
	Committed func(Commit)
	// Retrying is called before a transient failure is retried.
	Retrying func(Retry)
	// Lease is called when the run takes its lease, loses it, or releases
	// it.
	Lease func(LeaseEvent)
	// InFlight is called with +1 when the engine has read a batch and with
	// -n when n batches leave it (committed, or given up on a failure or a
	// stop): their sum is the batches read whose commit is still to come.
	// Changes, not a count, so calls from the read and the commit sides
	// need no order between them.
	InFlight func(delta int)
}

// Start is what a run knows when it starts mirroring.
type Start struct {
	// Total is about how many entries (records) a one-shot run has to go
	// through as of its start snapshot, written or not; -1 when it cannot
	// tell (follow, or a source that does not count). For Kafka it counts
	// offsets, an upper bound: a partition written with transactions
	// holds a control record per transaction, which is no entry. A run
	// set up again counts from its new start: its progress is Totals
	// minus the Totals it was set up again at.
	Total int64
	// Positions are where the checkpoint stands at the start.
	Positions []Position
}

// Commit is one commit: the batches it acknowledged, counted, and the
// positions it stored.
type Commit struct {
	// Batch counts what the commit acknowledged; Totals are the running
	// totals of the run since it started, this commit included (and,
	// for a run set up again, what it did before).
	Batch  Stats
	Totals Stats

	batches []positioner
}

// Positions are, per stream or partition the commit moved, its position
// after it. They are worked out when asked for, so an observer that only
// counts costs the hot path nothing; ask within Committed: a Commit kept
// for later keeps its batches in memory.
func (c Commit) Positions() []Position {
	var ps []Position
	for _, b := range c.batches {
		ps = mergePositions(ps, b.Positions())
	}
	return ps
}

// A Position is where a mirror stands in one stream or partition. For a
// stream, ID is the last entry the mirror handled there; for a Kafka
// partition, Offset is the next offset it reads (or, for a destination
// topic, the offset after the last record it wrote).
type Position struct {
	Stream string
	ID     string

	Topic     string
	Partition int32
	Offset    int64

	// Source marks a position in the mirror's source: a redis-to-kafka
	// stream, a kafka-to-redis partition. Entries is then, in a Start,
	// how many entries (offsets, for Kafka) there are to mirror there as
	// of a one-shot run's start snapshot (-1 when it cannot tell, or
	// following), and in a Commit, how many the committed batches carried
	// there. Positions are counted only for an observer that asks.
	Source  bool
	Entries int64
}

// Retry is a transient failure about to be retried.
type Retry struct {
	// Step is what failed: "read", "write", "commit", "set up again".
	Step string
	// Wait is how long the run waits before trying again.
	Wait time.Duration
	Err  error
}

// LeaseEvent is a change of a run's lease.
type LeaseEvent struct {
	Kind LeaseEventKind
	// Key is the lease's Redis key.
	Key string
	// TookOver names the holder whose lease was taken over (a process of
	// this host that is gone), when Kind is LeaseTaken.
	TookOver string
	// Err says why the lease was lost, when Kind is LeaseLost.
	Err error
}

// LeaseEventKind says what happened to a lease.
type LeaseEventKind int

// Lease events.
const (
	LeaseTaken LeaseEventKind = iota
	LeaseLost
	LeaseReleased
)

func (k LeaseEventKind) String() string {
	switch k {
	case LeaseTaken:
		return "taken"
	case LeaseLost:
		return "lost"
	case LeaseReleased:
		return "released"
	}
	return "unknown"
}

// The observer's calls, each a no-op when its func (or the observer) is
// nil. OnLease and OnRetry are for the parts of a run outside the engine.

// OnLease tells o of a lease event.
func (o *Observer) OnLease(e LeaseEvent) { o.lease(e) }

// OnRetry tells o of a retry.
func (o *Observer) OnRetry(r Retry) { o.retrying(r) }

func (o *Observer) started(s Start) {
	if o != nil && o.Started != nil {
		o.Started(s)
	}
}

func (o *Observer) committed(c Commit) {
	if o != nil && o.Committed != nil {
		o.Committed(c)
	}
}

func (o *Observer) retrying(r Retry) {
	if o != nil && o.Retrying != nil {
		o.Retrying(r)
	}
}

func (o *Observer) lease(e LeaseEvent) {
	if o != nil && o.Lease != nil {
		o.Lease(e)
	}
}

func (o *Observer) inFlight(delta int) {
	if o != nil && o.InFlight != nil && delta != 0 {
		o.InFlight(delta)
	}
}

// Observers joins os into one Observer that calls each in turn; nil
// observers are left out, and none at all is nil. Progress output, metrics
// and the command's own bookkeeping each watch a run this way without
// knowing of the others.
func Observers(os ...*Observer) *Observer {
	var all []*Observer
	for _, o := range os {
		if o != nil {
			all = append(all, o)
		}
	}
	switch len(all) {
	case 0:
		return nil
	case 1:
		return all[0]
	}
	return &Observer{
		Started: func(s Start) {
			for _, o := range all {
				o.started(s)
			}
		},
		Committed: func(c Commit) {
			for _, o := range all {
				o.committed(c)
			}
		},
		Retrying: func(r Retry) {
			for _, o := range all {
				o.retrying(r)
			}
		},
		Lease: func(e LeaseEvent) {
			for _, o := range all {
				o.lease(e)
			}
		},
		InFlight: func(delta int) {
			for _, o := range all {
				o.inFlight(delta)
			}
		},
	}
}
