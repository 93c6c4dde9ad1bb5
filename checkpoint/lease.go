package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// ErrLeaseHeld is returned (wrapped) when another process runs the mirror.
var ErrLeaseHeld = errors.New("mirror is already running")

// ErrLeaseLost is returned (wrapped) when a running mirror's lease was taken
// or expired: another process may be writing, so this one must stop.
var ErrLeaseLost = errors.New("lease lost")

// LeaseKey is the key of a mirror's lease.
func LeaseKey(kind, name string) string { return "xmirror:lease:" + kind + ":" + name }

// Lease makes sure one process at a time runs a mirror: a key set with NX
// and a TTL, renewed while the mirror runs. A crashed holder's lease
// expires after the TTL, or is taken over at once by a run that can tell
// the holder is gone (see AcquireLease).
type Lease struct {
	c        rueidis.Client
	kind     string
	name     string
	key      string
	holder   string
	ttl      time.Duration
	tookOver string

	stop chan struct{}
	done chan struct{}
	once sync.Once
	lost chan error
}

var (
	// renewScript extends the lease if this holder still owns it. A key
	// gone (expired while this process was paused or Redis unreachable,
	// or deleted) is lost as surely as one another process holds: another
	// run may have started, written and released it meanwhile, so it is
	// never taken again.
	renewScript = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return 0`)
	// takeOverScript replaces the lease of a holder that is gone, only if
	// that holder (ARGV[1], exactly) still has it: of two runs taking
	// over at once, one wins and the other finds it held by the winner.
	takeOverScript = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3]) return 1 end
return 0`)
	// releaseScript deletes the lease only if this holder still owns it.
	releaseScript = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)
)

// AcquireLease takes the lease of a mirror or fails with ErrLeaseHeld,
// naming the holder. It renews the lease every third of ttl until Release;
// Lost reports if another process took it meanwhile.
//
// A lease held by a process of this host (same boot, same pid namespace)
// that no longer exists, or whose pid now belongs to another process (an
// earlier incarnation of this one, restarted with its pid), is taken over
// at once, with a compare-and-set on that holder's exact value; TookOver
// then names it. A lease held by a running process, by another host, or
// where this system cannot tell (no /proc) is refused as long as it lasts.
func AcquireLease(ctx context.Context, c rueidis.Client, kind, name string, ttl time.Duration) (*Lease, error) {
	return acquireLease(ctx, c, kind, name, ttl, "")
}

// Reacquire takes the lease l was, again, for a run set up again after it
// lost l or stopped with it: as AcquireLease, and a key still holding l's
// own value (its release failed, Redis unreachable) is taken over at
// once, with a compare-and-set on that value, rather than refused as a
// running process's. l must be released or lost first.
func (l *Lease) Reacquire(ctx context.Context) (*Lease, error) {
	return acquireLease(ctx, l.c, l.kind, l.name, l.ttl, l.holder)
}

// Held tells whether the key still holds this lease (one GET).
func (l *Lease) Held(ctx context.Context) (bool, error) {
	v, err := l.c.Do(ctx, l.c.B().Get().Key(l.key).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read lease %s: %w", l.key, err)
	}
	return v == l.holder, nil
}

func acquireLease(ctx context.Context, c rueidis.Client, kind, name string, ttl time.Duration, previous string) (*Lease, error) {
	if ttl <= 0 {
		// The default is the mirror's (mirror.DefaultLeaseTTL): a caller
		// always says how long.
		return nil, fmt.Errorf("lease %s: TTL must be positive, got %s", LeaseKey(kind, name), ttl)
	}
	self := thisProcess()
	l := &Lease{
		c:      c,
		kind:   kind,
		name:   name,
		key:    LeaseKey(kind, name),
		holder: self.value(),
		ttl:    ttl,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		lost:   make(chan error, 1),
	}
	px := strconv.FormatInt(ttl.Milliseconds(), 10)
	// Each round fails only when the lease changed hands in between (it
	// expired, or another run took it over first), so a few suffice.
	for round := 0; ; round++ {
		err := c.Do(ctx, c.B().Set().Key(l.key).Value(l.holder).Nx().Px(ttl).Build()).Error()
		if err == nil {
			break
		}
		if !rueidis.IsRedisNil(err) {
			return nil, fmt.Errorf("take lease %s: %w", l.key, err)
		}
		old, err := c.Do(ctx, c.B().Get().Key(l.key).Build()).ToString()
		switch {
		case rueidis.IsRedisNil(err) && round < 3:
			continue // expired meanwhile
		case rueidis.IsRedisNil(err):
			return nil, fmt.Errorf("%w: mirror %q: lease %s kept changing hands while this run took it (other runs of the mirror starting at once?); run again", ErrLeaseHeld, name, l.key)
		case err != nil:
			return nil, fmt.Errorf("read lease %s: %w", l.key, err)
		}
		why, gone := self.mayTakeOver(parseHolder(old), processGone)
		if previous != "" && old == previous {
			why, gone = "", true // this process's own, from before
		}
		if gone && round < 3 {
			n, err := takeOverScript.Exec(ctx, c, []string{l.key}, []string{old, l.holder, px}).AsInt64()
			if err != nil {
				return nil, fmt.Errorf("take over lease %s from %s: %w", l.key, old, err)
			}
			if n == 1 {
				if old != previous {
					l.tookOver = old
				}
				break
			}
			continue
		}
		left, _ := c.Do(ctx, c.B().Pttl().Key(l.key).Build()).AsInt64()
		if why != "" {
			why += "; "
		}
		return nil, fmt.Errorf("%w: mirror %q is held by %s (%slease %s expires in %s); stop that process, or wait for the lease to expire if it crashed", ErrLeaseHeld, name, old, why, l.key, (time.Duration(left) * time.Millisecond).Round(time.Second))
	}
	go l.renew()
	return l, nil
}

