package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/setting"
)

// runFlags are the flags of a mirror run in either direction: they bind
// into the direction's mirror.RunConfig, and add what only the command
// has (the summary's format).
type runFlags struct {
	cfg      *mirror.RunConfig
	output   string
	dryRun   bool
	progress progressFlags
	// display shows the run's progress: the command's own, or, for a
	// mirror of a file, the run command's, shared by all its mirrors.
	display *progressDisplay

	changed func(flag string) bool // tells a flag given empty from one not given
	// fromFile is set for a mirror of a mirrors file: its messages name
	// its settings as the file's keys, not as flags.
	fromFile bool
}

// settingNames are flags, the names of a mirror's settings in its
// messages, or, for a mirror of a file, the file's keys (--batch-size is
// batch-size).
func (f *runFlags) settingNames(flags setting.Names) setting.Names {
	if !f.fromFile {
		return flags
	}
	return func(field string) (string, bool) {
		n, ok := flags(field)
		return strings.TrimPrefix(n, "--"), ok
	}
}

// runFlagNames names the fields of mirror.RunConfig as their flags.
var runFlagNames = map[string]string{
	"Name":        "--name",
	"Follow":      "--follow",
	"BatchSize":   "--batch-size",
	"MaxInFlight": "--max-in-flight",
	"Timeout":     "--timeout",
	"LeaseTTL":    "--lease-ttl",
	"Standby":     "--standby",
}

func (f *runFlags) bind(c *cobra.Command, cfg *mirror.RunConfig) {
	f.cfg = cfg
	fs := c.Flags()
	f.changed = fs.Changed
	fs.StringVar(&cfg.Name, "name", "", "mirror name: keys its checkpoint and lease (default derived from the source and destination)")
	fs.BoolVarP(&cfg.Follow, "follow", "f", cfg.Follow, "keep mirroring new data until SIGINT/SIGTERM instead of stopping at what exists at start")
	fs.IntVar(&cfg.BatchSize, "batch-size", cfg.BatchSize, "the most entries read, written and confirmed together")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "batches written but not yet confirmed; more hides latency, costs memory")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "one-shot: how long to retry an unreachable server before exiting 1 (follow retries forever)")
	fs.StringVarP(&f.output, "output", "o", "text", "summary format: text or json")
	fs.BoolVar(&cfg.Standby, "standby", false, "when the mirror already runs elsewhere (its lease held), wait and take it over once that run stops or its lease expires, instead of exiting")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "how long a crashed mirror's lease keeps another process from starting under its name; a run on the same host takes a dead process's lease over at once")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print, per stream or partition, where each goes and how many entries a run would mirror from where, then exit (1 if the run would fail), writing nothing")
	f.progress.bind(c)
}

// validate reports the problems of the flags only the command has.
func (f *runFlags) validate() []string {
	problems := f.progress.validate()
	if f.output != "text" && f.output != "json" {
		problems = append(problems, fmt.Sprintf("--output must be text or json, got %q", f.output))
	}
	return problems
}

// watch is the observer of the run's progress, on the command's display
// (made now, unless a file's run command gave one); lag tells a following
// run's bar how far behind it is.
func (a *app) watchProgress(f *runFlags, lag func(context.Context) ([]mirror.Lag, error)) *mirror.Observer {
	if f.display == nil {
		f.display = a.newProgress(&f.progress)
	}
	return f.display.watch(f.cfg.Name, f.cfg.Follow, lag)
}

// defaultName gives the mirror the name derived from its settings unless
// --name was given (given empty, it is refused by the mirror's
// validation).
func (f *runFlags) defaultName(derive func() string) {
	if !f.changed("name") {
		f.cfg.Name = derive()
	}
}

// flagNames names a mirror's Config fields as the command's flags: a
// direction's own, the run's and the connections'.
func flagNames(own map[string]string) setting.Names {
	return func(field string) (string, bool) {
		for _, names := range []map[string]string{own, runFlagNames, connFlagNames} {
			if n, ok := names[field]; ok {
				return n, true
			}
		}
		return "", false
	}
}

