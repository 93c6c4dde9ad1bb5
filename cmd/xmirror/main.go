// Command xmirror mirrors Redis Streams and Kafka topics in both directions.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/xmirror/xmirror/cmd"
)

func main() {
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
	os.Exit(cmd.Execute(ctx, cmd.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}, os.Args[1:]))
}