// TookOver is the holder whose lease AcquireLease took over because that
// process was gone, or "" when the lease was free.
func (l *Lease) TookOver() string { return l.tookOver }

// Key is the lease's key.
func (l *Lease) Key() string { return l.key }

// process is who holds a lease: what the lease value records.
type process struct {
	host  string
	pid   int
	nonce string
	// start is when the process started (clock ticks since boot), boot
	// the kernel's boot ID and pidns its pid namespace: together with
	// the pid they name one process for good. Empty where the system
	// does not tell them (no /proc) or in a value of an older xmirror.
	start       uint64
	boot, pidns string
}

// value is the lease value: <host>:<pid>:<nonce>, as older versions wrote
// it (and display it), then start=, boot= and pidns= where known.
func (p process) value() string {
	v := fmt.Sprintf("%s:%d:%s", p.host, p.pid, p.nonce)
	if p.start != 0 && p.boot != "" && p.pidns != "" {
		v += fmt.Sprintf(" start=%d boot=%s pidns=%s", p.start, p.boot, p.pidns)
	}
	return v
}

// parseHolder reads a lease value; what it cannot read stays empty, which
// never allows a takeover.
func parseHolder(v string) process {
	var p process
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return p
	}
	head := fields[0]
	i := strings.LastIndexByte(head, ':')
	if i < 0 {
		return p
	}
	j := strings.LastIndexByte(head[:i], ':')
	if j < 0 {
		return p
	}
	pid, err := strconv.Atoi(head[j+1 : i])
	if err != nil || pid <= 0 {
		return p
	}
	p.host, p.pid, p.nonce = head[:j], pid, head[i+1:]
	for _, f := range fields[1:] {
		k, val, _ := strings.Cut(f, "=")
		switch k {
		case "start":
			p.start, _ = strconv.ParseUint(val, 10, 64)
		case "boot":
			p.boot = val
		case "pidns":
			p.pidns = val
		}
	}
	return p
}

// mayTakeOver tells whether self may take over a lease held by h: only
// when h is a process of the same host, boot and pid namespace, so that
// its pid means the same here, and gone says that process is no longer
// running. Otherwise it says why not. Containers sharing a hostname have
// pid namespaces of their own, so one never reads another's pid as its
// own.
func (self process) mayTakeOver(h process, gone func(pid int, start uint64) bool) (why string, ok bool) {
	switch {
	case self.boot == "" || self.pidns == "":
		return "", false // this system cannot tell: as before
	case h.start == 0 || h.boot == "" || h.pidns == "":
		return "", false // an older xmirror, or a system without /proc
	case h.host != self.host || h.boot != self.boot || h.pidns != self.pidns:
		return "another host or container", false
	case !gone(h.pid, h.start):
		return fmt.Sprintf("pid %d is running on this host", h.pid), false
	}
	return "", true
}

// thisProcess is this process as a lease records it.
func thisProcess() process {
	host, _ := os.Hostname()
	var nonce [4]byte
	rand.Read(nonce[:])
	p := process{host: host, pid: os.Getpid(), nonce: hex.EncodeToString(nonce[:])}
	p.start, p.boot, p.pidns = identify(p.pid)
	return p
}

func (l *Lease) renew() {
	defer close(l.done)
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
		n, err := renewScript.Exec(ctx, l.c, []string{l.key}, []string{l.holder, strconv.FormatInt(l.ttl.Milliseconds(), 10)}).AsInt64()
		cancel()
		// A renewal that fails (Redis unreachable) is retried at the next
		// tick: the mirror cannot commit anything meanwhile either. Once
		// Redis answers, a key that is not this holder's any more, or
		// gone, is lost at once.
		if err == nil && n == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
			holder, herr := l.c.Do(ctx, l.c.B().Get().Key(l.key).Build()).ToString()
			cancel()
			who := "held by " + holder
			if rueidis.IsRedisNil(herr) {
				who = "gone (it expired while this process was paused or cut off from Redis, or was deleted), so another run may have started"
			}
			l.lost <- fmt.Errorf("%w: lease %s is %s; stopping so that only one process writes", ErrLeaseLost, l.key, who)
			return
		}
	}
}

// Lost delivers an error if the lease was lost while running.
func (l *Lease) Lost() <-chan error { return l.lost }

// Release stops renewing and deletes the lease if this process still holds
// it, so the next run need not wait for it to expire.
func (l *Lease) Release(ctx context.Context) error {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	return releaseScript.Exec(ctx, l.c, []string{l.key}, []string{l.holder}).Error()
}
