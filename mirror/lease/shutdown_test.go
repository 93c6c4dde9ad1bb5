package lease

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestShutdownGivesUpOnStepsThatHangWithinItsBudget(t *testing.T) {
	var logs bytes.Buffer
	sd := NewShutdown(slog.New(slog.NewTextHandler(&logs, nil)))
	hang := make(chan struct{})
	defer close(hang)

	begin := time.Now()
	sd.Spawn("kafka close that hangs", func() { <-hang })
	sd.Spawn("kafka close", func() {})
	sd.Step("step that hangs", func(ctx context.Context) {
		<-ctx.Done() // as a call bounded by ctx gives up
		<-hang       // and one that does not
	})
	sd.Step("step after it", func(ctx context.Context) {
		if ctx.Err() == nil {
			t.Error("a step after the budget ran out got a live context")
		}
	})
	sd.Wait()
	took := time.Since(begin)

	if took < CloseBudget || took > CloseBudget+500*time.Millisecond {
		t.Errorf("the way out took %s, want about the budget %s", took, CloseBudget)
	}
	for _, what := range []string{"step that hangs", "kafka close that hangs"} {
		if !strings.Contains(logs.String(), what) {
			t.Errorf("no warning names %q; logs:\n%s", what, logs.String())
		}
	}
	if strings.Contains(logs.String(), `step="kafka close"`) {
		t.Errorf("a step that ended is named as given up; logs:\n%s", logs.String())
	}
}

func TestShutdownWaitsForStepsThatEnd(t *testing.T) {
	var logs bytes.Buffer
	sd := NewShutdown(slog.New(slog.NewTextHandler(&logs, nil)))
	var order []string
	sd.Spawn("close", func() { time.Sleep(50 * time.Millisecond) })
	sd.Step("first", func(context.Context) { order = append(order, "first") })
	sd.Step("second", func(context.Context) { order = append(order, "second") })
	begin := time.Now()
	sd.Wait()
	if took := time.Since(begin); took > CloseBudget/2 {
		t.Errorf("wait took %s for a step of 50ms", took)
	}
	if strings.Join(order, ",") != "first,second" {
		t.Errorf("steps ran as %v, want first,second", order)
	}
	if logs.Len() > 0 {
		t.Errorf("warnings although every step ended:\n%s", logs.String())
	}
}
