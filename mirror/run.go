package mirror

import (
	"log/slog"
	"time"

	"github.com/xmirror/xmirror/mirror/setting"
)

// Defaults of a run, in either direction.
const (
	// DefaultBatchSize entries per read: large enough that round trips
	// are a small share of the time, small enough that memory stays a
	// few MiB.
	DefaultBatchSize = 2000
	// MaxBatchSize bounds BatchSize: a batch is held in memory whole.
	MaxBatchSize = 100000
	// MaxMaxInFlight bounds MaxInFlight.
	MaxMaxInFlight = 64
	// DefaultTimeout is how long a one-shot run keeps retrying a server
	// that stopped answering before it fails.
	DefaultTimeout = 30 * time.Second
	// DefaultLeaseTTL is how long a crashed mirror's lease keeps another
	// process from starting under its name: long enough to ride out a
	// stall of a few seconds, short enough for a quick restart.
	DefaultLeaseTTL = 15 * time.Second
	// MinLeaseTTL is the shortest lease: it is renewed every third of it.
	MinLeaseTTL = time.Second
	// ConnectTimeout bounds the first connection to each server.
	ConnectTimeout = 10 * time.Second
	// DefaultRescan is how often a follow run looks for new streams or
	// topics matching its patterns: soon enough that a new one is
	// mirrored within half a minute, rarely enough that the scans cost
	// the servers nothing.
	DefaultRescan = 30 * time.Second
)

// RunConfig is what shapes a mirror's run in either direction.
type RunConfig struct {
	// Name is the mirror's name: it keys its checkpoint and its lease
	// (and, for redis-to-kafka, its Kafka transactional ID), so the same
	// name resumes the same mirror. Required.
	Name string
	// Follow keeps mirroring new data until the context ends; otherwise
	// a run mirrors what exists when it starts and returns.
	Follow bool
	// BatchSize is the most entries read, written and confirmed together
	// (1 to MaxBatchSize).
	BatchSize int
	// MaxInFlight is how many batches may be written but not yet
	// confirmed (1 to MaxMaxInFlight).
	MaxInFlight int
	// Timeout bounds, in a one-shot run, how long a server that does not
	// answer is retried, and each step that waits for one (a read-back,
	// a confirmation). A follow run retries for ever.
	Timeout time.Duration
	// LeaseTTL is how long the lease of a process that stopped renewing
	// it keeps other processes out (at least MinLeaseTTL).
	LeaseTTL time.Duration
	// Standby makes a run whose mirror already runs elsewhere (its lease
	// held) wait for the lease instead of failing, and take the mirror
	// over once the holder releases it or its lease expires: an
	// active/passive pair across hosts.
	Standby bool
	// Logger receives the run's logs; nil logs nothing.
	Logger *slog.Logger
	// Observer watches the run; nil watches nothing.
	Observer *Observer
}

// DefaultRunConfig is a one-shot run with the default settings, to which
// a caller adds a Name.
func DefaultRunConfig() RunConfig {
	return RunConfig{
		BatchSize:   DefaultBatchSize,
		MaxInFlight: DefaultMaxInFlight,
		Timeout:     DefaultTimeout,
		LeaseTTL:    DefaultLeaseTTL,
	}
}

// Validate adds every problem of c to ps.
func (c *RunConfig) Validate(ps *setting.Problems) {
	if c.Name == "" {
		// An empty name would be a mistake of a script (an unset
		// variable), and would key every mirror alike.
		ps.Addf("Name", "{Name} must not be empty")
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatchSize {
		ps.Addf("BatchSize", "{BatchSize} must be from 1 to %d, got %d", MaxBatchSize, c.BatchSize)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > MaxMaxInFlight {
		ps.Addf("MaxInFlight", "{MaxInFlight} must be from 1 to %d, got %d", MaxMaxInFlight, c.MaxInFlight)
	}
	if c.Timeout <= 0 {
		ps.Addf("Timeout", "{Timeout} must be positive, got %s", c.Timeout)
	}
	if c.LeaseTTL < MinLeaseTTL {
		ps.Addf("LeaseTTL", "{LeaseTTL} must be at least %s, got %s", MinLeaseTTL, c.LeaseTTL)
	}
}

// Log is c's logger, or one that discards.
func (c *RunConfig) Log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	// Every line says which mirror it is about: a process may run
	// several, and a log collector gathers many processes.
	return c.Logger.With("mirror", c.Name)
}

// EngineOptions are the options of the engine's Run for c, after runs
// that did before.
func (c *RunConfig) EngineOptions(before Stats) Options {
	opt := Options{MaxInFlight: c.MaxInFlight, Logger: c.Log(), Observer: c.Observer, Before: before}
	if !c.Follow {
		opt.RetryFor = c.Timeout
	}
	return opt
}

// SetUpError is the error of a run that stopped before it was set up (a
// server unreachable, a topic missing, its lease held): nothing was
// mirrored, and its stats mean nothing.
type SetUpError struct{ Err error }

func (e *SetUpError) Error() string { return e.Err.Error() }
func (e *SetUpError) Unwrap() error { return e.Err }

// NotSetUp wraps err as a *SetUpError; nil stays nil.
func NotSetUp(err error) error {
	if err == nil {
		return nil
	}
	return &SetUpError{Err: err}
}
