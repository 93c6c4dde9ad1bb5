// Command xmirror mirrors Redis Streams and Kafka topics in both directions.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/xmirror/xmirror/cmd"
)

// Garbage collector defaults for a streaming copier: collect less often
// than Go's default (GOGC=100), which costs the mirror a fifth of its
// throughput, but never let the heap grow past a soft limit, so memory stays
// bounded by the batch settings. GOGC and GOMEMLIMIT, when set, win.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 48 << 20
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	// The first signal cancels ctx and the command stops cleanly: in-flight
	// batches finish, what was confirmed is checkpointed. A second one means
	// "now"; nothing unconfirmed was checkpointed, so that is still safe.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-signals
		<-signals
		fmt.Fprintln(os.Stderr, "xmirror: second signal, exiting at once")
		os.Exit(cmd.ExitInterrupted)
	}()
	os.Exit(cmd.Execute(ctx, cmd.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}, os.Args[1:]))
}
