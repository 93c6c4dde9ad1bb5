package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/k2r"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/r2k"
)

// resetLeaseTTL is the lease a reset or delete holds while it writes: no
// run of the mirror starts meanwhile.
const resetLeaseTTL = 15 * time.Second

type checkpointOptions struct {
	conn      connFlags
	direction string
	output    string
	to        string
	toTime    string
	yes       bool
	timeout   time.Duration
	// validateTo checks --to against the mirror it names, before asking.
	validateTo func(mirror.Status) error
}

func newCheckpointCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "checkpoint",
		Short: "List, show, reset and delete mirrors' checkpoints",
		Long: `Works on the checkpoints of the mirrors of a Redis (--redis):

  list              one row per mirror: direction, name, source -> destination,
                    last checkpoint, running or not
  show NAME         where the mirror stands per stream or partition (as status)
  reset NAME        move its positions: --to earliest|latest|<entry ID> (a
                    redis-to-kafka mirror, which then mirrors the entries
                    after that ID), --to <partition=offset,...> (a
                    kafka-to-redis mirror: the next offset it reads; write
                    topic:partition=offset for a mirror of several topics),
                    or --to-time TIME (the first entry or offset at or after
                    TIME: RFC 3339, Unix milliseconds, or -DURATION ago)
  delete NAME       remove its checkpoints, its record and (redis-to-kafka)
                    its own consumer group; topics, records and streams stay

reset and delete refuse while the mirror runs (its lease held), hold its
lease while they write, ask for confirmation on a terminal and need --yes
elsewhere, and print each position before -> after (or what they
deleted). A NAME both directions use needs --direction.`,
		Example: `  xmirror checkpoint list
  xmirror checkpoint reset 'orders>{stream}' --to earliest --yes
  xmirror checkpoint reset 'orders>orders-copy' --to 0=1200,1=1150 --yes
  xmirror checkpoint reset 'orders>orders-copy' --to-time 2026-12-01T00:00:00Z
  xmirror checkpoint delete 'orders>{stream}' --yes`,
	}
	sub := func(use, short string, args cobra.PositionalArgs, run func(o *checkpointOptions, a *app, c *cobra.Command, args []string) error) *cobra.Command {
		o := &checkpointOptions{}
		s := &cobra.Command{Use: use, Short: short, Args: wrapArgs(args), RunE: func(c *cobra.Command, args []string) error { return run(o, a, c, args) }}
		o.conn.bind(s, true, true)
		s.Flags().StringVar(&o.direction, "direction", "", "the direction of NAME when both have a mirror of that name: redis-to-kafka or kafka-to-redis")
		s.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
		s.Flags().DurationVar(&o.timeout, "timeout", defaultStatusTimeout, "give up on a server that has not answered within this time")
		s.ValidArgsFunction = func(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
			return mirrorNames(a, c, &o.conn, prefix), cobra.ShellCompDirectiveNoFileComp
		}
		if strings.HasPrefix(use, "reset") {
			s.Flags().StringVar(&o.to, "to", "", "earliest, latest, an entry ID (redis-to-kafka) or partition=offset,... (kafka-to-redis)")
			s.Flags().StringVar(&o.toTime, "to-time", "", "the first entry or offset at or after this time: RFC 3339, Unix milliseconds or -DURATION (ago)")
		}
		if strings.HasPrefix(use, "reset") || strings.HasPrefix(use, "delete") {
			s.Flags().BoolVarP(&o.yes, "yes", "y", false, "do it without asking (needed when not on a terminal)")
		}
		return s
	}
	c.AddCommand(
		sub("list", "One row per mirror of this Redis", cobra.NoArgs, (*checkpointOptions).list),
		sub("show NAME", "Where a mirror stands, per stream or partition", cobra.ExactArgs(1), (*checkpointOptions).show),
		sub("reset NAME (--to TARGET | --to-time TIME)", "Move a mirror's positions", cobra.ExactArgs(1), (*checkpointOptions).reset),
		sub("delete NAME", "Remove a mirror's checkpoints, record and consumer group", cobra.ExactArgs(1), (*checkpointOptions).delete),
	)
	return c
}

func (o *checkpointOptions) check() error {
	if o.output != "table" && o.output != "json" {
		return usageErrorf("--output must be table or json, got %q", o.output)
	}
	if o.direction != "" && o.direction != checkpoint.KindRedisToKafka && o.direction != checkpoint.KindKafkaToRedis {
		return usageErrorf("--direction must be redis-to-kafka or kafka-to-redis, got %q", o.direction)
	}
	if o.timeout <= 0 {
		return usageErrorf("--timeout must be positive, got %s", o.timeout)
	}
	return nil
}

// reader connects as status does.
func (o *checkpointOptions) reader(a *app, c *cobra.Command) (*statusReader, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	redisEP, kafkaEP, err := o.conn.resolve(a, c, true, true)
	if err != nil {
		return nil, err
	}
	return &statusReader{redis: redisEP, kafka: kafkaEP, timeout: o.timeout}, nil
}

