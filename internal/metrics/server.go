package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/endpoint"
)

// Time bounds of the server.
const (
	// ReadyTimeout bounds the servers' checks of one /readyz: a Redis or
	// broker slower than this to answer a PING is as good as down for a
	// probe (Kubernetes waits a second by default; see the README).
	ReadyTimeout = 2 * time.Second
	// ShutdownTimeout bounds how long a stopping server lets requests
	// under way finish before it closes their connections.
	ShutdownTimeout = 2 * time.Second
	// readHeaderTimeout and writeTimeout keep a slow or stuck client from
	// holding a connection.
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 30 * time.Second
)

// A Probe is one condition of readiness: nil when it holds, else why not,
// in one line. It returns within ctx's deadline.
type Probe func(ctx context.Context) error

// Options shape a Server.
type Options struct {
	// Gatherer is what /metrics serves.
	Gatherer prometheus.Gatherer
	// Ready are the conditions of /readyz, checked together on each
	// request, each within ReadyTimeout.
	Ready []Probe
	// Logger receives what goes wrong serving; nil logs nothing.
	Logger *slog.Logger
}

// A Server serves /metrics, /healthz and /readyz.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen binds addr (host:port; port 0 picks a free one) and serves o
// there until Close. A failure to bind is an error naming addr, with a
// hint where the cause is plain.
func Listen(addr string, o Options) (*Server, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
		// A series that cannot be gathered is left out, not the scrape.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slogPrinter{log},
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(r.Context(), o.Ready); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+oneLine(err.Error()))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s := &Server{ln: ln, done: make(chan struct{}), srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on, its port chosen when the
// one asked for was 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server: requests under way get ShutdownTimeout to
// finish, then their connections are closed.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if s.srv.Shutdown(ctx) != nil {
		s.srv.Close()
	}
	<-s.done
}

// listenError says why addr cannot be listened on.
func listenError(addr string, err error) error {
	hint := ""
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = "; another process listens there: choose another address or stop it"
	case errors.Is(err, syscall.EACCES):
		hint = "; a port below 1024 needs privileges: choose a higher one"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = "; no interface of this host has that address: give one of its own, or none (\":9464\") for all"
	case strings.Contains(err.Error(), "no such host"):
		hint = "; unknown host: give an address of this host"
	}
	return fmt.Errorf("cannot listen on %s: %w%s", addr, err, hint)
}

// ready checks every probe at once, within ReadyTimeout.
func ready(ctx context.Context, probes []Probe) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	return All(probes...)(ctx)
}

// All is the probe that holds when every one of probes holds. It checks
// them at once and joins the reasons of those that failed, in the order
// of probes.
func All(probes ...Probe) Probe {
	return func(ctx context.Context) error {
		errs := make([]error, len(probes))
		var wg sync.WaitGroup
		for i, p := range probes {
			wg.Go(func() { errs[i] = p(ctx) })
		}
		wg.Wait()
		var why []string
		for _, err := range errs {
			if err != nil {
				why = append(why, err.Error())
			}
		}
		if len(why) == 0 {
			return nil
		}
		return errors.New(strings.Join(why, "; "))
	}
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }

// slogPrinter is promhttp's error log on a slog.Logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// LeaseProbe holds while m's run holds its lease.
func LeaseProbe(m *Mirror) Probe {
	return func(context.Context) error {
		if m.LeaseHeld() {
			return nil
		}
		return fmt.Errorf("mirror %q does not hold its lease (starting, standing by, or setting up again)", m.labels[labelMirror])
	}
}

// RedisProbe holds while Redis answers a PING. It has a connection of its
// own, made at the first probe (and again after one failed to connect),
// so the probe never waits behind the mirror's commands; stop closes it.
func RedisProbe(ep endpoint.Redis) (probe Probe, stop func()) {
	var mu sync.Mutex
	var client rueidis.Client
	get := func(ctx context.Context) (rueidis.Client, error) {
		mu.Lock()
		c := client
		mu.Unlock()
		if c != nil {
			return c, nil
		}
		deadline, _ := ctx.Deadline()
		c, err := ep.Connect(ctx, time.Until(deadline))
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if client != nil {
			c.Close() // another probe connected meanwhile
			return client, nil
		}
		client = c
		return c, nil
	}
	probe = func(ctx context.Context) error {
		c, err := get(ctx)
		if err != nil {
			return err
		}
		if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("redis %s: no answer to PING within %s", ep.Addr(), ReadyTimeout)
			}
			return fmt.Errorf("redis %s: PING: %w", ep.Addr(), err)
		}
		return nil
	}
	stop = func() {
		mu.Lock()
		defer mu.Unlock()
		if client != nil {
			client.Close()
			client = nil
		}
	}
	return probe, stop
}

// KafkaProbe holds while a broker answers a metadata request (franz-go's
// Ping), with a client of its own and none of the mirror's hooks, so its
// requests count in no metric of the mirror; stop closes it.
func KafkaProbe(ep endpoint.Kafka) (probe Probe, stop func(), err error) {
	ep.NewHooks = nil
	cl, err := kgo.NewClient(ep.ClientOpts()...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka %s: %w", ep, err)
	}
	probe = func(ctx context.Context) error {
		if err := cl.Ping(ctx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("kafka %s: no answer to a metadata request within %s", ep, ReadyTimeout)
			}
			return ep.Explain(err)
		}
		return nil
	}
	return probe, cl.Close, nil
}
