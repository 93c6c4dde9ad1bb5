package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/setting"
)

func TestAConfigProblemIsAUsageErrorOnlyBeforeTheMirrorRuns(t *testing.T) {
	var ps setting.Problems
	ps.Addf("OnGap", "{OnGap} must be fail or skip, got %q", "x")
	problem := ps.Err()
	names := flagNames(redisToKafkaFlags)
	tests := []struct {
		name     string
		err      error
		cmd      []string
		code     int
		contains string
	}{
		{"New refused the Config", problem, nil, ExitUsage, `--on-gap must be fail or skip, got "x"`},
		{"the command's own flags", nil, []string{"--output must be text or json"}, ExitUsage, "--output must be"},
		{"both", problem, []string{"--output must be text or json"}, ExitUsage, `got "x"; --output must be`},
		{"refused in the set-up", runError{mirror.NotSetUp(fmt.Errorf("set up: %w", problem))}, nil, ExitUsage, "--on-gap must be"},
		{"met after the set-up", runError{fmt.Errorf("partition added: %w", problem)}, nil, ExitFailure, "--on-gap must be"},
		{"a runtime failure", runError{setting.Errorf("kafka: pass {CreateTopic}")}, nil, ExitFailure, "pass --create-topic"},
		{"interrupted", runError{fmt.Errorf("read: %w", context.Canceled)}, nil, ExitInterrupted, "read: context canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := commandError(tc.err, names, tc.cmd)
			if code := ExitCode(err); code != tc.code {
				t.Errorf("exit %d, want %d (%v)", code, tc.code, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.contains) {
				t.Errorf("%q does not say %q", msg, tc.contains)
			}
			if tc.err != nil && !errors.Is(err, tc.err) && !errors.Is(err, context.Canceled) {
				t.Errorf("%v does not wrap %v", err, tc.err)
			}
			var ce *setting.ConfigError
			if tc.err == problem && !errors.As(err, &ce) {
				t.Errorf("%v: the Config's problems are not found through the command's error", err)
			}
		})
	}
}

func TestErrorsInLogsNameSettingsAsFlags(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: renderErrors(allFlagNames)}))
	log.Warn("retrying", "err", setting.Errorf("pass {Timestamp} now, or {OnError} skip; check {Kafka}"), "stream", "{Name}")
	for _, want := range []string{"pass --timestamp now, or --on-error skip; check --brokers", `stream={Name}`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("log %q does not say %q", b.String(), want)
		}
	}
}