func (o *checkpointOptions) list(a *app, c *cobra.Command, _ []string) error {
	s, err := o.reader(a, c)
	if err != nil {
		return err
	}
	defer s.close()
	sts, err := s.read(c.Context(), nil)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return (&statusOptions{output: "json"}).print(a.env.Stdout, sts)
	}
	tw := tabwriter.NewWriter(a.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIRECTION\tNAME\tSOURCE -> DESTINATION\tCHECKPOINTED\tRUNNING")
	for _, st := range sts {
		route := "-"
		if st.Described {
			route = st.Source + " -> " + st.Destination
		}
		when := "never"
		if st.Checkpointed != nil {
			when = st.Checkpointed.UTC().Format(time.RFC3339)
		}
		running := "no"
		if st.Running {
			running = st.Holder
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.Kind, st.Name, route, when, running)
	}
	return tw.Flush()
}

func (o *checkpointOptions) show(a *app, c *cobra.Command, args []string) error {
	s, err := o.reader(a, c)
	if err != nil {
		return err
	}
	defer s.close()
	st, err := o.one(c.Context(), s, args[0])
	if err != nil {
		return err
	}
	return (&statusOptions{output: o.output}).print(a.env.Stdout, []mirror.Status{st})
}

// one is the status of the one mirror called name.
func (o *checkpointOptions) one(ctx context.Context, s *statusReader, name string) (mirror.Status, error) {
	sts, err := s.read(ctx, []string{name})
	if err != nil {
		return mirror.Status{}, err
	}
	var picked []mirror.Status
	for _, st := range sts {
		if o.direction == "" || st.Kind == o.direction {
			picked = append(picked, st)
		}
	}
	switch {
	case len(picked) == 0:
		return mirror.Status{}, fmt.Errorf("no %s mirror named %q; xmirror checkpoint list shows them all", o.direction, name)
	case len(picked) > 1:
		return mirror.Status{}, usageErrorf("mirrors of both directions are named %q: give --direction redis-to-kafka or kafka-to-redis", name)
	}
	return picked[0], nil
}

func (o *checkpointOptions) reset(a *app, c *cobra.Command, args []string) error {
	if (o.to == "") == (o.toTime == "") {
		return usageErrorf("give one of --to (earliest, latest, an entry ID or partition=offset,...) and --to-time")
	}
	var at time.Time
	if o.toTime != "" {
		var err error
		if at, err = parseResetTime(o.toTime, time.Now()); err != nil {
			return usageErrorf("--to-time %q: %v", o.toTime, err)
		}
	}
	o.validateTo = func(st mirror.Status) error {
		switch {
		case o.to == "" || o.to == "earliest" || o.to == "latest":
			return nil
		case st.Kind == checkpoint.KindRedisToKafka && !mapping.ValidID(o.to):
			return usageErrorf("--to %q: a redis-to-kafka mirror moves to earliest, latest or an entry ID (such as 1764675607000-0)", o.to)
		case st.Kind == checkpoint.KindKafkaToRedis:
			if _, err := parsePartitionOffsets(o.to, st); err != nil {
				return usageErrorf("--to %q: %v", o.to, err)
			}
		}
		return nil
	}
	return o.change(a, c, args[0], "reset", func(ctx context.Context, s *statusReader, st mirror.Status) (any, error) {
		streams, keys := mirrorKeys(s, st)
		if st.Kind == checkpoint.KindRedisToKafka {
			t := r2k.ResetTarget{Time: at}
			switch o.to {
			case "":
			case "earliest":
				t.Earliest = true
			case "latest":
				t.Latest = true
			default:
				if !mapping.ValidID(o.to) {
					return nil, usageErrorf("--to %q: a redis-to-kafka mirror moves to earliest, latest or an entry ID (such as 1764675607000-0)", o.to)
				}
				t.ID = o.to
			}
			return r2k.Reset(ctx, s.rc, st.Name, streams, t)
		}
		t := k2r.ResetTarget{Time: at}
		switch o.to {
		case "":
		case "earliest":
			t.Earliest = true
		case "latest":
			t.Latest = true
		default:
			var err error
			if t.Offsets, err = parsePartitionOffsets(o.to, st); err != nil {
				return nil, usageErrorf("--to %q: %v", o.to, err)
			}
		}
		adm, err := s.admin(ctx)
		if err != nil {
			return nil, err
		}
		return k2r.Reset(ctx, s.rc, adm, st.Name, keys, t)
	})
}

func (o *checkpointOptions) delete(a *app, c *cobra.Command, args []string) error {
	return o.change(a, c, args[0], "delete", func(ctx context.Context, s *statusReader, st mirror.Status) (any, error) {
		streams, keys := mirrorKeys(s, st)
		if st.Kind == checkpoint.KindRedisToKafka {
			return r2k.Delete(ctx, s.rc, st.Name, streams)
		}
		return k2r.Delete(ctx, s.rc, st.Name, keys)
	})
}

