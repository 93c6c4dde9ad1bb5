package cmd

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/metrics"
	"github.com/xmirror/xmirror/mirror"
)

// envMetricsAddr stands in for --metrics-addr.
const envMetricsAddr = "XMIRROR_METRICS_ADDR"

// metricsOptions are a mirror command's --metrics-addr and, once the run
// is prepared, its metrics.
type metricsOptions struct {
	addr string

	// ofFile marks a mirror of a mirrors file: the run command resolves
	// the address and serves the metrics of all the file's mirrors, in
	// its registry reg (nil: it serves none).
	ofFile bool
	reg    *metrics.Registry
	mirror *metrics.Mirror // nil without metrics
}

func (o *metricsOptions) bind(c *cobra.Command) {
	c.Flags().StringVar(&o.addr, "metrics-addr", "", "serve Prometheus /metrics, /healthz and /readyz on HOST:PORT while the run lasts, e.g. :9464 (env "+envMetricsAddr+"; default none)")
}

// resolve applies the environment to --metrics-addr and reports what is
// wrong with it.
func (o *metricsOptions) resolve(a *app, c *cobra.Command) []string {
	if o.ofFile {
		return nil
	}
	from := "--metrics-addr"
	if !c.Flags().Changed("metrics-addr") {
		from = envMetricsAddr
	}
	o.addr = a.envOr(c, "metrics-addr", envMetricsAddr, o.addr)
	if o.addr == "" {
		if c.Flags().Changed("metrics-addr") {
			return []string{"--metrics-addr must not be empty; leave it out to serve no metrics"}
		}
		return nil
	}
	if p := metricsAddrProblem(o.addr); p != "" {
		return []string{from + " " + p}
	}
	return nil
}

// metricsAddrProblem says what is wrong with addr as a metrics address,
// after the name of what gave it; "" when nothing is.
func metricsAddrProblem(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("%q must be HOST:PORT or :PORT, with a port from 0 to 65535", addr)
	}
	return ""
}

// watch prepares the run's metrics, when there are any: their observer
// joins cfg's, and every Kafka client of the run gets their hooks. A
// mirror command's own are registered at once; a file's mirror's are
// registered when the run command starts it.
func (o *metricsOptions) watch(cfg *mirror.RunConfig, direction string, kafka *endpoint.Kafka) {
	switch {
	case o.ofFile && o.reg == nil, !o.ofFile && o.addr == "":
		return
	case o.ofFile:
		o.mirror = o.reg.NewMirror(cfg.Name, direction)
	default:
		o.reg = metrics.NewRegistry()
		o.mirror = o.reg.Mirror(cfg.Name, direction)
	}
	cfg.Observer = mirror.Observers(cfg.Observer, o.mirror.Observer())
	kafka.NewHooks = o.mirror.KafkaHooks
}

// serve starts the metrics server before m runs, so probes answer during
// its start-up, and polls m's lag when m can tell it; stop shuts both
// down, bounded in time, once the run ended. A failure to listen is a
// runtime failure (exit 1), as a server that cannot be reached is.
func (o *metricsOptions) serve(a *app, c *cobra.Command, m runner, redis endpoint.Redis, kafka endpoint.Kafka) (stop func(), err error) {
	if o.mirror == nil {
		return func() {}, nil
	}
	redisProbe, closeRedis := metrics.RedisProbe(redis)
	kafkaProbe, closeKafka, err := metrics.KafkaProbe(kafka)
	if err != nil {
		closeRedis()
		return nil, err
	}
	log := a.logger().With("mirror", m.Name())
	srv, err := metrics.Listen(o.addr, metrics.Options{
		Gatherer: o.reg.Gatherer(),
		Ready:    []metrics.Probe{metrics.LeaseProbe(o.mirror), redisProbe, kafkaProbe},
		Logger:   log,
	})
	if err != nil {
		closeRedis()
		closeKafka()
		return nil, fmt.Errorf("metrics (--metrics-addr): %w", err)
	}
	log.Info("serving metrics", "url", "http://"+srv.Addr()+"/metrics")
	ctx, cancel := context.WithCancel(context.WithoutCancel(c.Context()))
	var polling sync.WaitGroup
	if lr, ok := m.(metrics.LagReporter); ok {
		polling.Go(func() { o.mirror.PollLag(ctx, lr, metrics.LagEvery, metrics.LagTimeout) })
	}
	return func() {
		cancel()
		polling.Wait()
		srv.Close()
		closeRedis()
		closeKafka()
	}, nil
}