// allFlagNames names the Config fields of both directions as flags (the
// two name each field alike).
var allFlagNames = func() setting.Names {
	all := map[string]string{}
	for _, m := range []map[string]string{redisToKafkaFlags, kafkaToRedisFlags} {
		for f, n := range m {
			all[f] = n
		}
	}
	return flagNames(all)
}()

// renderErrors writes an error logged by a mirror (a retry's cause, an
// entry set aside) with its settings named by names (flags, or a file's
// keys), as the command's own messages do.
func renderErrors(names setting.Names) func([]string, slog.Attr) slog.Attr {
	return func(_ []string, a slog.Attr) slog.Attr {
		if err, ok := a.Value.Any().(error); ok && a.Value.Kind() == slog.KindAny {
			return slog.String(a.Key, setting.Render(err, names))
		}
		return a
	}
}

// flagError is a mirror's error as the command shows it: every setting it
// names written as its flag, and the command's own problems (the flags
// only it has) after a Config's.
type flagError struct {
	err         error
	names       setting.Names
	cmdProblems []string
}

func (e *flagError) Error() string {
	var parts []string
	if e.err != nil {
		parts = append(parts, setting.Render(e.err, e.names))
	}
	return strings.Join(append(parts, e.cmdProblems...), "; ")
}

func (e *flagError) Unwrap() error { return e.err }

// commandError is err as the command returns it, its settings named as
// flags. A Config's problems (with the command's own, cmdProblems) are a
// usage error when they stop the mirror before it starts (from New, or in
// its set-up: a request impossible for the topics as they are); a problem
// met later in a run is a runtime failure like any other.
func commandError(err error, names setting.Names, cmdProblems []string) error {
	if err == nil && len(cmdProblems) == 0 {
		return nil
	}
	fe := &flagError{err: err, names: names, cmdProblems: cmdProblems}
	configured := err == nil || setting.IsConfig(err) && (!isRunError(err) || errors.As(err, new(*mirror.SetUpError)))
	if len(cmdProblems) > 0 || configured {
		return usageError(fe)
	}
	return fe
}

// runError marks an error a mirror's Run returned after it was set up.
type runError struct{ error }

func (e runError) Unwrap() error { return e.error }

func isRunError(err error) bool { return errors.As(err, new(runError)) }

// emptyFlags are the problems of flags given empty whose Config field
// takes "" for its default (a mistake in a script: an unset variable).
func emptyFlags(c *cobra.Command, flags ...string) []string {
	var problems []string
	for _, f := range flags {
		if c.Flags().Changed(f) && c.Flags().Lookup(f).Value.String() == "" {
			problems = append(problems, fmt.Sprintf("--%s must not be empty", f))
		}
	}
	return problems
}

// observer is what the command itself watches of a run: the garbage
// collector's memory limit follows the batches in flight, unless the
// environment sets one (GOMEMLIMIT).
func (a *app) observer(cfg *mirror.RunConfig) *mirror.Observer {
	if a.env.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	follow := memoryLimitFollower(cfg.MaxInFlight)
	return &mirror.Observer{Committed: func(c mirror.Commit) { follow(c.Totals) }}
}

// memoryLimitFollower keeps the garbage collector's soft memory limit (see
// cmd/xmirror) above what the batches in flight actually hold: large
// entries can make large batches (kafka-to-redis, or redis-to-kafka with
// --batch-bytes 0), and a limit below the working set would make the
// collector run without pause. The limit only ever rises. It is a setting
// of the process, so the command owns it, not a mirror.
func memoryLimitFollower(maxInFlight int) func(mirror.Stats) {
	limit := debug.SetMemoryLimit(-1)
	return func(s mirror.Stats) {
		if s.Batches == 0 {
			return
		}
		// Batches in flight, plus the one being read and the copies the
		// clients hold, with room for the collector to work.
		need := 4 * (s.Bytes / s.Batches) * int64(maxInFlight+2)
		if need > limit+limit/4 {
			limit = need
			debug.SetMemoryLimit(limit)
		}
	}
}

