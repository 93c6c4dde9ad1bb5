package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/xmirror/xmirror/mirror"
)

// A LagReporter is a mirror that can tell how far behind it is, per
// stream or partition of its source.
type LagReporter interface {
	// Lag asks the servers now; it returns within ctx's deadline.
	Lag(ctx context.Context) ([]mirror.Lag, error)
}

// Defaults of PollLag.
const (
	// LagEvery is how often the lag is asked: often enough for an alert
	// within a scrape interval or two, seldom enough to cost the servers
	// nothing (one round trip per poll).
	LagEvery = 5 * time.Second
	// LagTimeout bounds one poll.
	LagTimeout = 3 * time.Second
)

// PollLag asks r for the mirror's lag at once and then every every, each
// ask bounded by timeout, and sets the xmirror_lag_entries series, until
// ctx ends. A stream or partition the last answer left out loses its
// series; a failed ask keeps the last figures and counts in
// xmirror_lag_errors_total. It sets nothing while m is not registered.
func (m *Mirror) PollLag(ctx context.Context, r LagReporter, every, timeout time.Duration) {
	set := map[[3]string]bool{} // the label values of the series set last
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		askCtx, cancel := context.WithTimeout(ctx, timeout)
		lags, err := r.Lag(askCtx)
		cancel()
		c := m.c.Load()
		switch {
		case ctx.Err() != nil:
			return
		case c == nil:
			// Not registered (yet, or any more): nothing to set.
		case err != nil:
			c.lagErrors.Inc()
		default:
			now := make(map[[3]string]bool, len(lags))
			for _, l := range lags {
				key := lagLabels(l)
				now[key] = true
				m.r.lag.WithLabelValues(m.labels[labelMirror], m.labels[labelDirection], key[0], key[1], key[2]).Set(float64(l.Entries))
			}
			for key := range set {
				if !now[key] {
					m.r.lag.DeleteLabelValues(m.labels[labelMirror], m.labels[labelDirection], key[0], key[1], key[2])
				}
			}
			set = now
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// lagLabels are the stream, topic and partition labels of l: a partition
// only beside its topic.
func lagLabels(l mirror.Lag) [3]string {
	partition := ""
	if l.Topic != "" {
		partition = strconv.Itoa(int(l.Partition))
	}
	return [3]string{l.Stream, l.Topic, partition}
}
