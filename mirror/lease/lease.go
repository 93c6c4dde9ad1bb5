package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/setting"
)

// heldLease is a mirror's lease while a run holds it: ctx ends when the
// lease is lost (then context.Cause says why).
type heldLease struct {
	lease  *checkpoint.Lease
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// holdLease takes the mirror's lease (failing with checkpoint.ErrLeaseHeld
// while another process holds it) and renews it until release or drop;
// for a run set up again after prev (nil: a first start), it may take
// over a key still holding prev's value.
func (l *loop) holdLease(ctx context.Context, prev *checkpoint.Lease) (*heldLease, error) {
	log, name, ttl := l.Logger, l.Name, l.TTL
	var lease *checkpoint.Lease
	var err error
	if prev != nil {
		lease, err = prev.Reacquire(ctx)
	} else {
		lease, err = checkpoint.AcquireLease(ctx, l.Redis, l.Kind, name, ttl)
	}
	if err != nil {
		if errors.Is(err, checkpoint.ErrLeaseHeld) {
			return nil, err
		}
		// Redis down or restarting (connection refused, LOADING) is
		// transient: a follow run set up again waits it out.
		return nil, mirror.ClassifyRedis(err)
	}
	if old := lease.TookOver(); old != "" {
		log.Info("took over the lease of a process of this host that is gone", "lease", lease.Key(), "old_holder", old)
	}
	log.Debug("lease taken", "key", lease.Key(), "ttl", ttl)
	l.Observer.OnLease(mirror.LeaseEvent{Kind: mirror.LeaseTaken, Key: lease.Key(), TookOver: lease.TookOver()})
	runCtx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case err := <-lease.Lost():
			l.Observer.OnLease(mirror.LeaseEvent{Kind: mirror.LeaseLost, Key: lease.Key(), Err: err})
			// Another process may already be taking over: abandon what
			// is in flight rather than draining it.
			cancel(abandonCause{err})
		case <-runCtx.Done():
		}
	}()
	return &heldLease{lease: lease, ctx: runCtx, cancel: cancel}, nil
}

// release stops renewing and deletes the lease if this process still
// holds it, a step of sd: a lease it cannot release in time expires after
// its TTL, as a crashed mirror's does.
func (h *heldLease) release(sd *Shutdown, obs *mirror.Observer) {
	h.cancel(nil)
	// Release first waits for a renewal in flight, which a stalled Redis
	// holds for up to a third of the TTL: the step's budget bounds both.
	released := make(chan bool, 1)
	sd.Step("release the lease", func(ctx context.Context) { released <- h.lease.Release(ctx) == nil })
	// Told only of a release that ended within the budget: a step given
	// up may end after Run returned, when nobody may be listening.
	select {
	case ok := <-released:
		if ok {
			obs.OnLease(mirror.LeaseEvent{Kind: mirror.LeaseReleased, Key: h.lease.Key()})
		}
	default:
	}
}

// drop stops renewing a lease before the mirror is set up again, within
// CloseBudget; the lease is deleted only if it is still this process's.
func (h *heldLease) drop(obs *mirror.Observer) {
	h.cancel(nil)
	ctx, cancel := context.WithTimeout(context.Background(), CloseBudget)
	defer cancel()
	if h.lease.Release(ctx) == nil {
		obs.OnLease(mirror.LeaseEvent{Kind: mirror.LeaseReleased, Key: h.lease.Key()})
	}
}

// Backoff between two set-ups of a follow run that cannot be set up again
// yet (a server unreachable).
const (
	minSetUpBackoff = 500 * time.Millisecond
	maxSetUpBackoff = 10 * time.Second
)

// loop runs a mirror under its lease.
type loop struct {
	// Redis holds the lease; Kind and Name key it (see checkpoint.LeaseKey).
	Redis rueidis.Client
	Kind  string
	Name  string
	// TTL is how long the lease of a process that stopped renewing it
	// keeps others out.
	TTL time.Duration
	// Follow: a follow run sets itself up again after it lost its lease;
	// a one-shot run stops.
	Follow bool
	// Standby waits for a lease another process holds (see
	// mirror.RunConfig.Standby).
	Standby  bool
	Logger   *slog.Logger
	Observer *mirror.Observer
	// Fenced says whether err means the destination took the mirror's
	// writes from this run for another's (Kafka fenced its producer): a
	// follow run is then set up again as when its lease is lost. Nil: no
	// error does.
	Fenced func(err error) bool
}

// ErrSetUpAgain, wrapped in the error of a RunFunc, asks for the mirror
// to be set up again at once, under the lease it holds: a follow run that
// found more to mirror than it was set up for (a new stream matching its
// patterns) drains what is in flight and returns it, and its next set-up
// takes the new stream on through every step a stream known at start
// goes through. A one-shot run never returns it.
var ErrSetUpAgain = errors.New("the mirror is to be set up again")

