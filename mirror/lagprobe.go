package mirror

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A LagProbe asks a mirror's servers how far behind it is, on connections
// of its own (a probe runs beside the mirror's run, which keeps its
// connections to itself), opened at its first use and kept until Close.
type LagProbe struct {
	// Connect opens the probe's Redis connection, and Kafka's when the
	// probe needs it (nil otherwise).
	ConnectRedis func(ctx context.Context) (rueidis.Client, error)
	ConnectKafka func(ctx context.Context) (*kgo.Client, error)
	// Inspect is the mirror's status, from which the lag is read.
	Inspect func(ctx context.Context, rc rueidis.Client, adm *kadm.Client, now time.Time) (Status, error)

	mu     sync.Mutex
	closed bool
	rc     rueidis.Client
	kc     *kgo.Client
	adm    *kadm.Client
}

// Lag is the mirror's lag in each stream or partition whose lag is known.
func (p *LagProbe) Lag(ctx context.Context) ([]Lag, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("the mirror's lag probe is closed")
	}
	if p.rc == nil {
		rc, err := p.ConnectRedis(ctx)
		if err != nil {
			return nil, err
		}
		p.rc = rc
	}
	if p.adm == nil && p.ConnectKafka != nil {
		kc, err := p.ConnectKafka(ctx)
		if err != nil {
			return nil, err
		}
		p.kc, p.adm = kc, kadm.NewClient(kc)
	}
	st, err := p.Inspect(ctx, p.rc, p.adm, time.Now())
	if err != nil {
		return nil, err
	}
	lags := make([]Lag, 0, len(st.Positions))
	for _, pos := range st.Positions {
		if pos.LagKnown {
			lags = append(lags, Lag{Stream: pos.Stream, Topic: pos.Topic, Partition: pos.Partition, Entries: pos.Lag})
		}
	}
	return lags, nil
}

// Close closes the probe's connections.
func (p *LagProbe) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.rc != nil {
		p.rc.Close()
		p.rc = nil
	}
	if p.kc != nil {
		p.kc.Close()
		p.kc, p.adm = nil, nil
	}
}
