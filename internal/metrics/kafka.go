package metrics

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// kafkaClients are the kprom metrics of a mirror's Kafka clients, added
// up: a mirror has several clients at once (an admin, a producer or a
// consumer, a reader of what an interrupted run wrote) and replaces them
// when it is set up again, while kprom's metrics belong to one client
// each (a second client on one kprom.Metrics would register its series
// twice). Each client gets a kprom.Metrics of its own, registered nowhere;
// a scrape adds up the live clients' series and what closed clients
// counted, so a counter never goes back when a client is replaced.
type kafkaClients struct {
	mu      sync.Mutex
	live    map[*kprom.Metrics]*prometheus.Registry
	retired map[string]*series // counters of closed clients, by seriesKey
}

func newKafkaClients() *kafkaClients {
	return &kafkaClients{live: map[*kprom.Metrics]*prometheus.Registry{}, retired: map[string]*series{}}
}

// hooks are the hooks of one new client.
func (k *kafkaClients) hooks() []kgo.Hook {
	// Registry(nil): the metrics are made but registered nowhere; kprom
	// sets them up in OnNewClient, which runs before tracker's.
	km := kprom.NewMetrics(KafkaNamespace, kprom.Registry(nil),
		// Records and batches too, not only bytes: what a mirror's
		// operator counts.
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Batches, kprom.Records, kprom.CompressedBytes, kprom.UncompressedBytes))
	return []kgo.Hook{km, &tracker{k: k, km: km}}
}

// KafkaHooks are the hooks that give a new Kafka client of the mirror its
// metrics (endpoint.Kafka.NewHooks).
func (m *Mirror) KafkaHooks() []kgo.Hook { return m.kafka.hooks() }

// tracker adds a client's metrics to the sum while the client lives.
type tracker struct {
	k  *kafkaClients
	km *kprom.Metrics
}

func (t *tracker) OnNewClient(*kgo.Client) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(t.km); err != nil {
		return // a client without metrics rather than a run that stops
	}
	t.k.mu.Lock()
	t.k.live[t.km] = reg
	t.k.mu.Unlock()
}

func (t *tracker) OnClientClosed(*kgo.Client) {
	t.k.mu.Lock()
	defer t.k.mu.Unlock()
	reg, ok := t.k.live[t.km]
	if !ok {
		return
	}
	delete(t.k.live, t.km)
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetType() != dto.MetricType_COUNTER {
			continue // gauges of a closed client (its buffers) are gone with it
		}
		for _, m := range f.GetMetric() {
			add(t.k.retired, f, m)
		}
	}
}

// series is one series of the sum.
type series struct {
	name, help string
	typ        prometheus.ValueType
	names      []string // label names
	values     []string
	value      float64
}

func seriesKey(name string, values []string) string {
	return name + "\xff" + strings.Join(values, "\xff")
}

// add adds metric m of family f to sum.
func add(sum map[string]*series, f *dto.MetricFamily, m *dto.Metric) {
	var typ prometheus.ValueType
	var v float64
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		typ, v = prometheus.CounterValue, m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		typ, v = prometheus.GaugeValue, m.GetGauge().GetValue()
	default:
		return // xmirror enables none of kprom's histograms
	}
	var names, values []string
	for _, l := range m.GetLabel() {
		names = append(names, l.GetName())
		values = append(values, l.GetValue())
	}
	key := seriesKey(f.GetName(), values)
	if s, ok := sum[key]; ok {
		s.value += v
		return
	}
	sum[key] = &series{name: f.GetName(), help: f.GetHelp(), typ: typ, names: names, values: values, value: v}
}

// mirrorsKafka is the collector of the Kafka clients' metrics of every
// registered mirror, each series labelled with its mirror. One collector
// for all, registered with the Registry: the series depend on the clients
// and the brokers, so it is an unchecked collector, and a registry cannot
// unregister one of those.
type mirrorsKafka struct {
	mu      sync.Mutex
	mirrors map[*Mirror]struct{}
}

func (k *mirrorsKafka) add(m *Mirror) {
	k.mu.Lock()
	k.mirrors[m] = struct{}{}
	k.mu.Unlock()
}

func (k *mirrorsKafka) remove(m *Mirror) {
	k.mu.Lock()
	delete(k.mirrors, m)
	k.mu.Unlock()
}

// Describe sends nothing: k is an unchecked collector.
func (k *mirrorsKafka) Describe(chan<- *prometheus.Desc) {}

func (k *mirrorsKafka) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	ms := make([]*Mirror, 0, len(k.mirrors))
	for m := range k.mirrors {
		ms = append(ms, m)
	}
	k.mu.Unlock()
	for _, m := range ms {
		m.kafka.collect(ch, m.labels)
	}
}

// collect sends the sum of k's clients' series, each with the labels of
// its mirror.
func (k *kafkaClients) collect(ch chan<- prometheus.Metric, mirrorLabels prometheus.Labels) {
	k.mu.Lock()
	sum := make(map[string]*series, len(k.retired))
	for key, s := range k.retired {
		c := *s
		sum[key] = &c
	}
	for _, reg := range k.live {
		fams, _ := reg.Gather()
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				add(sum, f, m)
			}
		}
	}
	k.mu.Unlock()
	descs := map[string]*prometheus.Desc{}
	keys := make([]string, 0, len(sum))
	for key := range sum {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		s := sum[key]
		dk := s.name + "\xff" + strings.Join(s.names, "\xff")
		d, ok := descs[dk]
		if !ok {
			d = prometheus.NewDesc(s.name, s.help, s.names, mirrorLabels)
			descs[dk] = d
		}
		if m, err := prometheus.NewConstMetric(d, s.typ, s.value, s.values...); err == nil {
			ch <- m
		}
	}
}
