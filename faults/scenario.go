package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A scenario is one kind of fault, injected while a --follow mirror runs
// and its source keeps growing.
type scenario struct {
	name  string
	about string
	// ownRedis: the mirror's Redis is the suite's own redis-server (AOF,
	// fsync always), which this scenario crashes or pauses.
	ownRedis bool
	// controlsKafka: the scenario stops or pauses the shared broker.
	controlsKafka bool
	// preload is the share of the entries written before the mirror starts.
	preload float64
	// burst is how many entries the source gains at once (0: a steady
	// trickle of 500s). Bursts keep batches in flight when a fault lands.
	burst  int
	inject func(ctx context.Context, s *state) error
}

// state is what a scenario's faults act on.
type state struct {
	cfg config
	g   *guard
	rng *mrand.Rand
	m   *mirror
	srv *redisServer // nil unless ownRedis
	d   direction
	r   *row
}

// startupGrace is how long a mirror has held its lease before the suite
// sends it a SIGTERM it must answer with exit 0. Zero: once it holds the
// lease its signal handling is in place, and a SIGTERM while it still
// connects to Kafka or reads back must be a clean stop as well.
const startupGrace = 0

// between is a random duration in [lo, hi).
func (s *state) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

func allScenarios() []scenario {
	return []scenario{
		{name: "kill9", about: "kill -9 of the mirror at random moments, restarted each time", preload: 0.25, burst: 10_000, inject: injectKills},
		{name: "kafka-restart", about: "the Kafka broker stopped and started again mid-run", controlsKafka: true, preload: 0.25, inject: injectKafkaRestart},
		{name: "redis-crash", about: "kill -9 of a Redis running with AOF and appendfsync always, restarted", ownRedis: true, preload: 0.25, inject: injectRedisCrash},
		{name: "redis-pause", about: "Redis SIGSTOPped longer than the client timeouts, then SIGCONT", ownRedis: true, preload: 0.25, inject: injectRedisPause},
		{name: "kafka-pause", about: "the broker SIGSTOPped longer than the client timeouts, then SIGCONT", controlsKafka: true, preload: 0.25, inject: injectKafkaPause},
		{name: "sigterm", about: "SIGTERM under load (exit 0 within 5s), restarted each time; then SIGTERM with the mirror's Redis, and with the broker, SIGSTOPped a second before (exit 0 within 6s)", ownRedis: true, controlsKafka: true, preload: 0.5, inject: injectSigterms},
	}
}

func scenarioNames(s []scenario) string {
	names := make([]string, len(s))
	for i, sc := range s {
		names[i] = sc.name
	}
	return strings.Join(names, ",")
}

func parseScenarios(list string) ([]scenario, error) {
	all := allScenarios()
	if list == "all" {
		return all, nil
	}
	var out []scenario
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, sc := range all {
			if sc.name == n {
				out = append(out, sc)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("-scenarios: unknown scenario %q (known: %s)", n, scenarioNames(all))
		}
	}
	return out, nil
}

// sleepCtx waits d or until ctx ends; it does not watch the mirror (while a
// server is down or paused, a restart of the mirror could not proceed).
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(d):
		return nil
	}
}

func injectKills(ctx context.Context, s *state) error {
	for i := 1; i <= s.cfg.kills; i++ {
		if err := s.m.sleep(ctx, s.between(300*time.Millisecond, 2500*time.Millisecond)); err != nil {
			return err
		}
		if err := s.m.kill9(); err != nil {
			return err
		}
		s.r.logf("kill -9 #%d", i)
		if err := s.m.waitLeaseGone(ctx); err != nil {
			return err
		}
		if err := s.m.start(); err != nil {
			return err
		}
	}
	return nil
}

