package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// DefaultLeaseTTL is how long a crashed mirror blocks its name: long enough
// to ride out a stall of a few seconds, short enough for a quick restart.
const DefaultLeaseTTL = 15 * time.Second

// ErrLeaseHeld is returned (wrapped) when another process runs the mirror.
var ErrLeaseHeld = errors.New("mirror is already running")

// ErrLeaseLost is returned (wrapped) when a running mirror's lease was taken
// or expired: another process may be writing, so this one must stop.
var ErrLeaseLost = errors.New("lease lost")

// LeaseKey is the key of a mirror's lease.
func LeaseKey(kind, name string) string { return "xmirror:lease:" + kind + ":" + name }

// Lease makes sure one process at a time runs a mirror: a key set with NX
// and a TTL, renewed while the mirror runs. A crashed holder's lease
// expires after the TTL.
type Lease struct {
	c      rueidis.Client
	key    string
	holder string
	ttl    time.Duration

	stop chan struct{}
	done chan struct{}
	once sync.Once
	lost chan error
}

var (
	// renewScript extends the lease if this holder still owns it, and takes
	// it again if it expired meanwhile (Redis was unreachable or paused
	// longer than the TTL, and nobody else took it); it fails only when
	// another process holds it.
	renewScript = rueidis.NewLuaScript(`local h = redis.call("GET", KEYS[1])
if h == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
if not h then redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2]) return 1 end
return 0`)
	// releaseScript deletes the lease only if this holder still owns it.
	releaseScript = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)
)

// AcquireLease takes the lease of a mirror or fails with ErrLeaseHeld,
// naming the holder. It renews the lease every third of ttl until Release;
// Lost reports if another process took it meanwhile.
func AcquireLease(ctx context.Context, c rueidis.Client, kind, name string, ttl time.Duration) (*Lease, error) {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	host, _ := os.Hostname()
	var nonce [4]byte
	rand.Read(nonce[:])
	l := &Lease{
		c:      c,
		key:    LeaseKey(kind, name),
		holder: fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(nonce[:])),
		ttl:    ttl,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		lost:   make(chan error, 1),
	}
	err := c.Do(ctx, c.B().Set().Key(l.key).Value(l.holder).Nx().Px(ttl).Build()).Error()
	if rueidis.IsRedisNil(err) {
		holder, _ := c.Do(ctx, c.B().Get().Key(l.key).Build()).ToString()
		left, _ := c.Do(ctx, c.B().Pttl().Key(l.key).Build()).AsInt64()
		return nil, fmt.Errorf("%w: mirror %q is held by %s (lease %s expires in %s); stop that process, or wait for the lease to expire if it crashed", ErrLeaseHeld, name, holder, l.key, (time.Duration(left) * time.Millisecond).Round(time.Second))
	}
	if err != nil {
		return nil, fmt.Errorf("take lease %s: %w", l.key, err)
	}
	go l.renew()
	return l, nil
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
		// While Redis is unreachable the mirror cannot commit anything
		// either, so renewal failures are retried, not fatal: the lease
		// is lost only when another process holds it.
		if err == nil && n == 0 {
			holder, _ := l.c.Do(context.Background(), l.c.B().Get().Key(l.key).Build()).ToString()
			l.lost <- fmt.Errorf("%w: lease %s is now held by %s; stopping so that only one process writes", ErrLeaseLost, l.key, holder)
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
