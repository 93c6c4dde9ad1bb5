package cmd

import (
	"context"
	"errors"
	"fmt"
)

// Exit codes, documented in the README.
const (
	ExitOK          = 0   // everything asked for was done
	ExitFailure     = 1   // a runtime failure: a server, an entry, a checkpoint
	ExitUsage       = 2   // bad flags or arguments; nothing was done
	ExitInterrupted = 130 // a one-shot run stopped by SIGINT/SIGTERM before it finished
)

// ExitError carries the exit code an error should end the process with.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// usageErrorf reports bad input: exit 2.
func usageErrorf(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// usageError wraps err as a usage error: exit 2.
func usageError(err error) error {
	return &ExitError{Code: ExitUsage, Err: err}
}

// ExitCode picks the process exit code for an error returned by a command.
func ExitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.Code
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	default:
		return ExitFailure
	}
}