func injectSigterms(ctx context.Context, s *state) error {
	for i := 1; i <= 3; i++ {
		// From the lease on (see startupGrace), at a random moment.
		if err := s.m.waitUp(ctx, startupGrace); err != nil {
			return err
		}
		if err := s.m.sleep(ctx, s.between(0, 2500*time.Millisecond)); err != nil {
			return err
		}
		code, took, ok := s.m.term(5 * time.Second)
		s.r.logf("SIGTERM #%d: exit %d after %s", i, code, took.Round(time.Millisecond))
		switch {
		case !ok:
			s.r.fail("SIGTERM #%d under load: still running after 5s (killed); its stderr ends with:\n%s", i, indent(s.m.cur.stderr.lines(6)))
		case code != 0:
			s.r.fail("SIGTERM #%d under load: exit %d after %s, want 0; its stderr ends with:\n%s", i, code, took.Round(time.Millisecond), indent(s.m.cur.stderr.lines(6)))
		}
		if err := s.m.waitLeaseGone(ctx); err != nil {
			return err
		}
		if err := s.m.start(); err != nil {
			return err
		}
	}
	// A stop must not wait for a server that does not answer: with the
	// mirror's Redis, then the broker, frozen a second before the signal
	// (batches in flight, a lease renewal, a commit waiting on it), the
	// mirror still exits 0 within stopBound. Each is frozen only until the
	// mirror exited, under 10 s; the guard resumes it if the suite fails.
	kpid, err := kafkaPid(ctx, s.cfg)
	if err != nil {
		return err
	}
	for _, frozen := range []struct {
		what string
		pid  int
	}{{"its Redis", s.srv.pid()}, {"the Kafka broker", kpid}} {
		if err := s.m.waitUp(ctx, startupGrace); err != nil {
			return err
		}
		if err := s.m.sleep(ctx, s.between(500*time.Millisecond, 2500*time.Millisecond)); err != nil {
			return err
		}
		resume, err := s.g.pause(frozen.pid, frozen.what)
		if err != nil {
			return err
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			resume()
			return err
		}
		code, took, ok := s.m.term(stopBound + 2*time.Second)
		resume()
		s.r.info("SIGTERM with %s SIGSTOPped: exit %d after %s", frozen.what, code, took.Round(time.Millisecond))
		switch {
		case !ok:
			s.r.fail("SIGTERM with %s SIGSTOPped: still running after %s (killed); its stderr ends with:\n%s", frozen.what, stopBound+2*time.Second, indent(s.m.cur.stderr.lines(6)))
		case code != 0:
			s.r.fail("SIGTERM with %s SIGSTOPped: exit %d after %s, want 0; its stderr ends with:\n%s", frozen.what, code, took.Round(time.Millisecond), indent(s.m.cur.stderr.lines(6)))
		case took > stopBound:
			s.r.fail("SIGTERM with %s SIGSTOPped: exit after %s, want at most %s (the drain timeout and 2s to close); its stderr ends with:\n%s", frozen.what, took.Round(time.Millisecond), stopBound, indent(s.m.cur.stderr.lines(6)))
		}
		// The lease expires if the frozen Redis could not take its release.
		if err := s.m.waitLeaseGone(ctx); err != nil {
			return err
		}
		if err := s.m.start(); err != nil {
			return err
		}
	}
	return nil
}

// stopBound is the README's bound on a stop whatever the servers do: 4 s
// for the batches in flight (the drain timeout), 2 s to close.
const stopBound = 6 * time.Second

func injectKafkaRestart(ctx context.Context, s *state) error {
	if err := s.m.sleep(ctx, s.between(2*time.Second, 6*time.Second)); err != nil {
		return err
	}
	s.g.touchKafka()
	begin := time.Now()
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		rctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		out, err = servicesCmd(rctx, s.cfg, "restart", "kafka").CombinedOutput()
	}()
	s.r.logf("restarting Kafka")
	if werr := s.m.watch(ctx, done); werr != nil {
		<-done
		return werr
	}
	if err != nil {
		return fmt.Errorf("%s restart kafka: %v\n%s", s.cfg.services, err, out)
	}
	s.r.info("Kafka restarted in %s", time.Since(begin).Round(100*time.Millisecond))
	return nil
}

func injectRedisCrash(ctx context.Context, s *state) error {
	for i := 1; i <= 2; i++ {
		if err := s.m.sleep(ctx, s.between(2*time.Second, 6*time.Second)); err != nil {
			return err
		}
		if err := s.srv.kill9(); err != nil {
			return err
		}
		down := s.between(500*time.Millisecond, 2*time.Second)
		s.r.logf("redis-server killed (-9) #%d, down for %s", i, down.Round(time.Millisecond))
		if err := sleepCtx(ctx, down); err != nil {
			return err
		}
		if err := s.srv.start(ctx); err != nil {
			return fmt.Errorf("restart redis-server from its AOF: %w", err)
		}
	}
	return nil
}

func injectRedisPause(ctx context.Context, s *state) error {
	return pause(ctx, s, s.srv.pid(), "redis-server")
}

func injectKafkaPause(ctx context.Context, s *state) error {
	pid, err := kafkaPid(ctx, s.cfg)
	if err != nil {
		return err
	}
	s.g.touchKafka()
	return pause(ctx, s, pid, "the Kafka broker")
}

