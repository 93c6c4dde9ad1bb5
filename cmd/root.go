// Package cmd holds xmirror's command-line interface: each command parses
// its flags into an options struct, validates it and hands it to the engine.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/mirror/setting"
)

// Version is set at build time with -ldflags "-X .../cmd.Version=...".
var Version = "dev"

// Env holds what commands take from the process: the streams they write to
// and the environment, so tests can run commands in-process.
type Env struct {
	Stdin  io.Reader // nil: no one to answer a question
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	quiet       bool
	verbose     bool
	logFormat   string
	logLevel    string
	level       slog.Level
	profile     profileFlags
	stopProfile func() error
}

// Environment variables of the logging flags.
const (
	envLogFormat = "XMIRROR_LOG_FORMAT"
	envLogLevel  = "XMIRROR_LOG_LEVEL"
)

// resolveLogging settles the log format and level, flags before the
// environment; a value it does not know is a usage error.
func (g *globalOptions) resolveLogging(c *cobra.Command, env Env) error {
	flags := c.Flags()
	if !flags.Changed("log-format") {
		if v := strings.TrimSpace(env.Getenv(envLogFormat)); v != "" {
			g.logFormat = v
		}
	}
	g.logFormat = strings.ToLower(g.logFormat)
	if g.logFormat != "text" && g.logFormat != "json" {
		return usageErrorf("--log-format must be text or json, got %q", g.logFormat)
	}
	// Flags before the environment: --log-level, then -q or -v, then
	// XMIRROR_LOG_LEVEL, then info.
	level := g.logLevel
	if !flags.Changed("log-level") {
		level = ""
		if env := strings.TrimSpace(env.Getenv(envLogLevel)); env != "" {
			if err := new(slog.Level).UnmarshalText([]byte(env)); err != nil {
				return usageErrorf("%s must be debug, info, warn or error, got %q", envLogLevel, env)
			}
			if !g.quiet && !g.verbose {
				level = env
			}
		}
	}
	switch {
	case level != "":
		if err := g.level.UnmarshalText([]byte(level)); err != nil {
			return usageErrorf("--log-level must be debug, info, warn or error, got %q", level)
		}
	case g.quiet:
		g.level = slog.LevelError
	case g.verbose:
		g.level = slog.LevelDebug
	default:
		g.level = slog.LevelInfo
	}
	return nil
}

// NewRootCommand builds the xmirror command tree.
func NewRootCommand(env Env) *cobra.Command {
	root, _ := newRoot(env)
	return root
}

func newRoot(env Env) (*cobra.Command, *globalOptions) {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	var g globalOptions
	root := &cobra.Command{
		Use:   "xmirror",
		Short: "Mirror Redis Streams and Kafka topics, in both directions",
		Long: `xmirror copies entries from Redis Streams into Kafka topics and records
from Kafka topics into Redis Streams.

By default a run is one-shot: it copies what exists when it starts, prints a
summary and exits (for cron jobs and CI data seeding). With --follow it keeps
mirroring until SIGINT or SIGTERM. Its positions are checkpointed in Redis, so
each mirror resumes exactly where it left off, and an entry is acknowledged and
checkpointed only after the destination confirmed it.

Connections:
  --redis URL       redis://[user:password@]host:port[/db], rediss:// for TLS
                    (env XMIRROR_REDIS, default redis://127.0.0.1:6379/0;
                    the environment keeps a password out of ps); parameters
                    ?db= dial_timeout= write_timeout= client_name=
                    protocol=2|3 skip_verify= (rediss), no others
  --redis-ca FILE   rediss://: the CAs of the server's certificate (env
                    XMIRROR_REDIS_CA); --redis-cert/--redis-key FILE for
                    mutual TLS, --redis-tls-server-name NAME,
                    --redis-tls-insecure (tests only)
  --redis-password-file FILE   the password, when the URL has none; or
                    XMIRROR_REDIS_PASSWORD, the user in XMIRROR_REDIS_USER
  --brokers LIST    host:port[,host:port...] (env XMIRROR_BROKERS,
                    default 127.0.0.1:9092)
  --kafka-tls       TLS to the brokers (implied by --kafka-ca FILE,
                    --kafka-cert/--kafka-key FILE, --kafka-tls-server-name,
                    --kafka-tls-insecure); env XMIRROR_KAFKA_*
  --kafka-sasl-mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512|OAUTHBEARER
                    with --kafka-user and XMIRROR_KAFKA_PASSWORD or
                    --kafka-password-file; a token in XMIRROR_KAFKA_TOKEN or
                    --kafka-token-file

Logging: --log-format text|json, --log-level debug|info|warn|error
(env XMIRROR_LOG_FORMAT, XMIRROR_LOG_LEVEL); -v is debug, -q error.

Metrics: --metrics-addr HOST:PORT (env XMIRROR_METRICS_ADDR) serves
Prometheus /metrics, /healthz and /readyz while a mirror runs.

Exit codes: 0 success, 1 runtime failure, 2 usage error,
130 a one-shot run interrupted before it finished.`,
		Example: `  xmirror check
  xmirror redis-to-kafka --stream orders --create-topic
  xmirror kafka-to-redis --topic orders --stream orders-copy --follow
  xmirror status --max-lag 10000
  xmirror run --config mirrors.yaml`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       Version,
	}
	// An unknown command is a usage error (exit 2), with cobra's
	// suggestions; without arguments the root command shows its help.
	root.Args = cobra.ArbitraryArgs
	root.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q", args[0])
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return usageErrorf("%s", msg)
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetVersionTemplate("xmirror {{.Version}}\n")
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "print no progress or summary, only errors")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log what the mirror does, step by step")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log lines as text (key=value) or json, one object per line (env "+envLogFormat+")")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "log debug, info, warn or error and above; wins over -v and -q, which win over the environment (env "+envLogLevel+"; default info, debug with -v, error with -q)")
	g.profile.bind(root)
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		if err := g.resolveLogging(c, env); err != nil {
			return err
		}
		var err error
		g.stopProfile, err = g.profile.start()
		return err
	}
	// Bad flags are usage errors (exit 2), wherever cobra finds them.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })

	// Logs and summaries go to stderr through errOut, which live progress
	// bars take over while they are drawn, so a line written meanwhile
	// lands above them.
	errOut := &switchWriter{}
	errOut.set(env.Stderr)
	loggerNaming := func(names setting.Names) *slog.Logger {
		opts := &slog.HandlerOptions{Level: g.level, ReplaceAttr: renderErrors(names)}
		if g.logFormat == "json" {
			return slog.New(slog.NewJSONHandler(errOut, opts))
		}
		return slog.New(slog.NewTextHandler(errOut, opts))
	}
	logger := func() *slog.Logger { return loggerNaming(allFlagNames) }
	app := &app{env: env, global: &g, logger: logger, loggerNaming: loggerNaming, errOut: errOut}

	root.AddCommand(
		newVersionCmd(app),
		newCheckCmd(app),
		newRedisToKafkaCmd(app),
		newKafkaToRedisCmd(app),
		newStatusCmd(app),
		newRunCmd(app),
		newCheckpointCmd(app),
	)
	completeEnums(root) // --log-format, --log-level
	for _, c := range root.Commands() {
		if c.Args != nil {
			continue
		}
		c.Args = wrapArgs(c.Args)
	}
	return root, &g
}

