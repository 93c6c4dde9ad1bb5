package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/xmirror/xmirror/internal/config"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/metrics"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/setting"
)

type runFileOptions struct {
	config   string
	once     bool
	parallel int
	failFast bool
	check    bool
	dryRun   bool
	output   string
	progress progressFlags
	display  *progressDisplay // one for all the file's mirrors
	// metricsAddr is --metrics-addr; reg, the registry of the metrics
	// the run serves, nil when it serves none.
	metricsAddr string
	reg         *metrics.Registry
}

// mirrorCommand is a mirror command's options, which a mirrors file sets
// as the command's flags.
type mirrorCommand interface {
	build(a *app, c *cobra.Command) (runner, setting.Names, error)
	runFlags() *runFlags
	parts() commandParts
}

// directions are the mirror commands a file's direction names, by name
// and alias.
var directions = map[string]struct {
	name string
	new  func(a *app) (*cobra.Command, mirrorCommand)
}{
	"redis-to-kafka": {"redis-to-kafka", newRedisToKafkaCommand},
	"r2k":            {"redis-to-kafka", newRedisToKafkaCommand},
	"kafka-to-redis": {"kafka-to-redis", newKafkaToRedisCommand},
	"k2r":            {"kafka-to-redis", newKafkaToRedisCommand},
}

func newRedisToKafkaCommand(a *app) (*cobra.Command, mirrorCommand) { return newRedisToKafka(a) }
func newKafkaToRedisCommand(a *app) (*cobra.Command, mirrorCommand) { return newKafkaToRedis(a) }

// fileKeysRefused are flags of the mirror commands a file cannot set: the
// run command's own output decides how summaries look, and name and
// direction are each mirror's own keys.
var fileKeysRefused = map[string]string{
	"output":            "summaries are the run command's: give it -o",
	"progress":          "progress is the run command's: give it --progress",
	"progress-interval": "progress is the run command's: give it --progress-interval",
	"dry-run":           "a dry run is the run command's: give it --dry-run",
	"help":              "not a setting",
}

// fileKeysTopOnly are keys of the process, set at the top of a file only,
// never under defaults or for one mirror.
var fileKeysTopOnly = map[string]string{
	keyMetricsAddr: "the process serves one metrics endpoint for all its mirrors: set it at the top of the file, or give run --metrics-addr",
}

// keyMetricsAddr is the file's key of the metrics address.
const keyMetricsAddr = "metrics-addr"

