package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
)

// Defaults shared by both directions.
const (
	// defaultBatchSize entries per read: large enough that round trips are
	// a small share of the time, small enough that memory stays a few MiB.
	defaultBatchSize = 2000
	// defaultOneShotTimeout is how long a one-shot run keeps retrying a
	// server that stopped answering before it exits 1.
	defaultOneShotTimeout = 30 * time.Second
)

// runFlags are the flags that shape a mirror run in either direction.
type runFlags struct {
	name        string
	follow      bool
	batchSize   int
	maxInFlight int
	timeout     time.Duration
	output      string
	leaseTTL    time.Duration

	changed func(flag string) bool // tells a flag given empty from one not given
}

func (f *runFlags) bind(c *cobra.Command) {
	fs := c.Flags()
	f.changed = fs.Changed
	fs.StringVar(&f.name, "name", "", "mirror name: keys its checkpoint and lease (default derived from the source and destination)")
	fs.BoolVarP(&f.follow, "follow", "f", false, "keep mirroring new data until SIGINT/SIGTERM instead of stopping at what exists at start")
	fs.IntVar(&f.batchSize, "batch-size", defaultBatchSize, "the most entries read, written and confirmed together")
	fs.IntVar(&f.maxInFlight, "max-in-flight", mirror.DefaultMaxInFlight, "batches written but not yet confirmed; more hides latency, costs memory")
	fs.DurationVar(&f.timeout, "timeout", defaultOneShotTimeout, "one-shot: how long to retry an unreachable server before exiting 1 (follow retries forever)")
	fs.StringVarP(&f.output, "output", "o", "text", "summary format: text or json")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", checkpoint.DefaultLeaseTTL, "how long a crashed mirror's lease keeps another process from starting under its name; a run on the same host takes a dead process's lease over at once")
}

// validate reports every problem with the run flags.
func (f *runFlags) validate() []string {
	var problems []string
	if f.batchSize < 1 || f.batchSize > 100000 {
		problems = append(problems, fmt.Sprintf("--batch-size must be from 1 to 100000, got %d", f.batchSize))
	}
	if f.maxInFlight < 1 || f.maxInFlight > 64 {
		problems = append(problems, fmt.Sprintf("--max-in-flight must be from 1 to 64, got %d", f.maxInFlight))
	}
	if f.timeout <= 0 {
		problems = append(problems, fmt.Sprintf("--timeout must be positive, got %s", f.timeout))
	}
	if f.leaseTTL < time.Second {
		problems = append(problems, fmt.Sprintf("--lease-ttl must be at least 1s, got %s", f.leaseTTL))
	}
	if f.output != "text" && f.output != "json" {
		problems = append(problems, fmt.Sprintf("--output must be text or json, got %q", f.output))
	}
	if f.changed != nil && f.changed("name") && f.name == "" {
		// Not the default name: an empty one would be a mistake in a
		// script (an unset variable), and keys every mirror alike.
		problems = append(problems, "--name must not be empty")
	}
	return problems
}

// engineOptions turns the flags into engine options.
func (f *runFlags) engineOptions(a *app) mirror.Options {
	opt := mirror.Options{
		MaxInFlight: f.maxInFlight,
		Logger:      a.logger(),
	}
	if !f.follow {
		opt.RetryFor = f.timeout
	}
	if a.env.Getenv("GOMEMLIMIT") == "" {
		opt.OnCommit = memoryLimitFollower(f.maxInFlight)
	}
	return opt
}

// memoryLimitFollower keeps the garbage collector's soft memory limit (see
// cmd/xmirror) above what the batches in flight actually hold: large
// entries can make large batches (kafka-to-redis, or redis-to-kafka with
// --batch-bytes 0), and a limit below the working set would make the
// collector run without pause. The limit only ever rises.
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

// followStopped turns the error of a follow run that a signal stopped
// into success: that is how a follow run ends.
func followStopped(c *cobra.Command, f *runFlags, err error) error {
	if f.follow && err != nil && errors.Is(err, context.Canceled) && c.Context().Err() != nil {
		return nil
	}
	return err
}

// problemsError joins validation problems into one usage error.
func problemsError(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	msg := problems[0]
	for _, p := range problems[1:] {
		msg += "; " + p
	}
	return usageErrorf("%s", msg)
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
	Lost    int64  `json:"lost,omitempty"`
	Stopped string `json:"stopped"`
}

// finish prints the summary of a run and turns its error into the command's.
// A follow run stopped by a signal succeeded; a one-shot run stopped by one
// did not finish, which is exit 130.
func finish(a *app, c *cobra.Command, f *runFlags, s summary, stats mirror.Stats, err error) error {
	s.Entries, s.Bytes = stats.Entries, stats.Bytes
	s.Seconds = stats.Elapsed.Seconds()
	s.Rate = stats.Rate()
	interrupted := err != nil && errors.Is(err, context.Canceled) && c.Context().Err() != nil
	switch {
	case err == nil:
		s.Stopped = "done"
	case interrupted && f.follow:
		s.Stopped = "signal"
		err = nil
	case interrupted:
		s.Stopped = "interrupted"
	default:
		s.Stopped = "error"
	}
	if err != nil {
		a.logger().Debug("stopped", "mirror", s.Mirror, "reason", s.Stopped, "err", err)
	} else {
		a.logger().Debug("stopped", "mirror", s.Mirror, "reason", s.Stopped)
	}
	if !a.global.quiet || f.output == "json" {
		if f.output == "json" {
			json.NewEncoder(a.env.Stdout).Encode(s)
		} else {
			line := fmt.Sprintf("%s: mirrored %d entries (%s) in %.2fs, %.0f entries/s", s.Mirror, s.Entries, humanBytes(s.Bytes), s.Seconds, s.Rate)
			if s.Skipped > 0 {
				line += fmt.Sprintf(", %d skipped", s.Skipped)
			}
			if s.Lost > 0 {
				line += fmt.Sprintf(", %d lost", s.Lost)
			}
			if s.Stopped != "done" {
				line += "; stopped: " + s.Stopped
			}
			fmt.Fprintln(a.env.Stderr, line)
		}
	}
	return err
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
