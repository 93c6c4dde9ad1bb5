package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/internal/testenv"
)

func TestParseStatCountsFieldsFromTheLastParenthesis(t *testing.T) {
	rest := " 1 1 0 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000 10 18446744073709551615"
	tests := []struct {
		line  string
		state byte
		start uint64
		ok    bool
	}{
		{"42 (xmirror) S" + fmt.Sprintf(rest, 12345), 'S', 12345, true},
		{"42 (a b) (c)) Z" + fmt.Sprintf(rest, 7), 'Z', 7, true},
		{"42 (short) S 1 1", 0, 0, false},
		{"no parenthesis", 0, 0, false},
		{"42 (x) S" + strings.Replace(fmt.Sprintf(rest, 1), " 1 1000", " soon 1000", 1), 0, 0, false},
	}
	for _, tt := range tests {
		state, start, err := parseStat([]byte(tt.line))
		if (err == nil) != tt.ok || state != tt.state || start != tt.start {
			t.Errorf("parseStat(%q) = %c, %d, %v; want %c, %d, ok %v", tt.line, state, start, err, tt.state, tt.start, tt.ok)
		}
	}
}

// startOf is the start time of a process, from /proc.
func startOf(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	_, start, err := parseStat(b)
	if err != nil {
		t.Fatal(err)
	}
	return start
}

// holdAs writes a lease for name as held by p, for ttl.
func holdAs(t *testing.T, c rueidis.Client, name string, p process) string {
	t.Helper()
	key := LeaseKey(KindKafkaToRedis, name)
	if err := c.Do(context.Background(), c.B().Set().Key(key).Value(p.value()).Px(time.Minute).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(key).Build()) })
	return p.value()
}

func TestLeaseOfAGoneProcessOfThisHostIsTakenOverAtOnce(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	self := thisProcess()
	if self.boot == "" {
		t.Skip("no /proc: leases are only left to expire")
	}
	// A process that ran and is gone: its pid is free (or reused).
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	gone := self
	gone.pid, gone.nonce, gone.start = dead.Process.Pid, "00", self.start+1
	// This process's pid with another start time: an earlier
	// incarnation, as a container restarted in place would find.
	earlier := self
	earlier.nonce, earlier.start = "00", self.start-1

	for _, holder := range []process{gone, earlier} {
		name := testenv.Name(t, "m")
		old := holdAs(t, c, name, holder)
		l, err := AcquireLease(ctx, c, KindKafkaToRedis, name, time.Minute)
		if err != nil {
			t.Fatalf("lease held by %s: %v, want it taken over", old, err)
		}
		if l.TookOver() != old {
			t.Errorf("TookOver = %q, want %q", l.TookOver(), old)
		}
		if v, _ := c.Do(ctx, c.B().Get().Key(l.key).Build()).ToString(); v != l.holder {
			t.Errorf("lease holds %q, want %q", v, l.holder)
		}
		l.Release(ctx)
	}

	// Two runs taking over at once: one wins, the other is refused
	// because the winner is running.
	name := testenv.Name(t, "m")
	holdAs(t, c, name, gone)
	var wg sync.WaitGroup
	results := make([]error, 8)
	leases := make([]*Lease, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], results[i] = AcquireLease(ctx, c, KindKafkaToRedis, name, time.Minute)
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range results {
		switch {
		case err == nil:
			won++
			defer leases[i].Release(ctx)
		case !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "is running on this host"):
			t.Errorf("racing takeover %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d racing takeovers won, want 1", won)
	}
}

func TestLeaseOfARunningProcessOrAnotherHostIsRefused(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	self := thisProcess()
	if self.boot == "" {
		t.Skip("no /proc")
	}
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}

	at := func(p process, pid int, start uint64) process {
		p.pid, p.start, p.nonce = pid, start, "00"
		return p
	}
	otherBoot, otherNS, otherHost := self, self, self
	otherBoot.boot = "00000000-0000-0000-0000-000000000000"
	otherNS.pidns = "1"
	otherHost.host += "-elsewhere"
	tests := []struct {
		name   string
		holder process
		why    string
	}{
		{"this test process", at(self, os.Getpid(), self.start), "is running on this host"},
		{"another live process", at(self, live.Process.Pid, startOf(t, live.Process.Pid)), "is running on this host"},
		{"a dead pid on another boot", at(otherBoot, dead.Process.Pid, 1), "another host"},
		{"a dead pid in another pid namespace", at(otherNS, dead.Process.Pid, 1), "another host"},
		{"a dead pid on another host", at(otherHost, dead.Process.Pid, 1), "another host"},
		{"an older xmirror", process{host: self.host, pid: dead.Process.Pid, nonce: "00"}, "held by"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := testenv.Name(t, "m")
			old := holdAs(t, c, name, tt.holder)
			_, err := AcquireLease(ctx, c, KindKafkaToRedis, name, time.Minute)
			if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), old) {
				t.Fatalf("lease held by %s: %v; want ErrLeaseHeld naming it and saying %q", old, err, tt.why)
			}
			if v, _ := c.Do(ctx, c.B().Get().Key(LeaseKey(KindKafkaToRedis, name)).Build()).ToString(); v != old {
				t.Fatalf("lease now holds %q, want %q untouched", v, old)
			}
		})
	}
}

// A run set up again after its lease was released (or lost) takes back a
// key that still holds its own earlier value, left there because the
// release failed while Redis was unreachable: a fresh AcquireLease refuses
// it (the pid is this running process), Reacquire takes it over, and does
// not report it as a gone process's.
func TestReacquireTakesBackTheKeyOfItsOwnEarlierLease(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	if thisProcess().boot == "" {
		t.Skip("no /proc")
	}
	name := testenv.Name(t, "m")
	key := LeaseKey(KindKafkaToRedis, name)
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(key).Build()) })
	first, err := AcquireLease(ctx, c, KindKafkaToRedis, name, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	value, _ := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// As if the release had not reached Redis.
	if err := c.Do(ctx, c.B().Set().Key(key).Value(value).Px(time.Minute).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := AcquireLease(ctx, c, KindKafkaToRedis, name, time.Minute); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("a fresh AcquireLease of a key holding this process's earlier value: %v, want ErrLeaseHeld", err)
	}
	again, err := first.Reacquire(ctx)
	if err != nil {
		t.Fatalf("Reacquire: %v", err)
	}
	defer again.Release(ctx)
	if again.TookOver() != "" {
		t.Errorf("Reacquire reports taking over %q, its own earlier lease", again.TookOver())
	}
	if held, err := again.Held(ctx); err != nil || !held {
		t.Fatalf("Held after Reacquire: %v %v", held, err)
	}
	if held, _ := first.Held(ctx); held {
		t.Fatalf("the earlier lease still counts as held")
	}
}