func newRunCmd(a *app) *cobra.Command {
	var o runFileOptions
	c := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run every mirror of a mirrors file in one process",
		Long: `Runs the mirrors a YAML file describes, in either direction, in one process.
Each key is the name of a flag of redis-to-kafka or kafka-to-redis without
its dashes (batch-size: 5000 is --batch-size 5000; a list is the flag
repeated): at the top of the file they apply to every mirror (connections,
above all), under defaults to every mirror whose direction has the key, and
under each mirror to it alone. Each mirror needs a name (its checkpoint and
lease, as --name) and a direction (redis-to-kafka or kafka-to-redis).
${VAR} and ${VAR:-default} are replaced by environment variables; $$ is a $.

Follow is the default: every mirror runs until SIGINT/SIGTERM, which drains
each as a single command does; a mirror with follow: false runs once. One
mirror's failure is reported and the others go on (--fail-fast stops them
all), and the process exits 1 once all stopped if any failed. SIGHUP reads
the file again: added mirrors start, removed ones drain and stop, changed
ones restart, the others are not disturbed; a file with problems is
refused, with every problem logged, and the running mirrors go on.

--once runs every mirror one-shot, --parallel at a time, then prints one
summary row per mirror (-o json: an array) and exits 1 if any failed,
naming each. --check reads and validates the file and every mirror's
settings, connecting to nothing, and exits 0 or 2. --dry-run prints what each
mirror's run would mirror now, per stream or partition, writing nothing, and
exits 1 if one would fail.

--metrics-addr HOST:PORT (or metrics-addr at the top of the file, or
XMIRROR_METRICS_ADDR, in that order) serves Prometheus /metrics, /healthz
and /readyz for every mirror of the file on one endpoint; each mirror's
series carry its name in the label mirror, a mirror removed by a reload
loses them, and /readyz is 200 when every running mirror holds its lease
and reaches its servers, and none failed.`,
		Example: `  xmirror run --config mirrors.yaml --check
  xmirror run --config mirrors.yaml --dry-run
  xmirror run --config mirrors.yaml --once --parallel 4
  xmirror run --config mirrors.yaml            # follow; kill -HUP to reload
  xmirror run --config mirrors.yaml --metrics-addr :9464`,
		RunE: func(c *cobra.Command, _ []string) error { return o.run(a, c) },
	}
	fs := c.Flags()
	fs.StringVarP(&o.config, "config", "c", "", "the mirrors file (YAML); required")
	fs.BoolVar(&o.once, "once", false, "run every mirror one-shot, then print a summary per mirror and exit")
	fs.IntVar(&o.parallel, "parallel", 0, "with --once: how many mirrors run at a time (0: all)")
	fs.BoolVar(&o.failFast, "fail-fast", false, "stop every mirror at the first one that fails")
	fs.BoolVar(&o.check, "check", false, "validate the file without connecting, exit 0 (valid) or 2")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what each mirror's run would mirror, per stream or partition, then exit (1 if one would fail), writing nothing")
	fs.StringVarP(&o.output, "output", "o", "text", "summary format: text or json")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics, /healthz and /readyz of every mirror of the file on HOST:PORT while the run lasts, e.g. :9464 (over the file's metrics-addr and env "+envMetricsAddr+"; default none)")
	o.progress.bind(c)
	completeEnums(c)
	c.MarkFlagFilename("config", "yaml", "yml")
	return c
}