func pause(ctx context.Context, s *state, pid int, what string) error {
	if err := s.m.sleep(ctx, s.between(2*time.Second, 5*time.Second)); err != nil {
		return err
	}
	before := s.d.progress(ctx)
	resume, err := s.g.pause(pid, what)
	if err != nil {
		return err
	}
	defer resume()
	s.r.logf("SIGSTOP %s (pid %d) for %s", what, pid, s.cfg.pause)
	if err := sleepCtx(ctx, s.cfg.pause); err != nil {
		return err
	}
	resume()
	s.r.logf("SIGCONT %s", what)
	// Evidence that the fault bit: the destination stood still, then
	// caught up with what the source gained meanwhile.
	resumed := time.Now()
	for s.d.progress(ctx) <= before+int64(s.cfg.entries)/100 && time.Since(resumed) < time.Minute {
		if err := s.m.sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	s.r.info("%s stopped %s with %d entries at the destination; moving again %s after SIGCONT", what, s.cfg.pause, before, time.Since(resumed).Round(100*time.Millisecond))
	return nil
}

// direction is one way through the mirror, with the suite's own writer of
// its source and reader of its destination.
type direction interface {
	// kind is the mirror's kind in its lease key.
	kind() string
	// setup creates the source and destination.
	setup(ctx context.Context) error
	// mirrorArgs is the command line, without connections and --follow.
	mirrorArgs(name string) []string
	// write adds entries [from, to) to the source; it is safe to retry.
	write(ctx context.Context, from, to int) error
	// progress is how many entries the destination holds, -1 if unknown.
	progress(ctx context.Context) int64
	// verify reads source and destination and fills the row's counts.
	verify(ctx context.Context, r *row) error
	// cleanup deletes the source and destination.
	cleanup(ctx context.Context)
}

// feed writes entries [from, to) over d (at once if 0), in bursts of burst
// entries at an even pace.
func feed(ctx context.Context, d direction, from, to int, over time.Duration, burst int) error {
	const chunk = 500
	burst = max(burst, chunk)
	begin := time.Now()
	for i := from; i < to; i += chunk {
		if over > 0 {
			at := begin.Add(time.Duration(float64(over) * float64((i-from)/burst*burst) / float64(to-from)))
			if err := sleepCtx(ctx, time.Until(at)); err != nil {
				return err
			}
		}
		if err := d.write(ctx, i, min(i+chunk, to)); err != nil {
			return err
		}
	}
	return nil
}

func randomTag() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// runScenario runs one scenario in one direction and reports it. Every
// wait is bounded; whatever fails, the servers are left running and
// resumed, and the streams, topics and the own redis-server are removed.
func runScenario(ctx context.Context, cfg config, e *env, g *guard, sc scenario, dirName string, rng *mrand.Rand) (r row) {
	r = row{scenario: sc.name, direction: dirName, verbose: cfg.verbose, entries: cfg.entries}
	begin := time.Now()
	defer func() { r.wall = time.Since(begin) }()
	r.logf("%s", sc.about)

	rc, redisURL := e.redis, cfg.redisURL
	var srv *redisServer
	if sc.ownRedis {
		dir, err := os.MkdirTemp("", "xmirror-faults-redis-")
		if err != nil {
			r.fail("%v", err)
			return r
		}
		port := cfg.aofPort
		if port == 0 {
			if port, err = freePort(); err != nil {
				r.fail("find a free port for the own redis-server: %v", err)
				return r
			}
		}
		srv = &redisServer{g: g, port: port, dir: dir}
		defer srv.stop()
		if err := srv.start(ctx); err != nil {
			r.fail("own redis-server: %v", err)
			return r
		}
		own, err := newRedis(srv.url())
		if err != nil {
			r.fail("connect to own redis-server: %v", err)
			return r
		}
		defer own.Close()
		rc, redisURL = own, srv.url()
	}

	tag := randomTag()
	name := fmt.Sprintf("faults-%s-%s-%s", sc.name, dirName, tag)
	var d direction
	if dirName == "r2k" {
		d = &r2k{rc: rc, e: e, stream: "faults:" + name, topic: name, n: cfg.entries, parts: cfg.partitions, baseMs: time.Now().UnixMilli()}
	} else {
		d = &k2r{rc: rc, e: e, cfg: cfg, topic: name, stream: "faults:" + name, n: cfg.entries, parts: cfg.partitions}
	}
	cleanup := func() {
		if cfg.keep && !r.passed() {
			r.info("kept for inspection: stream faults:%s, topic %s, mirror name %s", name, name, name)
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.cleanup(cctx)
		deleteKeys(cctx, rc, "xmirror:*"+name+"*")
	}
	if err := d.setup(ctx); err != nil {
		r.fail("setup: %v", err)
		cleanup()
		return r
	}
	defer cleanup()

	logf, err := os.Create(filepath.Join(e.logDir, name+".log"))
	if err != nil {
		r.fail("%v", err)
		return r
	}
	defer logf.Close()
	m := &mirror{cfg: cfg, g: g, args: d.mirrorArgs(name), redisURL: redisURL,
		leaseKey: "xmirror:lease:" + d.kind() + ":" + name, rc: rc, log: logf, r: &r}
	defer func() {
		if m.cur != nil && !m.cur.exited() {
			m.cur.signaled = true
			m.cur.cmd.Process.Kill()
			<-m.cur.done
		}
		r.restarts = max(m.starts-1, 0)
	}()

	preload := int(float64(cfg.entries) * sc.preload)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = feed(pctx, d, 0, preload, 0, 0)
	cancel()
	if err != nil {
		r.fail("preload the source: %v", err)
		return r
	}
	fctx, cancelFeed := context.WithTimeoutCause(ctx, cfg.feed+5*time.Minute, fmt.Errorf("the source was not fed within %s", cfg.feed+5*time.Minute))
	defer cancelFeed()
	fed := make(chan struct{})
	var feedErr error
	go func() {
		defer close(fed)
		feedErr = feed(fctx, d, preload, cfg.entries, cfg.feed, sc.burst)
	}()
	// The feeder must be gone before the source is deleted.
	defer func() { cancelFeed(); <-fed }()

	if err := m.start(); err != nil {
		r.fail("%v", err)
		return r
	}
	st := &state{cfg: cfg, g: g, rng: rng, m: m, srv: srv, d: d, r: &r}
	if err := sc.inject(ctx, st); err != nil {
		r.fail("injecting the fault: %v", err)
		return r
	}
	if err := m.watch(ctx, fed); err != nil {
		r.fail("%v", err)
		return r
	}
	if feedErr != nil {
		r.fail("the suite could not write the source: %v", feedErr)
		return r
	}
	r.logf("source complete")

	if err := waitComplete(ctx, d, m, &r, int64(cfg.entries)); err != nil {
		r.fail("%v", err)
		return r
	}
	if err := m.waitUp(ctx, startupGrace); err != nil {
		r.fail("%v", err)
		return r
	}
	code, took, ok := m.term(5 * time.Second)
	switch {
	case !ok:
		r.fail("the final SIGTERM: still running after 5s (killed); its stderr ends with:\n%s", indent(m.cur.stderr.lines(6)))
	case code != 0:
		r.fail("the final SIGTERM: exit %d after %s, want 0; its stderr ends with:\n%s", code, took.Round(time.Millisecond), indent(m.cur.stderr.lines(6)))
	}
	if err := m.waitLeaseGone(ctx); err != nil {
		r.fail("%v", err)
		return r
	}
	n, err := m.oneShot(ctx, 3*time.Minute)
	if err != nil {
		r.fail("%v", err)
	} else if n > 0 {
		r.info("the final one-shot run mirrored %d entries the follow runs had not", n)
	}
	readBackNote(logf.Name(), &r)
	vctx, vcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer vcancel()
	if err := d.verify(vctx, &r); err != nil {
		r.fail("verify: %v", err)
	}
	return r
}

// waitComplete waits until the destination holds every entry; it gives up
// (and the verification then says what is missing) when nothing moved for
// 90s or after 5 minutes.
func waitComplete(ctx context.Context, d direction, m *mirror, r *row, want int64) error {
	deadline := time.Now().Add(5 * time.Minute)
	last, lastMove := int64(-1), time.Now()
	for {
		n := d.progress(ctx)
		if n >= want {
			r.logf("destination complete")
			return nil
		}
		if n > last {
			last, lastMove = n, time.Now()
		}
		if time.Since(lastMove) > 90*time.Second || time.Now().After(deadline) {
			r.fail("the --follow mirror stalled: the destination held %d of %d entries, no progress for %s; its stderr ends with:\n%s",
				last, want, time.Since(lastMove).Round(time.Second), indent(m.cur.stderr.lines(6)))
			return nil
		}
		if err := m.sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

var alreadyInKafka = regexp.MustCompile(`already_in_kafka=(\d+)`)

// readBackNote says how often a restarted redis-to-kafka mirror found
// entries of a killed run already in Kafka: the path that keeps them from
// being written twice, which only a kill between Kafka's confirmation and
// the XACK exercises.
func readBackNote(logPath string, r *row) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return
	}
	runs, entries := 0, 0
	for _, m := range alreadyInKafka.FindAllSubmatch(b, -1) {
		if n, _ := strconv.Atoi(string(m[1])); n > 0 {
			runs++
			entries += n
		}
	}
	if runs > 0 {
		r.info("read-back after a restart found %d entries already in Kafka (%d restarts), not written again", entries, runs)
	}
}
