package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/rueidis"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/k2r"
	"github.com/xmirror/xmirror/mirror/r2k"
)

// Defaults of the status command.
const (
	defaultStatusTimeout  = 10 * time.Second
	defaultStatusInterval = 2 * time.Second
)

type statusOptions struct {
	conn     connFlags
	output   string
	maxLag   int64
	maxAge   time.Duration
	watch    bool
	interval time.Duration
	timeout  time.Duration
}

func newStatusCmd(a *app) *cobra.Command {
	var o statusOptions
	c := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show every mirror of a Redis: positions, lag, last checkpoint, running or not",
		Long: `Shows the mirrors that have a checkpoint in this Redis (all of them, or
those NAMEd): direction, source -> destination, where each stands per
stream (redis-to-kafka) or partition (kafka-to-redis), how far behind
it is, when its checkpoint last moved, what it mirrored in all (and, for
a redis-to-kafka mirror run with --trim-source, what it trimmed from its
streams), and whether a run holds its lease (which process, on which
host).

Lag is what the source holds that the mirror has not mirrored yet:
  redis-to-kafka  per stream, the entries its consumer group has not
                  delivered yet plus those pending (read, not yet
                  confirmed by Kafka), from XINFO GROUPS;
  kafka-to-redis  per partition, the end offset minus the next offset
                  the mirror reads (an upper bound on a topic written
                  with transactions, whose markers take offsets too).

--max-lag N and --max-age D turn it into a check for cron and monitoring:
it exits 1 with one line per mirror over a limit: a lag above N (or one
that cannot be told), or a checkpoint older than D while the mirror has
entries to mirror (an idle source does not age a mirror that is caught
up). --watch redraws the status every --interval until SIGINT.

Mirrors that last ran before runs recorded their source, destination
and format still show, with what their checkpoints hold.

Exit codes: 0 shown (and within the limits), 1 over a limit or a server
failed, 2 bad flags.`,
		Example: `  xmirror status
  xmirror status orders-to-kafka -o json
  # in cron or a monitoring check: fail when a mirror falls behind
  xmirror status --max-lag 10000 --max-age 15m
  xmirror status --watch`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, names []string) error {
			return o.run(a, c, names)
		},
	}
	o.conn.bind(c, true, true)
	c.ValidArgsFunction = func(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		return mirrorNames(a, c, &o.conn, prefix), cobra.ShellCompDirectiveNoFileComp
	}
	fs := c.Flags()
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	fs.Int64Var(&o.maxLag, "max-lag", -1, "exit 1 when a mirror's lag is above N entries (or cannot be told)")
	fs.DurationVar(&o.maxAge, "max-age", 0, "exit 1 when a mirror's checkpoint is older than this while it has entries to mirror")
	fs.BoolVarP(&o.watch, "watch", "w", false, "redraw the status every --interval until SIGINT")
	fs.DurationVar(&o.interval, "interval", defaultStatusInterval, "with --watch: how often to redraw")
	fs.DurationVar(&o.timeout, "timeout", defaultStatusTimeout, "give up on a server that has not answered within this time")
	return c
}