// mirrorKeys are the streams of a redis-to-kafka mirror and the
// checkpoint keys of a kafka-to-redis one, as status found them.
func mirrorKeys(s *statusReader, st mirror.Status) (streams, keys []string) {
	for _, f := range s.found {
		if f.Kind == st.Kind && f.Name == st.Name {
			keys = f.Checkpoints
			if f.Descriptor != nil {
				streams = f.Descriptor.Streams
			}
		}
	}
	for _, p := range st.Positions {
		if p.Stream != "" && st.Kind == checkpoint.KindRedisToKafka {
			streams = append(streams, p.Stream)
		}
	}
	return streams, keys
}

// change runs a reset or delete of mirror name: refused while it runs,
// confirmed, under its lease; then prints what changed.
func (o *checkpointOptions) change(a *app, c *cobra.Command, name, verb string, do func(context.Context, *statusReader, mirror.Status) (any, error)) error {
	s, err := o.reader(a, c)
	if err != nil {
		return err
	}
	defer s.close()
	ctx := c.Context()
	st, err := o.one(ctx, s, name)
	if err != nil {
		return err
	}
	if o.validateTo != nil {
		if err := o.validateTo(st); err != nil {
			return err
		}
	}
	if st.Running {
		return fmt.Errorf("mirror %q (%s) is running (%s): stop it first; nothing was changed", st.Name, st.Kind, st.Holder)
	}
	what := fmt.Sprintf("%s the checkpoint of %s mirror %q", verb, st.Kind, st.Name)
	if verb == "reset" {
		what += " to " + strings.TrimSpace(o.to+" "+o.toTime)
	}
	if !o.yes {
		if !interactive(a) {
			return usageErrorf("%s: not on a terminal, so --yes is needed to confirm; nothing was changed", what)
		}
		fmt.Fprintf(a.env.Stderr, "%s? [y/N] ", strings.ToUpper(what[:1])+what[1:])
		answer, _ := bufio.NewReader(a.env.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return errors.New("not confirmed; nothing was changed")
		}
	}
	lctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	lease, err := checkpoint.AcquireLease(lctx, s.rc, st.Kind, st.Name, resetLeaseTTL)
	if err != nil {
		return fmt.Errorf("mirror %q (%s): %w; nothing was changed", st.Name, st.Kind, err)
	}
	defer lease.Release(context.WithoutCancel(ctx))
	result, err := do(lctx, s, st)
	var oor *k2r.OffsetOutOfLogError
	if errors.As(err, &oor) {
		return usageError(err)
	}
	if err != nil {
		return err
	}
	return o.printChange(a.env.Stdout, st, result)
}

func (o *checkpointOptions) printChange(w io.Writer, st mirror.Status, result any) error {
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"mirror": st.Name, "direction": st.Kind, "changed": result})
	}
	switch r := result.(type) {
	case []mirror.Moved:
		for _, m := range r {
			where := "stream " + m.Stream
			if m.Topic != "" {
				where = fmt.Sprintf("topic %s partition %d", m.Topic, m.Partition)
			}
			fmt.Fprintf(w, "%s: %s: %s -> %s\n", st.Name, where, m.Before, m.After)
		}
	case []string:
		for _, d := range r {
			fmt.Fprintf(w, "%s: deleted %s\n", st.Name, d)
		}
		if len(r) == 0 {
			fmt.Fprintf(w, "%s: nothing to delete\n", st.Name)
		}
	}
	return nil
}

// interactive tells whether a person can answer: stdin and stderr are a
// terminal.
func interactive(a *app) bool {
	in, ok := a.env.Stdin.(*os.File)
	return ok && term.IsTerminal(int(in.Fd())) && isTerminal(a.env.Stderr)
}

// parseResetTime reads --to-time: RFC 3339, Unix milliseconds, or
// -DURATION before now.
func parseResetTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil && ms >= 0 {
		return time.UnixMilli(ms), nil
	}
	if strings.HasPrefix(s, "-") {
		if d, err := time.ParseDuration(s[1:]); err == nil && d >= 0 {
			return now.Add(-d), nil
		}
	}
	return time.Time{}, errors.New("not a time: give RFC 3339 (2026-12-01T08:00:00Z), Unix milliseconds, or -DURATION ago (-2h)")
}

// parsePartitionOffsets reads partition=offset,... for a mirror of one
// topic, topic:partition=offset,... for any.
func parsePartitionOffsets(s string, st mirror.Status) (map[checkpoint.TopicPartition]int64, error) {
	topics := map[string]bool{}
	for _, p := range st.Positions {
		topics[p.Topic] = true
	}
	out := map[checkpoint.TopicPartition]int64{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		off, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || off < 0 {
			return nil, fmt.Errorf("%q is not partition=offset", part)
		}
		topic, p := "", k
		if i := strings.LastIndexByte(k, ':'); i >= 0 {
			topic, p = k[:i], k[i+1:]
		} else if len(topics) == 1 {
			for t := range topics {
				topic = t
			}
		} else {
			return nil, fmt.Errorf("the mirror reads %d topics: write topic:partition=offset", len(topics))
		}
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a partition number", p)
		}
		out[checkpoint.TopicPartition{Topic: topic, Partition: int32(n)}] = off
	}
	return out, nil
}
