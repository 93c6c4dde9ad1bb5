package cmd

import (
	"context"
	"errors"
	"testing"

	"github.com/xmirror/xmirror/internal/metrics"
	"github.com/xmirror/xmirror/mirror"
)

// TestFileReadinessNamesEachMirrorNotReady: a file's run is ready when
// every mirror that runs holds its lease and reaches its servers, and none
// failed; the reason names each mirror that is not, in name order. A
// mirror that finished is no reason, and one removed is forgotten.
func TestFileReadinessNamesEachMirrorNotReady(t *testing.T) {
	reg := metrics.NewRegistry()
	f := newFileMetrics(&app{}, reg)
	add := func(name string, ready ...metrics.Probe) *metrics.Mirror {
		m := reg.Mirror(name, "redis-to-kafka")
		closed := false
		f.mirrors[name] = &measured{m: m, ready: append([]metrics.Probe{metrics.LeaseProbe(m)}, ready...),
			closeProbes: func() {
				if closed {
					t.Errorf("the probes of %s closed twice", name)
				}
				closed = true
			}}
		return m
	}
	redisDown := errors.New(`mirror "c": redis 127.0.0.1:1: no answer to PING within 2s`)
	var redis error
	c := add("c", func(context.Context) error { return redis })
	b := add("b")
	a := add("a")
	add("done")
	f.ended("done", "")
	check := func(want string) {
		t.Helper()
		got := "" // ready
		if err := f.readiness(context.Background()); err != nil {
			got = err.Error()
		}
		if got != want {
			t.Fatalf("readiness: %q, want %q", got, want)
		}
	}
	check(`mirror "a" does not hold its lease (starting, standing by, or setting up again); ` +
		`mirror "b" does not hold its lease (starting, standing by, or setting up again); ` +
		`mirror "c" does not hold its lease (starting, standing by, or setting up again)`)
	for _, m := range []*metrics.Mirror{a, b, c} {
		m.Observer().Lease(mirror.LeaseEvent{Kind: mirror.LeaseTaken})
	}
	check("")
	redis = redisDown
	check(redisDown.Error())
	redis = nil
	f.ended("b", "read stream \"s\": boom")
	check(`mirror "b" failed: read stream "s": boom`)
	f.removed("b")
	check("")
	f.close()
}