func (o *statusOptions) validate(c *cobra.Command) error {
	var problems []string
	if o.output != "table" && o.output != "json" {
		problems = append(problems, fmt.Sprintf("--output must be table or json, got %q", o.output))
	}
	if c.Flags().Changed("max-lag") && o.maxLag < 0 {
		problems = append(problems, fmt.Sprintf("--max-lag must be 0 or more, got %d", o.maxLag))
	}
	if c.Flags().Changed("max-age") && o.maxAge <= 0 {
		problems = append(problems, fmt.Sprintf("--max-age must be positive, got %s", o.maxAge))
	}
	if o.watch && (c.Flags().Changed("max-lag") || c.Flags().Changed("max-age")) {
		problems = append(problems, "--watch cannot be combined with --max-lag or --max-age, which are for one check")
	}
	if o.interval <= 0 {
		problems = append(problems, fmt.Sprintf("--interval must be positive, got %s", o.interval))
	}
	if o.timeout <= 0 {
		problems = append(problems, fmt.Sprintf("--timeout must be positive, got %s", o.timeout))
	}
	if len(problems) > 0 {
		return usageErrorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

func (o *statusOptions) run(a *app, c *cobra.Command, names []string) error {
	if err := o.validate(c); err != nil {
		return err
	}
	redisEP, kafkaEP, err := o.conn.resolve(a, c, true, true)
	if err != nil {
		return err
	}
	s := &statusReader{redis: redisEP, kafka: kafkaEP, timeout: o.timeout}
	defer s.close()
	if !o.watch {
		sts, err := s.read(c.Context(), names)
		if err != nil {
			return err
		}
		if err := o.print(a.env.Stdout, sts); err != nil {
			return err
		}
		return o.check(a, sts)
	}
	tty := isTerminal(a.env.Stdout)
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		sts, err := s.read(c.Context(), names)
		if c.Context().Err() != nil {
			return nil // SIGINT is how a watch ends
		}
		if tty {
			fmt.Fprint(a.env.Stdout, "\x1b[H\x1b[2J") // home, clear
		}
		if err != nil {
			// A server that stops answering is shown, not fatal: the
			// watch goes on and shows it again when it answers.
			fmt.Fprintf(a.env.Stdout, "%s  xmirror: %s\n", time.Now().Format(time.TimeOnly), strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			if tty {
				fmt.Fprintf(a.env.Stdout, "%s, every %s (Ctrl-C to stop)\n\n", time.Now().Format(time.TimeOnly), o.interval)
			}
			if err := o.print(a.env.Stdout, sts); err != nil {
				return err
			}
		}
		if !tty && o.output == "table" {
			fmt.Fprintln(a.env.Stdout)
		}
		select {
		case <-c.Context().Done():
			return nil
		case <-tick.C:
		}
	}
}

// check reports, one line each, the mirrors over --max-lag or --max-age.
func (o *statusOptions) check(a *app, sts []mirror.Status) error {
	var over []string
	mirrors := 0
	for _, st := range sts {
		before := len(over)
		what := fmt.Sprintf("mirror %q (%s)", st.Name, st.Kind)
		if o.maxLag >= 0 {
			switch {
			case !st.LagKnown:
				over = append(over, fmt.Sprintf("%s: its lag cannot be told (%s), which --max-lag %d counts as over", what, lagUnknownWhy(st), o.maxLag))
			case st.Lag > o.maxLag:
				over = append(over, fmt.Sprintf("%s: lag %s is over --max-lag %d", what, entryCount(st.Lag), o.maxLag))
			}
		}
		if o.maxAge > 0 && (st.Lag > 0 || !st.LagKnown) {
			switch {
			case st.Checkpointed == nil:
				over = append(over, fmt.Sprintf("%s: never checkpointed, with entries to mirror, which --max-age %s counts as over", what, o.maxAge))
			case st.Age > o.maxAge:
				over = append(over, fmt.Sprintf("%s: checkpoint %s old, with %s to mirror, is over --max-age %s", what, st.Age.Round(time.Second), lagText(st), o.maxAge))
			}
		}
		if len(over) > before {
			mirrors++
		}
	}
	if len(over) == 0 {
		return nil
	}
	for _, line := range over {
		fmt.Fprintf(a.env.Stderr, "xmirror: %s\n", line)
	}
	noun := "mirrors are"
	if mirrors == 1 {
		noun = "mirror is"
	}
	return &ExitError{Code: ExitFailure, Err: fmt.Errorf("%d %s over the limits", mirrors, noun)}
}

func lagUnknownWhy(st mirror.Status) string {
	for _, p := range st.Positions {
		if !p.LagKnown && p.Note != "" {
			return positionName(st, p) + ": " + p.Note
		}
	}
	return "no position"
}

func (o *statusOptions) print(w io.Writer, sts []mirror.Status) error {
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // mirror names hold '>'
		if sts == nil {
			sts = []mirror.Status{}
		}
		return enc.Encode(sts)
	}
	if len(sts) == 0 {
		fmt.Fprintln(w, "no mirror has a checkpoint in this Redis")
		return nil
	}
	for i, st := range sts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		printStatus(w, st)
	}
	return nil
}