// closeRunner closes what a mirror opened beside its runs (the
// connections its Lag uses).
func closeRunner(m runner) {
	if c, ok := m.(interface{ Close() }); ok {
		c.Close()
	}
}

// A runner is a mirror of either direction, built and ready to run.
type runner interface {
	Name() string
	Run(ctx context.Context) (mirror.Stats, error)
}

// runMirror runs m, prints its summary and turns its error into the
// command's. A run that stopped before it was set up prints no summary,
// only its error. A follow run stopped by a signal succeeded, even during
// start-up; a one-shot run stopped by one did not finish, which is exit
// 130.
func (a *app) runMirror(c *cobra.Command, f *runFlags, direction string, m runner, names setting.Names) error {
	defer closeRunner(m)
	stats, err := m.Run(c.Context())
	f.display.finished(m.Name(), err == nil)
	f.display.close()
	s, err := a.summarize(c.Context(), f.cfg.Follow, direction, m.Name(), stats, err)
	if s != nil {
		a.printSummary(f, *s)
	}
	return commandError(err, names, nil)
}

// summarize is how a run of mirror name ended: its summary (nil for a run
// that stopped before it was set up, which has none) and its error, nil
// for a follow run stopped by a signal (ctx ended).
func (a *app) summarize(ctx context.Context, follow bool, direction, name string, stats mirror.Stats, err error) (*summary, error) {
	if err != nil {
		err = runError{err}
	}
	interrupted := err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil
	if errors.As(err, new(*mirror.SetUpError)) {
		if interrupted && follow {
			return nil, nil
		}
		return nil, err
	}
	s := summary{Mirror: name, Direction: direction,
		Entries: stats.Entries, Bytes: stats.Bytes, Seconds: stats.Elapsed.Seconds(), Rate: stats.Rate(),
		// Entries acknowledged without being written: set aside, or
		// already at the destination. Those lost are counted apart:
		// the destination never had them.
		Skipped: stats.Skipped + stats.DeadLettered + stats.Present, Lost: stats.Lost, Trimmed: stats.Trimmed}
	switch {
	case err == nil:
		s.Stopped = "done"
	case interrupted && follow:
		s.Stopped = "signal"
		err = nil
	case interrupted:
		s.Stopped = "interrupted"
	default:
		s.Stopped = "error"
	}
	log := a.logger()
	if err != nil {
		log.Debug("stopped", "mirror", s.Mirror, "reason", s.Stopped, "err", err)
	} else {
		log.Debug("stopped", "mirror", s.Mirror, "reason", s.Stopped)
	}
	return &s, err
}

// summary is the one-line report of a finished run.
type summary struct {
	Mirror    string  `json:"mirror"`
	Direction string  `json:"direction"`
	Entries   int64   `json:"entries"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"entries_per_second"`
	Skipped   int64   `json:"skipped,omitempty"`
	// Lost counts entries the source lost before they were mirrored and
	// the run went past (redis-to-kafka --on-gap skip).
	Lost int64 `json:"lost,omitempty"`
	// Trimmed counts entries the run removed from its source once they
	// were mirrored (redis-to-kafka --trim-source).
	Trimmed int64  `json:"trimmed,omitempty"`
	Stopped string `json:"stopped"`
}

