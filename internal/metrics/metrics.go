// Package metrics gives a process of xmirror its Prometheus metrics and
// its health probes: a Registry of its own (never the global one) holding
// the mirrors' counters and gauges, fed by each mirror's Observer and by
// hooks of its Kafka clients (franz-go's kprom), and a Server for
// /metrics, /healthz and /readyz. The commands wire it in; nothing in it
// knows a command or a flag, so a process running several mirrors adds
// one Mirror each to one Registry.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
)

// Namespace prefixes every metric of xmirror; KafkaNamespace those of its
// Kafka clients.
const (
	Namespace      = "xmirror"
	KafkaNamespace = "xmirror_kafka"
)

// Label names. Every series of a mirror carries mirror and direction.
const (
	labelMirror    = "mirror"
	labelDirection = "direction"
)

// Unwritten reasons, as the reason label of xmirror_unwritten_entries_total
// names them (mirror.Unwritten's fields).
const (
	ReasonSkipped      = "skipped"
	ReasonDeadLettered = "dead_lettered"
	ReasonPresent      = "present"
	ReasonLost         = "lost"
)

// Error kinds, the kind label of xmirror_retries_total: few, so the
// series stay few whatever the errors say.
const (
	KindTimeout    = "timeout"    // a deadline passed: a server that does not answer
	KindConnection = "connection" // refused, reset, closed
	KindRedis      = "redis"      // an error reply of Redis (LOADING, READONLY, ...)
	KindKafka      = "kafka"      // an error code of a broker
	KindLease      = "lease"      // the mirror's lease lost or held by another run
	KindOther      = "other"
)

// A Registry holds the metrics of one process: its mirrors', their Kafka
// clients', and the Go runtime's and the process's own. Mirrors join and
// leave it while it serves (Mirror.Register, Mirror.Unregister): the
// series of every kind are shared by all the mirrors, told apart by their
// mirror and direction labels.
type Registry struct {
	reg *prometheus.Registry

	entries   *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	batches   *prometheus.CounterVec
	unwritten *prometheus.CounterVec
	retries   *prometheus.CounterVec
	lease     *prometheus.CounterVec
	lag       *prometheus.GaugeVec
	lagErrors *prometheus.CounterVec

	kafka *mirrorsKafka
}

