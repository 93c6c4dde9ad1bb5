package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/rueidis/mock"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
)

// value is the value of the series name{labels} in g, and whether it is
// there; labels not given may have any value.
func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	found := false
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			found = true
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum, found
}

func mustValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := value(t, g, name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

func TestObserverCountsCommitsRetriesAndTheLease(t *testing.T) {
	r := NewRegistry()
	m := r.Mirror("orders>kafka", "redis-to-kafka")
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	obs := m.Observer()
	g := r.Gatherer()
	me := map[string]string{"mirror": "orders>kafka", "direction": "redis-to-kafka"}
	with := func(k, v string) map[string]string {
		l := map[string]string{k: v}
		for a, b := range me {
			l[a] = b
		}
		return l
	}

	if v := mustValue(t, g, "xmirror_lease_held", me); v != 0 {
		t.Fatalf("lease held %v before the run took it", v)
	}
	if _, ok := value(t, g, "xmirror_checkpoint_age_seconds", me); ok {
		t.Fatal("a checkpoint age before the run started")
	}
	obs.Lease(mirror.LeaseEvent{Kind: mirror.LeaseTaken})
	obs.Started(mirror.Start{Total: -1})
	obs.InFlight(1)
	obs.InFlight(1)
	now = now.Add(3 * time.Second)
	if v := mustValue(t, g, "xmirror_checkpoint_age_seconds", me); v != 3 {
		t.Fatalf("checkpoint age %v before the first commit, want 3 (since the start)", v)
	}
	obs.Committed(mirror.Commit{Batch: mirror.Stats{Entries: 10, Bytes: 100, Batches: 2,
		Unwritten: mirror.Unwritten{Skipped: 1, DeadLettered: 2, Present: 3, Lost: 4}}})
	obs.InFlight(-2)
	now = now.Add(1500 * time.Millisecond)
	obs.Committed(mirror.Commit{Batch: mirror.Stats{Entries: 5, Bytes: 50, Batches: 1}})
	now = now.Add(500 * time.Millisecond)
	obs.Retrying(mirror.Retry{Step: "set up again", Err: fmt.Errorf("take lease: %w", checkpoint.ErrLeaseHeld)})
	obs.Retrying(mirror.Retry{Step: "read", Err: context.DeadlineExceeded})

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"xmirror_entries_total", me, 15},
		{"xmirror_bytes_total", me, 150},
		{"xmirror_batches_total", me, 3},
		{"xmirror_unwritten_entries_total", with("reason", "skipped"), 1},
		{"xmirror_unwritten_entries_total", with("reason", "dead_lettered"), 2},
		{"xmirror_unwritten_entries_total", with("reason", "present"), 3},
		{"xmirror_unwritten_entries_total", with("reason", "lost"), 4},
		{"xmirror_retries_total", with("step", "set_up_again"), 1},
		{"xmirror_retries_total", with("kind", "timeout"), 1},
		{"xmirror_lease_events_total", with("event", "taken"), 1},
		{"xmirror_lease_held", me, 1},
		{"xmirror_batches_in_flight", me, 0},
		{"xmirror_checkpoint_age_seconds", me, 0.5},
	} {
		if got := mustValue(t, g, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if v := mustValue(t, g, "xmirror_retries_total", with("kind", "lease")); v != 1 {
		t.Errorf("the lease held by another run counted %v times as kind lease", v)
	}
	obs.Lease(mirror.LeaseEvent{Kind: mirror.LeaseLost})
	if v := mustValue(t, g, "xmirror_lease_held", me); v != 0 || m.LeaseHeld() {
		t.Fatalf("lease held %v after it was lost", v)
	}
	// Two mirrors of one process: each its own series.
	other := r.Mirror("back", "kafka-to-redis")
	other.Observer().Committed(mirror.Commit{Batch: mirror.Stats{Entries: 7, Batches: 1}})
	if v := mustValue(t, g, "xmirror_entries_total", map[string]string{"mirror": "back"}); v != 7 {
		t.Fatalf("the second mirror's entries %v, want 7", v)
	}
	if v := mustValue(t, g, "xmirror_entries_total", me); v != 15 {
		t.Fatalf("the first mirror's entries %v after the second's commit, want 15", v)
	}
}

func TestMetricNamesFollowPrometheusConventions(t *testing.T) {
	r := NewRegistry()
	m := r.Mirror("m", "redis-to-kafka")
	m.Observer().Started(mirror.Start{})
	m.Observer().Retrying(mirror.Retry{Step: "read", Err: errors.New("x")})
	fams, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), Namespace+"_") && !strings.HasPrefix(f.GetName(), KafkaNamespace+"_") {
			ours = append(ours, f.GetName())
		}
	}
	if len(ours) < 10 {
		t.Fatalf("only %v of xmirror's metrics gathered", ours)
	}
	problems, err := testutil.GatherAndLint(r.Gatherer(), ours...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := value(t, r.Gatherer(), name, nil); !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
}

