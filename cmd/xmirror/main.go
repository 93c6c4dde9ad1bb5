// Command xmirror mirrors Redis Streams and Kafka topics in both directions.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
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

	root := cmd.NewRootCommand(cmd.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	err := root.ExecuteContext(ctx)
	code := cmd.ExitCode(err)
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(os.Stderr, "xmirror: %s\n", msg)
		if code == cmd.ExitUsage {
			fmt.Fprintln(os.Stderr, "Run 'xmirror --help' for usage.")
		}
	}
	os.Exit(code)
}
