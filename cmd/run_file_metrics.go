package cmd

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/xmirror/xmirror/internal/metrics"
)

// fileMetrics are the metrics of a mirrors file's run: one registry and
// one server for the whole process. A mirror is measured from its start
// until a reload removes it from the file, or it starts again (its
// counters then start from zero); one that finished or failed keeps its
// series, its last figures, until then.
type fileMetrics struct {
	a   *app
	reg *metrics.Registry
	srv *metrics.Server

	mu      sync.Mutex
	mirrors map[string]*measured // by mirror name

	// probing is held (read) while /readyz probes: the probes of a
	// mirror that ended are closed (by closers) once none uses them, so
	// none connects again after its close.
	probing sync.RWMutex
	closers sync.WaitGroup
}

// measured is a mirror of the file whose series are served.
type measured struct {
	m *metrics.Mirror
	// ready are the conditions of its readiness while it runs: its
	// lease, its Redis and its brokers.
	ready []metrics.Probe
	// closeProbes closes the probes' connections; nil once closed.
	closeProbes func()
	// failed says why its run failed, once it has; "" while it runs or
	// once it finished.
	failed string
	ended  bool
}

// newFileMetrics is the metrics of a run whose file's mirrors are built
// into reg.
func newFileMetrics(a *app, reg *metrics.Registry) *fileMetrics {
	return &fileMetrics{a: a, reg: reg, mirrors: map[string]*measured{}}
}

// listen serves the metrics on addr, which from names in messages; a
// failure to listen is a runtime failure (exit 1).
func (f *fileMetrics) listen(addr, from string) error {
	srv, err := metrics.Listen(addr, metrics.Options{
		Gatherer: f.reg.Gatherer(),
		Ready:    []metrics.Probe{f.readiness},
		Logger:   f.a.logger(),
	})
	if err != nil {
		return fmt.Errorf("metrics (%s): %w", from, err)
	}
	f.srv = srv
	f.a.logger().Info("serving metrics", "url", "http://"+srv.Addr()+"/metrics")
	return nil
}

// close stops the server and closes every probe.
func (f *fileMetrics) close() {
	if f == nil {
		return
	}
	if f.srv != nil {
		f.srv.Close()
	}
	f.mu.Lock()
	for _, ms := range f.mirrors {
		f.closeProbes(ms)
	}
	f.mu.Unlock()
	f.closers.Wait()
}

// started registers the series of m, which starts now, in place of those
// of an earlier run of its name, and makes the probes of its readiness.
func (f *fileMetrics) started(m fileMirror) error {
	if f == nil || m.metrics == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forget(m.name)
	if err := m.metrics.Register(); err != nil {
		return err
	}
	redisProbe, closeRedis := metrics.RedisProbe(m.redis)
	kafkaProbe, closeKafka, err := metrics.KafkaProbe(m.kafka)
	if err != nil {
		closeRedis()
		m.metrics.Unregister()
		return fmt.Errorf("metrics: probe of the brokers: %w", err)
	}
	named := func(p metrics.Probe) metrics.Probe {
		return func(ctx context.Context) error {
			if err := p(ctx); err != nil {
				return fmt.Errorf("mirror %q: %w", m.name, err)
			}
			return nil
		}
	}
	f.mirrors[m.name] = &measured{m: m.metrics,
		ready:       []metrics.Probe{metrics.LeaseProbe(m.metrics), named(redisProbe), named(kafkaProbe)},
		closeProbes: func() { closeRedis(); closeKafka() },
	}
	return nil
}

// pollLag polls the lag of m's run, when it can tell it, until the
// returned stop is called (once the run ended, before the mirror is
// closed).
func (f *fileMetrics) pollLag(ctx context.Context, m fileMirror) (stop func()) {
	lr, ok := m.r.(metrics.LagReporter)
	if f == nil || m.metrics == nil || !ok {
		return func() {}
	}
	// Polled while the run drains too, as a mirror command's.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var polling sync.WaitGroup
	polling.Go(func() { m.metrics.PollLag(ctx, lr, metrics.LagEvery, metrics.LagTimeout) })
	return func() {
		cancel()
		polling.Wait()
	}
}

// ended records how the run of mirror name ended: failed says why it
// failed, "" when it did not. Its series stay.
func (f *fileMetrics) ended(name, failed string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ms, ok := f.mirrors[name]
	if !ok {
		return
	}
	ms.ended, ms.failed = true, failed
	f.closeProbes(ms)
}

// removed deletes the series of mirror name, which the file no longer
// has.
func (f *fileMetrics) removed(name string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forget(name)
}

// keepOnly deletes the series of every mirror keep refuses.
func (f *fileMetrics) keepOnly(keep func(name string) bool) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for name := range f.mirrors {
		if !keep(name) {
			f.forget(name)
		}
	}
}

// forget deletes the series of mirror name; f.mu is held.
func (f *fileMetrics) forget(name string) {
	ms, ok := f.mirrors[name]
	if !ok {
		return
	}
	f.closeProbes(ms)
	ms.m.Unregister()
	delete(f.mirrors, name)
}

// closeProbes closes the probes of ms once no /readyz uses them; f.mu is
// held.
func (f *fileMetrics) closeProbes(ms *measured) {
	closeProbes := ms.closeProbes
	ms.closeProbes, ms.ready = nil, nil
	if closeProbes == nil {
		return
	}
	f.closers.Go(func() {
		f.probing.Lock()
		defer f.probing.Unlock()
		closeProbes()
	})
}

// readiness holds when every mirror of the file that runs holds its
// lease and its Redis and brokers answer, and none failed; its error
// names each mirror that is not ready, in the order of their names.
func (f *fileMetrics) readiness(ctx context.Context) error {
	f.probing.RLock()
	defer f.probing.RUnlock()
	f.mu.Lock()
	names := make([]string, 0, len(f.mirrors))
	for name := range f.mirrors {
		names = append(names, name)
	}
	slices.Sort(names)
	var probes []metrics.Probe
	for _, name := range names {
		ms := f.mirrors[name]
		switch {
		case ms.failed != "":
			why := fmt.Errorf("mirror %q failed: %s", name, ms.failed)
			probes = append(probes, func(context.Context) error { return why })
		case !ms.ended:
			probes = append(probes, ms.ready...)
		}
	}
	f.mu.Unlock()
	return metrics.All(probes...)(ctx)
}