func (o *runFileOptions) validate(c *cobra.Command) error {
	var problems []string
	if o.config == "" {
		problems = append(problems, "--config FILE is required")
	}
	if o.output != "text" && o.output != "json" {
		problems = append(problems, fmt.Sprintf("--output must be text or json, got %q", o.output))
	}
	if o.parallel < 0 {
		problems = append(problems, fmt.Sprintf("--parallel must be 0 or more, got %d", o.parallel))
	}
	if c.Flags().Changed("parallel") && !o.once {
		problems = append(problems, "--parallel is for --once: following mirrors all run at once")
	}
	if c.Flags().Changed("metrics-addr") {
		if o.metricsAddr == "" {
			problems = append(problems, "--metrics-addr must not be empty; leave it out to serve no metrics")
		} else if p := metricsAddrProblem(o.metricsAddr); p != "" {
			problems = append(problems, "--metrics-addr "+p)
		}
	}
	problems = append(problems, o.progress.validate()...)
	if len(problems) > 0 {
		return usageErrorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

func (o *runFileOptions) run(a *app, c *cobra.Command) error {
	if err := o.validate(c); err != nil {
		return err
	}
	f, err := o.load(a, c.Context())
	if err != nil {
		return o.fileError(a, err)
	}
	addr, from, err := o.resolveMetricsAddr(a, c, f.metricsAddr)
	if err != nil {
		return err
	}
	if o.check {
		if !a.global.quiet {
			fmt.Fprintf(a.env.Stdout, "%s: %s, valid\n", o.config, plural(len(f.mirrors), "mirror"))
		}
		return nil
	}
	if o.dryRun {
		return o.planAll(a, c.Context(), f.mirrors)
	}
	// Built again with the display the run shows them on, and the
	// registry of their metrics: --check, a dry run and a refused file
	// have none.
	var fm *fileMetrics
	if addr != "" {
		o.reg = metrics.NewRegistry()
		fm = newFileMetrics(a, o.reg)
	}
	o.display = a.newProgress(&o.progress)
	if f, err = o.load(a, c.Context()); err != nil {
		o.display.close()
		return o.fileError(a, err)
	}
	// Listening before any mirror starts, so the probes answer during
	// their start-up and an address that cannot be served mirrors
	// nothing.
	if fm != nil {
		if err := fm.listen(addr, from); err != nil {
			o.display.close()
			return err
		}
		defer fm.close()
	}
	s := &supervisor{a: a, opts: o, runs: map[string]*mirrorRun{}, ended: make(chan *mirrorRun), metrics: fm, fileMetricsAddr: f.metricsAddr}
	return s.run(c.Context(), f.mirrors)
}

// resolveMetricsAddr is the address the run serves its metrics on, ""
// for none, and what gave it: --metrics-addr, else the file's
// metrics-addr (fromFile, checked with the file), else the environment.
func (o *runFileOptions) resolveMetricsAddr(a *app, c *cobra.Command, fromFile string) (addr, from string, err error) {
	switch {
	case c.Flags().Changed("metrics-addr"):
		return o.metricsAddr, "--metrics-addr", nil
	case fromFile != "":
		return fromFile, keyMetricsAddr + " of " + o.config, nil
	}
	addr = strings.TrimSpace(a.env.Getenv(envMetricsAddr))
	if addr == "" {
		return "", "", nil
	}
	if p := metricsAddrProblem(addr); p != "" {
		return "", "", usageErrorf("%s %s", envMetricsAddr, p)
	}
	return addr, envMetricsAddr, nil
}

// planAll prints what a run of each mirror would do, in the file's order,
// and fails (exit 1) naming each mirror whose run would.
func (o *runFileOptions) planAll(a *app, ctx context.Context, mirrors []fileMirror) error {
	plans := make([]shownPlan, 0, len(mirrors))
	for i, m := range mirrors {
		p, err := m.r.(planner).DryRun(ctx)
		closeRunner(m.r)
		if err != nil {
			return commandError(fmt.Errorf("mirror %q: %w", m.name, err), m.names, nil)
		}
		plans = append(plans, showPlan(p, m.names))
		if o.output == "text" {
			if i > 0 {
				fmt.Fprintln(a.env.Stdout)
			}
			writePlan(a.env.Stdout, plans[i])
		}
	}
	if o.output == "json" {
		writeJSON(a.env.Stdout, plans)
	}
	return planFailed(plans)
}

// fileError prints each problem of a file on its own line and returns the
// usage error that ends the command.
func (o *runFileOptions) fileError(a *app, err error) error {
	var fe *config.Error
	if !errors.As(err, &fe) {
		return usageError(err)
	}
	for _, p := range fe.Problems {
		fmt.Fprintf(a.env.Stderr, "xmirror: %s\n", fe.At(p))
	}
	return usageErrorf("%s: %s", fe.Path, plural(len(fe.Problems), "problem"))
}

// A fileMirror is a mirror of the file, built and ready to run.
type fileMirror struct {
	name, direction string
	// settings are the flags the file gave it, as key=value lines in
	// key order: a mirror whose settings did not change on a reload is
	// left alone.
	settings string
	follow   bool
	r        runner
	names    setting.Names
	// metrics are its metrics, nil when the run serves none; redis and
	// kafka its servers, which the probes of its readiness ask.
	metrics *metrics.Mirror
	redis   endpoint.Redis
	kafka   endpoint.Kafka
}

// A loadedFile is a mirrors file read and its mirrors built.
type loadedFile struct {
	mirrors []fileMirror
	// metricsAddr is the file's metrics-addr, "" when it has none.
	metricsAddr string
}

// load reads the file and builds every mirror it describes.
func (o *runFileOptions) load(a *app, ctx context.Context) (loadedFile, error) {
	getenv := func(k string) (string, bool) {
		v := a.env.Getenv(k)
		_, set := os.LookupEnv(k)
		return v, v != "" || set
	}
	f, err := config.Load(o.config, getenv)
	if f == nil {
		return loadedFile{}, err
	}
	// The settings' problems too, all in one list.
	parsed, _ := err.(*config.Error)
	return o.build(a, ctx, f, parsed)
}

// build makes every mirror of f, listing every problem: a key no
// direction has, a value its flag refuses, settings its mirror refuses.
func (o *runFileOptions) build(a *app, ctx context.Context, f *config.File, parsed *config.Error) (loadedFile, error) {
	e := &config.Error{Path: f.Path}
	if parsed != nil {
		e.Problems = append(e.Problems, parsed.Problems...)
	}
	r2kCmd, _ := directions["redis-to-kafka"].new(a)
	k2rCmd, _ := directions["kafka-to-redis"].new(a)
	known := func(key string) bool { return r2kCmd.Flags().Lookup(key) != nil || k2rCmd.Flags().Lookup(key) != nil }
	var out loadedFile
	for i, group := range [][]config.Setting{f.Settings, f.Defaults} {
		for _, s := range group {
			if s.Key == keyMetricsAddr && i == 0 {
				out.metricsAddr = metricsAddrSetting(e, s)
				continue
			}
			if why, topOnly := fileKeysTopOnly[s.Key]; topOnly {
				e.Add(s.Pos, "key %q cannot be set under %s: %s", s.Key, config.KeyDefaults, why)
			} else if why, refused := fileKeysRefused[s.Key]; refused {
				e.Add(s.Pos, "key %q cannot be set in a mirrors file: %s", s.Key, why)
			} else if !known(s.Key) {
				e.Add(s.Pos, "unknown key %q: the keys are the flags of xmirror redis-to-kafka and kafka-to-redis, without their dashes", s.Key)
			}
		}
	}
	for _, m := range f.Mirrors {
		d, ok := directions[m.Direction]
		if !ok {
			if m.Direction != "" {
				e.Add(m.DirPos, "mirror %q: direction %q is none of redis-to-kafka (r2k) and kafka-to-redis (k2r)", m.Name, m.Direction)
			}
			continue
		}
		label := fmt.Sprintf("mirror %q", m.Name)
		if m.Name == "" {
			label = fmt.Sprintf("the mirror at line %d", m.Pos.Line)
		}
		c, cmd := d.new(a)
		c.SetContext(ctx)
		fs := c.Flags()
		before := len(e.Problems)
		own := map[string]bool{}
		for _, s := range m.Settings {
			own[s.Key] = true
		}
		set := func(s config.Setting, strict bool) {
			fl := fs.Lookup(s.Key)
			switch {
			case fileKeysTopOnly[s.Key] != "":
				if strict {
					e.Add(s.Pos, "%s: key %q cannot be set for one mirror: %s", label, s.Key, fileKeysTopOnly[s.Key])
				}
				return
			case fileKeysRefused[s.Key] != "":
				if strict {
					e.Add(s.Pos, "%s: key %q cannot be set in a mirrors file: %s", label, s.Key, fileKeysRefused[s.Key])
				}
				return
			case fl == nil:
				if strict {
					e.Add(s.Pos, "%s: unknown key %q for a %s mirror: its keys are the flags of xmirror %s --help, without their dashes", label, s.Key, d.name, d.name)
				}
				return
			case s.List && !repeatable(fl):
				e.Add(s.Pos, "%s: %q takes one value, not a list", label, s.Key)
				return
			}
			for i, v := range s.Values {
				if err := fs.Set(s.Key, v); err != nil {
					e.Add(s.ValuePos[i], "%s: %s: %s", label, s.Key, flagValueProblem(fl, v, err))
				}
			}
		}
		if !o.once {
			fs.Set("follow", "true")
		}
		for _, s := range f.Settings {
			if !own[s.Key] {
				set(s, false)
			}
		}
		for _, s := range f.Defaults {
			if !own[s.Key] {
				set(s, false)
			}
		}
		for _, s := range m.Settings {
			if s.Key == "name" {
				continue
			}
			set(s, true)
		}
		fs.Set("name", m.Name)
		if o.once {
			fs.Set("follow", "false")
		}
		if len(e.Problems) > before {
			continue
		}
		cmd.runFlags().fromFile = true
		if o.display != nil {
			cmd.runFlags().display = o.display
		} else {
			cmd.runFlags().progress.mode = progressNone
		}
		p := cmd.parts()
		p.metrics.ofFile, p.metrics.reg = true, o.reg
		r, names, err := cmd.build(a, c)
		if err != nil {
			e.Add(m.NamePos, "%s: %s", label, err)
			continue
		}
		out.mirrors = append(out.mirrors, fileMirror{name: m.Name, direction: d.name, settings: flagSettings(fs), follow: cmd.runFlags().cfg.Follow, r: r, names: names,
			metrics: p.metrics.mirror, redis: *p.redis, kafka: *p.kafka})
	}
	// In the file's order, as an editor shows them.
	sort.SliceStable(e.Problems, func(i, j int) bool {
		pi, pj := e.Problems[i].Pos, e.Problems[j].Pos
		return pi.Line < pj.Line || pi.Line == pj.Line && pi.Col < pj.Col
	})
	if err := e.Err(); err != nil {
		return loadedFile{}, err
	}
	return out, nil
}

// metricsAddrSetting is the file's metrics-addr s, its problems added to
// e.
func metricsAddrSetting(e *config.Error, s config.Setting) string {
	switch {
	case s.List:
		e.Add(s.Pos, "%q takes one value, not a list", s.Key)
	case s.Values[0] == "":
		e.Add(s.ValuePos[0], "%s must not be empty; leave it out to serve no metrics", s.Key)
	case metricsAddrProblem(s.Values[0]) != "":
		e.Add(s.ValuePos[0], "%s %s", s.Key, metricsAddrProblem(s.Values[0]))
	default:
		return s.Values[0]
	}
	return ""
}

// repeatable tells whether a flag takes several values, each appended.
func repeatable(fl *pflag.Flag) bool {
	t := fl.Value.Type()
	return strings.HasSuffix(t, "Slice") || strings.HasSuffix(t, "Array")
}

// flagValueProblem says why a flag refused a value, in the file's words.
func flagValueProblem(fl *pflag.Flag, v string, err error) string {
	switch fl.Value.Type() {
	case "bool":
		return fmt.Sprintf("%q is not true or false", v)
	case "int", "int16", "int32", "int64", "uint", "uint64":
		return fmt.Sprintf("%q is not a whole number", v)
	case "duration":
		return fmt.Sprintf("%q is not a duration (such as 500ms, 30s, 5m)", v)
	}
	return err.Error()
}

// flagSettings are the flags given, as sorted key=value lines.
func flagSettings(fs *pflag.FlagSet) string {
	var lines []string
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed {
			lines = append(lines, fl.Name+"="+fl.Value.String())
		}
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// A supervisor runs the mirrors of a file and, on SIGHUP, those of the
// file as it is then.
type supervisor struct {
	a    *app
	opts *runFileOptions

	runs    map[string]*mirrorRun // by name, running
	pending map[string]fileMirror // changed mirrors, started once the old run ended
	ended   chan *mirrorRun
	sem     chan struct{} // --once --parallel
	results []runResult
	failed  bool

	// metrics are the run's, nil when it serves none; fileMetricsAddr is
	// the file's metrics-addr as the server was started.
	metrics         *fileMetrics
	fileMetricsAddr string
}

// A mirrorRun is one mirror running.
type mirrorRun struct {
	m      fileMirror
	ctx    context.Context
	cancel context.CancelFunc
	// stopping is set when the supervisor stopped it (removed, changed,
	// --fail-fast): its end is no failure of its own; removed, when a
	// reload took it out of the file.
	stopping, removed bool
	stats             mirror.Stats
	err               error
}

// A runResult is how one mirror's run ended.
type runResult struct {
	summary
	Error string `json:"error,omitempty"`
}

func (s *supervisor) run(ctx context.Context, mirrors []fileMirror) error {
	if s.opts.once && s.opts.parallel > 0 {
		s.sem = make(chan struct{}, s.opts.parallel)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	for _, m := range mirrors {
		s.start(ctx, m)
	}
	log := s.a.logger()
	for len(s.runs) > 0 {
		select {
		case r := <-s.ended:
			delete(s.runs, r.m.name)
			s.finished(r)
			if s.failed && s.opts.failFast {
				for _, other := range s.runs {
					other.stopping = true
				}
				s.pending = nil
				cancelAll()
			}
			if next, ok := s.pending[r.m.name]; ok && ctx.Err() == nil {
				delete(s.pending, r.m.name)
				s.start(ctx, next)
			}
		case <-hup:
			if s.opts.once {
				log.Warn("SIGHUP ignored: a --once run reads its file once", "file", s.opts.config)
				continue
			}
			s.reload(ctx)
		}
	}
	s.opts.display.close()
	return s.report(ctx)
}

// start runs m until ctx ends (or, one-shot, it is done).
func (s *supervisor) start(ctx context.Context, m fileMirror) {
	rctx, cancel := context.WithCancel(ctx)
	r := &mirrorRun{m: m, ctx: rctx, cancel: cancel}
	s.runs[m.name] = r
	s.a.logger().Info("starting mirror", "mirror", m.name, "direction", m.direction, "follow", m.follow)
	measureErr := s.metrics.started(m)
	go func() {
		defer cancel()
		if measureErr != nil {
			r.err = mirror.NotSetUp(measureErr)
			s.ended <- r
			return
		}
		if s.sem != nil {
			select {
			case s.sem <- struct{}{}:
				defer func() { <-s.sem }()
			case <-rctx.Done():
				r.err = mirror.NotSetUp(rctx.Err())
				s.ended <- r
				return
			}
		}
		stopLag := s.metrics.pollLag(rctx, m)
		r.stats, r.err = m.r.Run(rctx)
		stopLag()
		s.ended <- r
	}()
}

// finished reports the end of a mirror's run.
func (s *supervisor) finished(r *mirrorRun) {
	closeRunner(r.m.r)
	s.opts.display.finished(r.m.name, r.err == nil)
	sum, err := s.a.summarize(r.ctx, r.m.follow || r.stopping, r.m.direction, r.m.name, r.stats, r.err)
	if r.stopping && err != nil && errors.Is(err, context.Canceled) {
		err = nil
	}
	res := runResult{}
	if sum != nil {
		res.summary = *sum
	} else {
		res.summary = summary{Mirror: r.m.name, Direction: r.m.direction, Stopped: "signal"}
	}
	switch {
	case err != nil && errors.Is(err, context.Canceled) && r.ctx.Err() != nil:
		res.Stopped = "interrupted" // a --once run stopped by a signal
	case err != nil:
		s.failed = true
		res.Stopped = "error"
		res.Error = commandError(err, r.m.names, nil).Error()
		s.a.logger().Error("mirror failed", "mirror", r.m.name, "err", res.Error)
	}
	if r.removed {
		s.metrics.removed(r.m.name)
	} else {
		s.metrics.ended(r.m.name, res.Error)
	}
	s.results = append(s.results, res)
	if s.opts.once {
		return // one table at the end
	}
	f := &runFlags{output: s.opts.output}
	s.a.printSummary(f, res.summary)
}

// reload reads the file again and makes the running mirrors what it says.
func (s *supervisor) reload(ctx context.Context) {
	log := s.a.logger()
	f, err := s.opts.load(s.a, ctx)
	if err != nil {
		var fe *config.Error
		if errors.As(err, &fe) {
			for _, p := range fe.Problems {
				log.Error("reload refused: the mirrors file has a problem; the running mirrors go on", "problem", fe.At(p))
			}
		} else {
			log.Error("reload refused; the running mirrors go on", "file", s.opts.config, "err", err)
		}
		return
	}
	if f.metricsAddr != s.fileMetricsAddr {
		log.Warn("the file's metrics-addr changed: it takes effect when the process restarts; the metrics server does not move", "file", s.opts.config, "metrics-addr", f.metricsAddr)
		s.fileMetricsAddr = f.metricsAddr
	}
	want := map[string]fileMirror{}
	for _, m := range f.mirrors {
		want[m.name] = m
	}
	var added, removed, changed, same []string
	for name, r := range s.runs {
		m, ok := want[name]
		switch {
		case !ok:
			removed = append(removed, name)
			r.stopping, r.removed = true, true
			delete(s.pending, name)
			r.cancel()
		case m.settings != r.m.settings || m.direction != r.m.direction || r.removed:
			// Changed, or removed by an earlier reload and back before
			// its run ended: started again once it has.
			changed = append(changed, name)
			r.stopping, r.removed = true, false
			if s.pending == nil {
				s.pending = map[string]fileMirror{}
			}
			s.pending[name] = m
			r.cancel()
		default:
			same = append(same, name)
		}
	}
	// The series of mirrors that ended before the file lost them go now.
	s.metrics.keepOnly(func(name string) bool {
		_, wanted := want[name]
		_, running := s.runs[name]
		return wanted || running
	})
	for name, m := range want {
		if _, running := s.runs[name]; !running {
			added = append(added, name)
			s.start(ctx, m)
		}
	}
	for _, l := range [][]string{added, removed, changed, same} {
		slices.Sort(l)
	}
	log.Info("reloaded the mirrors file", "file", s.opts.config, "added", added, "removed", removed, "changed", changed, "unchanged", same)
}

// report prints the --once summary table and returns the command's error:
// one line per mirror that failed.
func (s *supervisor) report(ctx context.Context) error {
	sort.Slice(s.results, func(i, j int) bool { return s.results[i].Mirror < s.results[j].Mirror })
	if s.opts.once {
		s.printTable()
	}
	var failed []string
	for _, r := range s.results {
		if r.Error != "" {
			failed = append(failed, r.Mirror)
			fmt.Fprintf(s.a.env.Stderr, "xmirror: mirror %q (%s): %s\n", r.Mirror, r.Direction, r.Error)
		}
	}
	if ctx.Err() != nil && s.opts.once {
		return ctx.Err() // interrupted: exit 130
	}
	if len(failed) > 0 {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("%d of %d mirrors failed: %s", len(failed), len(s.results), strings.Join(failed, ", "))}
	}
	return nil
}

func (s *supervisor) printTable() {
	a := s.a
	if s.opts.output == "json" {
		enc := json.NewEncoder(a.env.Stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		results := s.results
		if results == nil {
			results = []runResult{}
		}
		enc.Encode(results)
		return
	}
	if a.global.quiet {
		return
	}
	tw := tabwriter.NewWriter(a.env.Stderr, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MIRROR\tDIRECTION\tENTRIES\tBYTES\tSECONDS\tENTRIES/S\tSKIPPED\tLOST\tTRIMMED\tRESULT")
	for _, r := range s.results {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.2f\t%s\t%d\t%d\t%d\t%s\n", r.Mirror, r.Direction, r.Entries, humanBytes(r.Bytes), r.Seconds, humanRate(r.Rate), r.Skipped, r.Lost, r.Trimmed, r.Stopped)
	}
	tw.Flush()
}