// NewRegistry is a Registry with no mirror yet.
func NewRegistry() *Registry {
	mirrorLabels := []string{labelMirror, labelDirection}
	counter := func(name, help string, extra ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, append(mirrorLabels, extra...))
	}
	r := &Registry{
		reg:       prometheus.NewRegistry(),
		entries:   counter("entries_total", "Entries (records) written to the destination and committed."),
		bytes:     counter("bytes_total", "Payload bytes of the entries written and committed."),
		batches:   counter("batches_total", "Batches committed."),
		unwritten: counter("unwritten_entries_total", "Entries acknowledged without being written, by reason: skipped, dead_lettered, present (already at the destination), lost (gone from the source).", "reason"),
		retries:   counter("retries_total", "Transient failures retried, by the step that failed and the error's kind.", "step", "kind"),
		lease:     counter("lease_events_total", "Changes of the mirror's lease: taken, lost, released.", "event"),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "lag_entries",
			Help: "Entries (records) of the source not yet mirrored, per stream (redis-to-kafka) or partition (kafka-to-redis), as last polled."},
			append(mirrorLabels, "stream", "topic", "partition")),
		lagErrors: counter("lag_errors_total", "Lag polls that failed; the lag series keep their last figures."),
		kafka:     &mirrorsKafka{mirrors: map[*Mirror]struct{}{}},
	}
	r.reg.MustRegister(r.entries, r.bytes, r.batches, r.unwritten, r.retries, r.lease, r.lag, r.lagErrors, r.kafka,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Gatherer is what a scrape reads.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// A Mirror is the metrics of one mirror of the process. Its Observer and
// KafkaHooks feed it from the start, but its series are served only
// between Register and Unregister.
type Mirror struct {
	r      *Registry
	labels prometheus.Labels
	now    func() time.Time

	// c are the mirror's series of the shared counters, nil while it is
	// not registered: what it counts then is counted nowhere.
	c atomic.Pointer[counters]

	// The gauges worked out when scraped (see Collect).
	inFlight   atomic.Int64
	leaseHeld  atomic.Bool
	started    atomic.Bool
	lastCommit atomic.Int64 // unix nanoseconds of the last commit, or of the start before the first

	descInFlight, descLeaseHeld, descCkpAge *prometheus.Desc

	kafka *kafkaClients
}

// counters are a registered mirror's series of the Registry's counters.
type counters struct {
	entries, bytes, batches              prometheus.Counter
	skipped, deadLettered, present, lost prometheus.Counter
	leaseTaken, leaseLost, leaseReleased prometheus.Counter
	lagErrors                            prometheus.Counter
}

// NewMirror is the metrics of the mirror name, of direction
// ("redis-to-kafka", "kafka-to-redis"), not yet served: Register serves
// them.
func (r *Registry) NewMirror(name, direction string) *Mirror {
	l := prometheus.Labels{labelMirror: name, labelDirection: direction}
	desc := func(n, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", n), help, nil, l)
	}
	return &Mirror{r: r, labels: l,
		descInFlight:  desc("batches_in_flight", "Batches read whose commit is still to come: being written, waiting for the destination's confirmation, or for the commit."),
		descLeaseHeld: desc("lease_held", "1 while the run holds the mirror's lease, else 0 (starting, standing by, or set up again)."),
		descCkpAge:    desc("checkpoint_age_seconds", "Seconds since the run's last commit, or since it started while it has committed nothing; grows while there is nothing to mirror."),
		kafka:         newKafkaClients(),
		now:           time.Now,
	}
}

// Mirror is NewMirror registered at once, for a process of one mirror,
// whose name no other mirror of r has.
func (r *Registry) Mirror(name, direction string) *Mirror {
	m := r.NewMirror(name, direction)
	if err := m.Register(); err != nil {
		panic(err)
	}
	return m
}

// Register serves m's series, every counter from zero. It fails when a
// mirror of the same name and direction is registered: the one before
// must be unregistered first (a mirror restarted with new settings).
func (m *Mirror) Register() error {
	r, l := m.r, m.labels
	if err := r.reg.Register(m); err != nil {
		return fmt.Errorf("metrics of mirror %q (%s): %w", l[labelMirror], l[labelDirection], err)
	}
	name, direction := l[labelMirror], l[labelDirection]
	unwritten := func(reason string) prometheus.Counter {
		return r.unwritten.WithLabelValues(name, direction, reason)
	}
	lease := func(event string) prometheus.Counter { return r.lease.WithLabelValues(name, direction, event) }
	m.c.Store(&counters{
		entries: r.entries.With(l), bytes: r.bytes.With(l), batches: r.batches.With(l),
		skipped: unwritten(ReasonSkipped), deadLettered: unwritten(ReasonDeadLettered),
		present: unwritten(ReasonPresent), lost: unwritten(ReasonLost),
		leaseTaken: lease(mirror.LeaseTaken.String()), leaseLost: lease(mirror.LeaseLost.String()),
		leaseReleased: lease(mirror.LeaseReleased.String()),
		lagErrors:     r.lagErrors.With(l),
	})
	// Every series of a known step and kind from the start, at zero: a
	// first retry then shows as an increase, not as a new series.
	for _, step := range retrySteps {
		for _, kind := range kinds {
			r.retries.WithLabelValues(name, direction, step, kind)
		}
	}
	r.kafka.add(m)
	return nil
}

// Unregister deletes every series of m: a scrape no longer shows the
// mirror. Whatever watched its run must have stopped (its run ended, its
// lag no longer polled); a mirror of the same name can then be
// registered again.
func (m *Mirror) Unregister() {
	if m.c.Swap(nil) == nil {
		return
	}
	r := m.r
	r.kafka.remove(m)
	r.reg.Unregister(m)
	for _, v := range []*prometheus.MetricVec{r.entries.MetricVec, r.bytes.MetricVec, r.batches.MetricVec,
		r.unwritten.MetricVec, r.retries.MetricVec, r.lease.MetricVec, r.lag.MetricVec, r.lagErrors.MetricVec} {
		v.DeletePartialMatch(m.labels)
	}
}

// Name is the mirror's name, as its mirror label gives it.
func (m *Mirror) Name() string { return m.labels[labelMirror] }

// retrySteps are the steps a run retries (mirror.Retry.Step), as labels.
var retrySteps = []string{"read", "write", "commit", "set_up_again"}

var kinds = []string{KindTimeout, KindConnection, KindRedis, KindKafka, KindLease, KindOther}

// Describe and Collect make m the collector of its gauges that are worked
// out when scraped.
func (m *Mirror) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.descInFlight
	ch <- m.descLeaseHeld
	ch <- m.descCkpAge
}