// app is what every command is built with.
type app struct {
	env    Env
	global *globalOptions
	logger func() *slog.Logger
	// loggerNaming is a logger whose errors name settings by names.
	loggerNaming func(names setting.Names) *slog.Logger
	errOut       *switchWriter // stderr, or the progress bars drawn on it
}

// switchWriter writes to the writer last set.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	w := s.w
	s.mu.Unlock()
	return w.Write(p)
}

// wrapArgs turns cobra's argument errors into usage errors.
func wrapArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	if check == nil {
		check = cobra.NoArgs
	}
	return func(c *cobra.Command, args []string) error {
		if err := check(c, args); err != nil {
			return usageError(err)
		}
		return nil
	}
}

// envOr returns the flag's value, or the environment variable's when the
// flag was not given, so flags always win over the environment.
func (a *app) envOr(c *cobra.Command, flag, envVar, value string) string {
	if c.Flags().Changed(flag) {
		return value
	}
	if v := strings.TrimSpace(a.env.Getenv(envVar)); v != "" {
		return v
	}
	return value
}

// Execute runs xmirror with args and returns the process exit code, having
// printed any error once, on one line.
//
// A panic is a bug of xmirror, never an answer to what a user's input or
// servers are; should one still reach here, it ends the run with exit 1
// and one line, and the stack under -v. (Only a panic of the goroutine that
// runs the command reaches here: the mirror's own goroutines must not
// panic.)
func Execute(ctx context.Context, env Env, args []string) (code int) {
	root, g := newRoot(env)
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		fmt.Fprintf(env.Stderr, "xmirror: internal error: %v; this is a bug of xmirror, please report it with the output of the same command under -v\n", p)
		if g.verbose {
			env.Stderr.Write(debug.Stack())
		}
		code = ExitFailure
	}()
	root.SetArgs(args)
	failed, err := root.ExecuteContextC(ctx)
	if g.stopProfile != nil {
		if perr := g.stopProfile(); perr != nil && err == nil {
			err = perr
		}
	}
	code = ExitCode(err)
	if code == ExitInterrupted && ctx.Err() != nil {
		// Not the bare "context canceled" of whatever step was running.
		err = errors.New("interrupted by a signal before the run finished; what was confirmed is checkpointed, run again to continue")
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "xmirror: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		if code == ExitUsage {
			// The help of the command that refused its arguments.
			path := root.CommandPath()
			if failed != nil {
				path = failed.CommandPath()
			}
			fmt.Fprintf(env.Stderr, "Run '%s --help' for usage.\n", path)
		}
	}
	return code
}