func (a *app) printSummary(f *runFlags, s summary) {
	if a.global.quiet && f.output != "json" {
		return
	}
	if f.output == "json" {
		enc := json.NewEncoder(a.env.Stdout)
		enc.SetEscapeHTML(false) // mirror names hold '>'
		enc.Encode(s)
		return
	}
	line := fmt.Sprintf("%s: mirrored %s (%s) in %.2fs, %s entries/s", s.Mirror, entryCount(s.Entries), humanBytes(s.Bytes), s.Seconds, humanRate(s.Rate))
	if s.Skipped > 0 {
		line += fmt.Sprintf(", %d skipped", s.Skipped)
	}
	if s.Lost > 0 {
		line += fmt.Sprintf(", %d lost", s.Lost)
	}
	if s.Trimmed > 0 {
		line += fmt.Sprintf(", %d trimmed from the source", s.Trimmed)
	}
	if s.Stopped != "done" {
		line += "; stopped: " + s.Stopped
	}
	fmt.Fprintln(a.env.Stderr, line)
}

// entryCount is n with the noun of its number: "1 entry", "2 entries".
func entryCount(n int64) string {
	if n == 1 {
		return "1 entry"
	}
	return strconv.FormatInt(n, 10) + " entries"
}

// humanRate is a rate for people: a whole number from 100 on, at most three
// significant digits below ("246", "7", "0.5", "12.3").
func humanRate(r float64) string {
	if !(r > 0) || math.IsInf(r, 0) {
		return "0"
	}
	if r >= 100 {
		return strconv.FormatFloat(math.Round(r), 'f', 0, 64)
	}
	v, _ := strconv.ParseFloat(strconv.FormatFloat(r, 'g', 3, 64), 64)
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// commandParts are what the two mirror commands bind their flags into,
// besides a direction's own Config.
type commandParts struct {
	direction string
	conn      *connFlags
	run       *runFlags
	metrics   *metricsOptions
	redis     *endpoint.Redis
	kafka     *endpoint.Kafka
}

// lagRunner is a mirror that can tell its lag.
type lagRunner interface {
	runner
	Lag(ctx context.Context) ([]mirror.Lag, error)
}

// buildMirror resolves a mirror command's flags and builds its mirror
// with newMirror, connecting to nothing; problems are those of the flags
// the mirror's Config cannot see. The progress display and the metrics
// watch the mirror from its first step.
func buildMirror[M lagRunner](a *app, c *cobra.Command, p commandParts, names setting.Names, problems func() []string, newMirror func() (M, error)) (runner, error) {
	cfg := p.run.cfg
	p.conn.logAttrs = []any{"mirror", cfg.Name}
	var err error
	if *p.redis, *p.kafka, err = p.conn.resolve(a, c, true, true); err != nil {
		return nil, err
	}
	ps := append(problems(), p.metrics.resolve(a, c)...)
	if len(ps) > 0 {
		_, err = newMirror() // its problems too, in one message
		return nil, commandError(err, names, ps)
	}
	if p.run.dryRun {
		p.run.progress.mode = progressNone // a dry run prints its plan, nothing else
	}
	// The bars (made first) take stderr over from the logger.
	var m M
	progress := a.watchProgress(p.run, func(ctx context.Context) ([]mirror.Lag, error) { return m.Lag(ctx) })
	cfg.Observer = mirror.Observers(a.observer(cfg), progress)
	cfg.Logger = a.loggerNaming(p.run.settingNames(allFlagNames))
	p.metrics.watch(cfg, p.direction, p.kafka)
	if m, err = newMirror(); err != nil {
		p.run.display.close()
		return nil, commandError(err, names, nil)
	}
	return m, nil
}

// executeMirror runs a built mirror with its metrics served, and reports
// as a command does.
func (a *app) executeMirror(c *cobra.Command, p commandParts, m runner, names setting.Names) error {
	if p.run.dryRun {
		p.run.display.close()
		return a.dryRun(c.Context(), p.run, m, names)
	}
	stop, err := p.metrics.serve(a, c, m, *p.redis, *p.kafka)
	if err != nil {
		p.run.display.close()
		return err
	}
	defer stop()
	return a.runMirror(c, p.run, p.direction, m, names)
}