func (m *Mirror) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.descInFlight, prometheus.GaugeValue, float64(m.inFlight.Load()))
	held := 0.0
	if m.leaseHeld.Load() {
		held = 1
	}
	ch <- prometheus.MustNewConstMetric(m.descLeaseHeld, prometheus.GaugeValue, held)
	if m.started.Load() {
		age := m.now().Sub(time.Unix(0, m.lastCommit.Load())).Seconds()
		ch <- prometheus.MustNewConstMetric(m.descCkpAge, prometheus.GaugeValue, max(age, 0))
	}
}

// LeaseHeld says whether the run holds the mirror's lease.
func (m *Mirror) LeaseHeld() bool { return m.leaseHeld.Load() }

// Observer is the observer that feeds m: counters and gauges only, so it
// costs the run's hot path next to nothing.
func (m *Mirror) Observer() *mirror.Observer {
	return &mirror.Observer{
		Started: func(mirror.Start) {
			if !m.started.Load() {
				m.lastCommit.Store(m.now().UnixNano())
				m.started.Store(true)
			}
		},
		Committed: func(cm mirror.Commit) {
			m.lastCommit.Store(m.now().UnixNano())
			c := m.c.Load()
			if c == nil {
				return
			}
			b := cm.Batch
			c.entries.Add(float64(b.Entries))
			c.bytes.Add(float64(b.Bytes))
			c.batches.Add(float64(b.Batches))
			for _, u := range []struct {
				c prometheus.Counter
				n int64
			}{{c.skipped, b.Skipped}, {c.deadLettered, b.DeadLettered}, {c.present, b.Present}, {c.lost, b.Lost}} {
				if u.n > 0 {
					u.c.Add(float64(u.n))
				}
			}
		},
		Retrying: func(r mirror.Retry) {
			if m.c.Load() == nil {
				return
			}
			m.r.retries.WithLabelValues(m.labels[labelMirror], m.labels[labelDirection], stepLabel(r.Step), Kind(r.Err)).Inc()
		},
		Lease: func(e mirror.LeaseEvent) {
			m.leaseHeld.Store(e.Kind == mirror.LeaseTaken)
			c := m.c.Load()
			if c == nil {
				return
			}
			switch e.Kind {
			case mirror.LeaseTaken:
				c.leaseTaken.Inc()
			case mirror.LeaseLost:
				c.leaseLost.Inc()
			case mirror.LeaseReleased:
				c.leaseReleased.Inc()
			}
		},
		InFlight: func(delta int) { m.inFlight.Add(int64(delta)) },
	}
}

// stepLabel is a retry's step as a label value: "set up again" is
// set_up_again.
func stepLabel(step string) string { return strings.ReplaceAll(step, " ", "_") }

// Kind sorts err into one of the Kind* values.
func Kind(err error) string {
	var re *rueidis.RedisError
	var ke *kerr.Error
	var ne net.Error
	var op *net.OpError
	switch {
	case err == nil:
		return KindOther
	case errors.Is(err, checkpoint.ErrLeaseLost), errors.Is(err, checkpoint.ErrLeaseHeld):
		return KindLease
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	case errors.As(err, &re) && !re.IsNil():
		return KindRedis
	case errors.As(err, &ke):
		return KindKafka
	case errors.As(err, &op), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, rueidis.ErrClosing):
		return KindConnection
	}
	return KindOther
}