// A RunFunc sets a mirror up and runs it, under its lease (ctx ends when
// the lease is lost), with rc, the connection to the Redis that holds the
// lease, adding every client it opens to cl. before is what the runs
// before it did in this process, for the observer's totals. ran says
// whether it was set up: a run that failed in its set-up has no stats to
// show, only its error.
type RunFunc func(ctx context.Context, rc rueidis.Client, cl *Closers, before mirror.Stats) (stats mirror.Stats, ran bool, err error)

// Run runs a mirror of direction kind (checkpoint.KindRedisToKafka or
// KindKafkaToRedis) as both directions do: it connects to redis, which
// holds the lease and the checkpoints, refuses a Redis Cluster before
// anything is written, takes the lease and calls run under it (see
// loop.run; fenced says which errors mean the destination took the
// mirror's writes for another run's), then closes everything within a
// bounded time (see Shutdown). An error of a run that stopped before it
// was set up is a *mirror.SetUpError.
func Run(ctx context.Context, c *mirror.RunConfig, redis endpoint.Redis, kind string, fenced func(error) bool, run RunFunc) (mirror.Stats, error) {
	log := c.Log()
	rc, err := redis.Connect(ctx, mirror.ConnectTimeout)
	if err != nil {
		return mirror.Stats{}, mirror.NotSetUp(err)
	}
	// Every step on the way out is bounded.
	sd := NewShutdown(log)
	defer sd.Wait()
	defer sd.Spawn("close the Redis connection", rc.Close)
	// Before the lease: a run that cannot work leaves nothing behind.
	if err := redis.RefuseCluster(ctx, rc, kind); err != nil {
		return mirror.Stats{}, mirror.NotSetUp(err)
	}
	log.Debug("connected to redis", "url", redis.Redacted())
	l := &loop{Redis: rc, Kind: kind, Name: c.Name, TTL: c.LeaseTTL, Follow: c.Follow, Standby: c.Standby,
		Logger: log, Observer: c.Observer, Fenced: fenced}
	stats, set, err := l.run(ctx, sd, run)
	if !set {
		return stats, mirror.NotSetUp(err)
	}
	return stats, err
}

// run takes the lease and calls run, which sets the mirror up from its
// checkpoint and mirrors, with a context that ends when the lease is lost.
// Whatever run opened is added to cl, and closed, as steps of sd, once it
// returned. set says whether run was ever set up.
//
// A run whose lease is lost (it expired while Redis or this process was
// paused, Redis restarted without it, or it was deleted) stops writing at
// once: another process may have started meanwhile. So does a run that
// Kafka fenced (another run of the mirror started). A one-shot run then
// exits with that error. A follow run sets itself up again as a new start
// does, logging it: it takes the lease anew with SET NX (and stops as a
// second run does if another process holds it), and run sets the mirror
// up again, fencing whatever the earlier run left behind. A follow run
// set up again retries a server that does not answer, as a follow run
// does, until ctx ends. A follow run whose error wraps ErrSetUpAgain is
// set up again at once under the lease it holds.
func (l *loop) run(ctx context.Context, sd *Shutdown, run RunFunc) (total mirror.Stats, set bool, err error) {
	log, follow := l.Logger, l.Follow
	start := time.Now()
	again, backoff := false, minSetUpBackoff
	var prev *checkpoint.Lease // the lease of the run before, once set up again
	var fencedHolding time.Time
	var standingBy time.Time
	var held *heldLease // kept for a set-up asked for with ErrSetUpAgain
	for {
		if held == nil {
			var err error
			if held, err = l.holdLease(ctx, prev); err != nil {
				// Held by another run, at the start or after a failover (this
				// run stalled and the other took over): a standby waits.
				// Anything else is handled as without it.
				if l.Standby && ctx.Err() == nil && errors.Is(err, checkpoint.ErrLeaseHeld) {
					if err = l.standBy(ctx, &standingBy, err); err == nil {
						continue
					}
				}
				standingBy = time.Time{}
				if again && ctx.Err() == nil && mirror.IsTransient(err) {
					if err = l.setUpBackoff(ctx, &backoff, err); err == nil {
						continue
					}
				}
				total.Elapsed = time.Since(start)
				return total, set, err
			}
		}
		var cl Closers
		res, ran, err := run(held.ctx, l.Redis, &cl, total)
		set = set || ran
		total.Add(res)
		total.Elapsed = time.Since(start)
		isFenced := func(err error) bool { return l.Fenced != nil && l.Fenced(err) }
		err = leaseError(held.ctx, err, isFenced)
		fenced := isFenced(err)
		if fenced && follow && ctx.Err() == nil && fencedAgain(held, &fencedHolding) {
			// Kafka fenced this run twice in a short while although no
			// other process took its lease in this Redis: the other
			// producer's lease is elsewhere. Setting up again would
			// fence it in turn, for ever.
			err = setting.Errorf("%w; this run still holds its lease %s, so the other run keeps its checkpoints in another Redis (or database): mirrors writing to one Kafka cluster need names of their own ({Name})", err, held.lease.Key())
			fenced = false
		}
		lost := errors.Is(err, checkpoint.ErrLeaseLost) || fenced
		retryable := again && mirror.IsTransient(err)
		if errors.Is(err, ErrSetUpAgain) && follow && ctx.Err() == nil && held.ctx.Err() == nil {
			// The run drained and stopped to be set up again, with
			// the lease still held: keep it, so no other process
			// (a standby) takes the mirror over in between.
			log.Debug("setting the mirror up again", "reason", err)
			cl.close(log)
			again, backoff = true, minSetUpBackoff
			continue
		}
		if !follow || ctx.Err() != nil || !(lost || retryable) {
			cl.hand(sd)
			held.release(sd, l.Observer)
			if lost && !follow && errors.Is(err, checkpoint.ErrLeaseLost) {
				err = fmt.Errorf("%w; a one-shot run stops here: run it again to go on from its checkpoint", err)
			}
			return total, set, err
		}
		if lost {
			log.Warn("the mirror's lease was lost (or Kafka fenced it): it stopped writing, and sets itself up again as a new start would", "err", err)
		}
		cl.close(log)
		held.drop(l.Observer)
		prev, held = held.lease, nil
		if lost {
			backoff = minSetUpBackoff
		} else if err = l.setUpBackoff(ctx, &backoff, err); err != nil {
			return total, set, err
		}
		again = true
	}
}