// printStatus writes one mirror's status as a block: its header lines,
// then a table of its streams or partitions.
func printStatus(w io.Writer, st mirror.Status) {
	fmt.Fprintf(w, "%s %s", st.Kind, st.Name)
	if st.Described {
		fmt.Fprintf(w, ": %s -> %s", st.Source, st.Destination)
	}
	var details []string
	if st.Group != "" {
		details = append(details, "group "+st.Group)
	}
	if st.Format != "" {
		details = append(details, "format "+st.Format)
	}
	if len(details) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(details, ", "))
	}
	fmt.Fprintln(w)
	if st.Running {
		fmt.Fprintf(w, "  running:     yes, %s\n", st.Holder)
	} else {
		fmt.Fprintln(w, "  running:     no")
	}
	if st.Checkpointed != nil {
		fmt.Fprintf(w, "  checkpoint:  %s (%s ago)\n", st.Checkpointed.UTC().Format(time.RFC3339), st.Age.Round(time.Second))
	} else {
		fmt.Fprintln(w, "  checkpoint:  never moved")
	}
	fmt.Fprintf(w, "  mirrored:    %s (%s)\n", entryCount(st.Entries), humanBytes(st.Bytes))
	if st.Trimmed > 0 {
		fmt.Fprintf(w, "  trimmed:     %s from the source, once mirrored (--trim-source)\n", entryCount(st.Trimmed))
	}
	fmt.Fprintf(w, "  lag:         %s\n", lagText(st))
	if len(st.Positions) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if st.Kind == checkpoint.KindRedisToKafka {
		// A TRIMMED column only for a mirror that trimmed its streams.
		if st.Trimmed > 0 {
			fmt.Fprintln(tw, "  STREAM\tPOSITION\tLAG\tPENDING\tTRIMMED\tNOTE")
		} else {
			fmt.Fprintln(tw, "  STREAM\tPOSITION\tLAG\tPENDING\tNOTE")
		}
		for _, p := range st.Positions {
			trimmed := ""
			if st.Trimmed > 0 {
				trimmed = strconv.FormatInt(p.Trimmed, 10) + "\t"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s%s\n", p.Stream, orDash(p.ID), positionLag(p), p.Pending, trimmed, p.Note)
		}
	} else {
		fmt.Fprintln(tw, "  TOPIC\tPARTITION\tOFFSET\tEND\tLAG\tSTREAM\tNOTE")
		for _, p := range st.Positions {
			offset := strconv.FormatInt(p.Offset, 10)
			if p.Offset == checkpoint.NoPosition {
				offset = "-"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\t%s\t%s\t%s\n", p.Topic, p.Partition, offset, p.End, positionLag(p), orDash(p.Stream), p.Note)
		}
	}
	tw.Flush()
}

func lagText(st mirror.Status) string {
	if !st.LagKnown {
		return fmt.Sprintf("at least %s (not known for every position)", entryCount(st.Lag))
	}
	return entryCount(st.Lag)
}

func positionLag(p mirror.PositionStatus) string {
	if !p.LagKnown {
		return "?"
	}
	return strconv.FormatInt(p.Lag, 10)
}

func positionName(st mirror.Status, p mirror.PositionStatus) string {
	if st.Kind == checkpoint.KindRedisToKafka {
		return fmt.Sprintf("stream %q", p.Stream)
	}
	return fmt.Sprintf("topic %q partition %d", p.Topic, p.Partition)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// statusReader reads the status of mirrors, keeping its connections
// between the rounds of a watch. Kafka is connected to only when a
// kafka-to-redis mirror needs its end offsets.
type statusReader struct {
	redis   endpoint.Redis
	kafka   endpoint.Kafka
	timeout time.Duration

	rc    rueidis.Client
	kafkc *kgo.Client
	adm   *kadm.Client
	found []checkpoint.Found // of the last read
}

func (s *statusReader) close() {
	if s.rc != nil {
		s.rc.Close()
	}
	if s.kafkc != nil {
		s.kafkc.Close()
	}
}

// read is the status of the mirrors named (all when none is), within the
// timeout.
func (s *statusReader) read(ctx context.Context, names []string) ([]mirror.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if s.rc == nil {
		rc, err := s.redis.Connect(ctx, s.timeout)
		if err != nil {
			return nil, err
		}
		s.rc = rc
	}
	found, err := checkpoint.List(ctx, s.rc)
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", s.redis.Addr(), err)
	}
	if len(names) > 0 {
		var picked []checkpoint.Found
		for _, n := range names {
			i := len(picked)
			for _, f := range found {
				if f.Name == n {
					picked = append(picked, f)
				}
			}
			if len(picked) == i {
				return nil, fmt.Errorf("no mirror named %q has a checkpoint in redis %s; xmirror status with no name lists them all", n, s.redis.Addr())
			}
		}
		found = picked
	}
	s.found = found
	now := time.Now()
	sts := make([]mirror.Status, 0, len(found))
	for _, f := range found {
		var st mirror.Status
		if f.Kind == checkpoint.KindRedisToKafka {
			st, err = r2k.Inspect(ctx, s.rc, f, now)
		} else {
			var adm *kadm.Client
			if adm, err = s.admin(ctx); err == nil {
				st, err = k2r.Inspect(ctx, s.rc, adm, f, now)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("status of mirror %q (%s): %w", f.Name, f.Kind, err)
		}
		sts = append(sts, st)
	}
	return slices.Clip(sts), nil
}

func (s *statusReader) admin(ctx context.Context) (*kadm.Client, error) {
	if s.adm == nil {
		cl, err := s.kafka.Connect(ctx, s.timeout)
		if err != nil {
			return nil, err
		}
		s.kafkc, s.adm = cl, kadm.NewClient(cl)
	}
	return s.adm, nil
}

// isTerminal tells whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// mirrorNames completes the names of the mirrors of the Redis the flags
// name, within completionTimeout.
func mirrorNames(a *app, c *cobra.Command, conn *connFlags, prefix string) []string {
	redisEP, _, err := conn.resolve(a, c, true, false)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	rc, err := redisEP.Connect(ctx, completionTimeout)
	if err != nil {
		return nil
	}
	defer rc.Close()
	found, err := checkpoint.List(ctx, rc)
	if err != nil {
		return nil
	}
	var names []string
	for _, f := range found {
		if strings.HasPrefix(f.Name, prefix) {
			names = append(names, f.Name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}