func TestKindSortsErrorsIntoFewKinds(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("read: %w", context.DeadlineExceeded), KindTimeout},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, KindConnection},
		{fmt.Errorf("write: %w", io.ErrUnexpectedEOF), KindConnection},
		{fmt.Errorf("commit: %w", kerr.NotLeaderForPartition), KindKafka},
		{fmt.Errorf("xreadgroup: %w", mock.Result(mock.RedisError("LOADING Redis is loading the dataset in memory")).Error()), KindRedis},
		{fmt.Errorf("renew: %w", checkpoint.ErrLeaseLost), KindLease},
		{errors.New("something else"), KindOther},
	} {
		if got := Kind(c.err); got != c.want {
			t.Errorf("Kind(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// lagAnswers is a LagReporter that gives its answers in turn, the last
// one for ever.
type lagAnswers struct {
	mu      sync.Mutex
	answers []lagAnswer
	asked   int
	gotCtx  chan time.Duration // the time left of each ask's context
}

type lagAnswer struct {
	lags []mirror.Lag
	err  error
}

func (l *lagAnswers) Lag(ctx context.Context) ([]mirror.Lag, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		select {
		case l.gotCtx <- time.Until(d):
		default:
		}
	}
	a := l.answers[min(l.asked, len(l.answers)-1)]
	l.asked++
	return a.lags, a.err
}

func (l *lagAnswers) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.asked
}

func TestPollLagSetsDropsAndKeepsLagSeries(t *testing.T) {
	r := NewRegistry()
	m := r.Mirror("m", "kafka-to-redis")
	g := r.Gatherer()
	fake := &lagAnswers{gotCtx: make(chan time.Duration, 1), answers: []lagAnswer{
		{lags: []mirror.Lag{{Topic: "orders", Partition: 0, Entries: 5}, {Topic: "orders", Partition: 1, Entries: 7}}},
		{lags: []mirror.Lag{{Topic: "orders", Partition: 1, Entries: 2}}},
		{err: errors.New("broker down")},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.PollLag(ctx, fake, 10*time.Millisecond, time.Second) }()

	if left := <-fake.gotCtx; left <= 0 || left > time.Second {
		t.Fatalf("an ask had %s left, want it bounded by the timeout", left)
	}
	p0 := map[string]string{"topic": "orders", "partition": "0", "stream": ""}
	p1 := map[string]string{"topic": "orders", "partition": "1", "stream": ""}
	wait(t, "the lag polled three times and failed", func() bool { return fake.count() >= 4 })
	if _, ok := value(t, g, "xmirror_lag_entries", p0); ok {
		t.Error("partition 0 keeps a lag series after an answer without it")
	}
	if v := mustValue(t, g, "xmirror_lag_entries", p1); v != 2 {
		t.Errorf("partition 1 lag %v after failed polls, want the last figure 2", v)
	}
	if v := mustValue(t, g, "xmirror_lag_errors_total", map[string]string{"mirror": "m"}); v < 1 {
		t.Errorf("lag errors %v, want the failed polls counted", v)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("PollLag did not return once its context ended")
	}
}

func TestPollLagNamesAStreamWithoutAPartition(t *testing.T) {
	r := NewRegistry()
	m := r.Mirror("m", "redis-to-kafka")
	fake := &lagAnswers{gotCtx: make(chan time.Duration, 1), answers: []lagAnswer{{lags: []mirror.Lag{{Stream: "orders", Entries: 3}}}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.PollLag(ctx, fake, time.Hour, time.Second)
	wait(t, "the first poll", func() bool {
		_, ok := value(t, r.Gatherer(), "xmirror_lag_entries", map[string]string{"stream": "orders", "topic": "", "partition": ""})
		return ok
	})
	if v := mustValue(t, r.Gatherer(), "xmirror_lag_entries", map[string]string{"stream": "orders"}); v != 3 {
		t.Fatalf("lag of stream orders %v, want 3", v)
	}
}

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newClient is a client that dials nothing until asked (none is here),
// with the mirror's Kafka hooks.
func newClient(t *testing.T, m *Mirror) (*kgo.Client, *kprom.Metrics) {
	t.Helper()
	hooks := m.KafkaHooks()
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.WithHooks(hooks...))
	if err != nil {
		t.Fatal(err)
	}
	return cl, hooks[0].(*kprom.Metrics)
}

func TestKafkaMetricsAddUpTheClientsAndKeepWhatClosedOnesCounted(t *testing.T) {
	r := NewRegistry()
	m := r.Mirror("m", "redis-to-kafka")
	g := r.Gatherer()
	connects := func() float64 {
		v, _ := value(t, g, "xmirror_kafka_connects_total", map[string]string{"mirror": "m", "direction": "redis-to-kafka"})
		return v
	}
	a, am := newClient(t, m)
	b, bm := newClient(t, m)
	defer b.Close()
	meta := kgo.BrokerMetadata{NodeID: 1, Host: "127.0.0.1", Port: 1}
	am.OnBrokerConnect(meta, 0, nil, nil)
	bm.OnBrokerConnect(meta, 0, nil, nil)
	bm.OnBrokerConnect(meta, 0, nil, nil)
	if got := connects(); got != 3 {
		t.Fatalf("connects %v of two clients, want 3", got)
	}
	a.Close()
	if got := connects(); got != 3 {
		t.Fatalf("connects %v once a client closed, want still 3", got)
	}
	c, cm := newClient(t, m)
	defer c.Close()
	cm.OnBrokerConnect(meta, 0, nil, nil)
	if got := connects(); got != 4 {
		t.Fatalf("connects %v with a client replaced, want 4", got)
	}
	if _, ok := value(t, g, "xmirror_kafka_buffered_produce_records_total", nil); !ok {
		t.Error("no gauge of the live clients' buffers")
	}
}

func TestServerAnswersProbesAndMetrics(t *testing.T) {
	r := NewRegistry()
	m := r.Mirror("m", "redis-to-kafka")
	var mu sync.Mutex
	redisDown := errors.New("redis 127.0.0.1:1: no answer to PING within 2s")
	var redis error
	s, err := Listen("127.0.0.1:0", Options{Gatherer: r.Gatherer(), Ready: []Probe{
		LeaseProbe(m),
		func(context.Context) error { mu.Lock(); defer mu.Unlock(); return redis },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, `mirror "m" does not hold its lease`) {
		t.Fatalf("/readyz before the lease: %d %q", code, body)
	}
	m.Observer().Lease(mirror.LeaseEvent{Kind: mirror.LeaseTaken})
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz with the lease held: %d %q", code, body)
	}
	mu.Lock()
	redis = redisDown
	mu.Unlock()
	code, body := get("/readyz")
	if code != 503 || strings.Count(strings.TrimSpace(body), "\n") != 0 || !strings.Contains(body, redisDown.Error()) {
		t.Fatalf("/readyz with Redis down: %d %q, want 503 and one line naming it", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `xmirror_lease_held{direction="redis-to-kafka",mirror="m"} 1`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	s.Close()
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Fatal("the server still answers once closed")
	}
}

func TestListenOnAnAddressInUseSaysSo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(ln.Addr().String(), Options{Gatherer: NewRegistry().Gatherer()})
	if err == nil || !strings.Contains(err.Error(), "cannot listen on "+ln.Addr().String()) || !strings.Contains(err.Error(), "another process listens there") {
		t.Fatalf("err = %v, want the address named and in use", err)
	}
}

// TestMirrorsJoinAndLeaveOneRegistry: mirrors of one process register
// into one registry, each its own series; one unregistered leaves no
// series behind (its counters, gauges, lag and Kafka clients'), the
// others keep theirs, and a mirror of its name can register again,
// counting from zero. Two at once of one name are refused, and a mirror
// not registered counts nowhere.
func TestMirrorsJoinAndLeaveOneRegistry(t *testing.T) {
	r := NewRegistry()
	g := r.Gatherer()
	a, b := r.NewMirror("a", "redis-to-kafka"), r.NewMirror("b", "kafka-to-redis")
	a.Observer().Committed(mirror.Commit{Batch: mirror.Stats{Entries: 100, Batches: 1}})
	for _, m := range []*Mirror{a, b} {
		if err := m.Register(); err != nil {
			t.Fatal(err)
		}
	}
	meA, meB := map[string]string{"mirror": "a"}, map[string]string{"mirror": "b"}
	if v := mustValue(t, g, "xmirror_entries_total", meA); v != 0 {
		t.Fatalf("entries of a %v: a commit before the mirror registered was counted", v)
	}
	a.Observer().Committed(mirror.Commit{Batch: mirror.Stats{Entries: 3, Batches: 1, Unwritten: mirror.Unwritten{Skipped: 1}}})
	a.Observer().Lease(mirror.LeaseEvent{Kind: mirror.LeaseTaken})
	b.Observer().Committed(mirror.Commit{Batch: mirror.Stats{Entries: 5, Batches: 1}})
	fake := &lagAnswers{gotCtx: make(chan time.Duration, 1), answers: []lagAnswer{{lags: []mirror.Lag{{Stream: "s", Entries: 2}}}}}
	ctx, cancel := context.WithCancel(context.Background())
	polled := make(chan struct{})
	go func() { defer close(polled); a.PollLag(ctx, fake, time.Hour, time.Second) }()
	wait(t, "a's lag", func() bool { _, ok := value(t, g, "xmirror_lag_entries", meA); return ok })
	cancel()
	<-polled
	cl, km := newClient(t, a)
	km.OnBrokerConnect(kgo.BrokerMetadata{NodeID: 1, Host: "127.0.0.1", Port: 1}, 0, nil, nil)
	cl.Close()
	bc, bkm := newClient(t, b)
	defer bc.Close()
	bkm.OnBrokerConnect(kgo.BrokerMetadata{NodeID: 1, Host: "127.0.0.1", Port: 1}, 0, nil, nil)
	if v := mustValue(t, g, "xmirror_kafka_connects_total", meA); v != 1 {
		t.Fatalf("a's Kafka connects %v, want 1", v)
	}
	if err := r.NewMirror("a", "redis-to-kafka").Register(); err == nil {
		t.Fatal("a second mirror a registered beside the first")
	}

	a.Unregister()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "mirror" && l.GetValue() == "a" {
					t.Errorf("%s keeps a series of the unregistered mirror a: %v", f.GetName(), m.GetLabel())
				}
			}
		}
	}
	if v := mustValue(t, g, "xmirror_entries_total", meB); v != 5 {
		t.Errorf("entries of b %v once a left, want 5", v)
	}
	if _, ok := value(t, g, "xmirror_kafka_connects_total", meB); !ok {
		t.Error("b's Kafka series went with a's")
	}
	if _, ok := value(t, g, "xmirror_lease_held", meB); !ok {
		t.Error("b's gauges went with a's")
	}

	again := r.NewMirror("a", "redis-to-kafka")
	if err := again.Register(); err != nil {
		t.Fatalf("mirror a registered again: %v", err)
	}
	again.Observer().Committed(mirror.Commit{Batch: mirror.Stats{Entries: 2, Batches: 1}})
	if v := mustValue(t, g, "xmirror_entries_total", meA); v != 2 {
		t.Errorf("entries of a registered again %v, want 2 (from zero)", v)
	}
	if v := mustValue(t, g, "xmirror_retries_total", meA); v != 0 {
		t.Errorf("retries of a registered again %v, want its series at zero", v)
	}
}

func TestAllJoinsTheReasonsOfTheProbesThatFail(t *testing.T) {
	ok := func(context.Context) error { return nil }
	fail := func(why string) Probe { return func(context.Context) error { return errors.New(why) } }
	if err := All(ok, ok)(context.Background()); err != nil {
		t.Fatalf("All of probes that hold: %v", err)
	}
	if err := All()(context.Background()); err != nil {
		t.Fatalf("All of no probe: %v", err)
	}
	if err := All(fail("x down"), ok, fail("y down"))(context.Background()); err == nil || err.Error() != "x down; y down" {
		t.Fatalf("All: %v, want both reasons in order", err)
	}
}