// standbyLogEvery is how often a standby says it is still waiting.
const standbyLogEvery = 30 * time.Second

// standBy waits a moment before a standby asks for the lease again: a
// third of the lease's TTL, at most a second, so it takes over within
// about a second of the lease's expiry. It logs when it starts waiting
// and every standbyLogEvery after; since is when it last did.
func (l *loop) standBy(ctx context.Context, since *time.Time, err error) error {
	if since.IsZero() || time.Since(*since) >= standbyLogEvery {
		l.Logger.Info("standing by: the mirror runs elsewhere; taking it over when that run stops or its lease expires", "lease", checkpoint.LeaseKey(l.Kind, l.Name), "reason", err)
		*since = time.Now()
	}
	wait := min(l.TTL/3, time.Second)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
		return nil
	}
}

// fencedHoldingWindow is how soon a second fence of a run that still holds
// its lease stops the mirror rather than setting it up again.
const fencedHoldingWindow = time.Minute

// fencedAgain says, for a run Kafka fenced, whether it still holds its
// lease and was fenced so before, less than fencedHoldingWindow ago; it
// records the time of a first such fence in *since. A run whose own
// transaction outlived Kafka's transaction timeout is fenced once and goes
// on; two mirrors of one name whose leases are in different Redis servers
// fence each other at every set-up.
func fencedAgain(held *heldLease, since *time.Time) bool {
	ctx, cancel := context.WithTimeout(context.Background(), CloseBudget)
	defer cancel()
	if ok, err := held.lease.Held(ctx); err != nil || !ok {
		return false
	}
	now := time.Now()
	if !since.IsZero() && now.Sub(*since) < fencedHoldingWindow {
		return true
	}
	*since = now
	return false
}

// setUpBackoff waits before the next set-up, or returns ctx's error.
func (l *loop) setUpBackoff(ctx context.Context, backoff *time.Duration, err error) error {
	l.Logger.Warn("retrying", "step", "set up again", "in", *backoff, "err", err)
	l.Observer.OnRetry(mirror.Retry{Step: "set up again", Wait: *backoff, Err: err})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(*backoff):
	}
	*backoff = min(*backoff*2, maxSetUpBackoff)
	return nil
}

// abandonCause stops a run without draining (mirror.ErrAbandon) and
// reads as the error that caused it.
type abandonCause struct{ error }

func (a abandonCause) Is(target error) bool { return target == mirror.ErrAbandon }
func (a abandonCause) Unwrap() error        { return a.error }

// leaseError turns a run stopped by a lost lease into that error, unless
// Kafka fenced the run, which says more precisely why it stops.
func leaseError(runCtx context.Context, err error, fenced func(error) bool) error {
	if fenced(err) {
		return err
	}
	if cause := context.Cause(runCtx); err != nil && cause != nil && errors.Is(cause, checkpoint.ErrLeaseLost) {
		return cause
	}
	return err
}
