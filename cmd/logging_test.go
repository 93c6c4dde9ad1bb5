package cmd_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// TestEveryLogLineOfARunNamesItsMirror: at -v with --log-format json,
// each line a run of either direction logs is one JSON object carrying
// the mirror's name.
func TestEveryLogLineOfARunNamesItsMirror(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream, back := testenv.Name(t, "s"), testenv.Name(t, "b")
	topic := testenv.Topic(t, kc, 1)
	r2kName, k2rName := testenv.Name(t, "r"), testenv.Name(t, "k")
	t.Cleanup(func() {
		ctx := context.Background()
		rc.Do(ctx, rc.B().Del().Key(stream, back, checkpoint.R2KKey(r2kName), checkpoint.K2RKey(k2rName, back)).Build())
	})
	addEntries(t, rc, stream, 0, 20, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	for _, run := range []struct {
		name string
		args []string
	}{
		{r2kName, []string{"r2k", "--stream", stream, "--topic", topic, "--name", r2kName}},
		{k2rName, []string{"k2r", "--topic", topic, "--stream", back, "--name", k2rName}},
	} {
		r := mustMirror(t, append(run.args, "-v", "--log-format", "json")...)
		lines := 0
		for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%s: not a JSON line: %s", run.args[0], line)
			}
			if rec["mirror"] != run.name {
				t.Errorf("%s: a log line without its mirror %q: %s", run.args[0], run.name, line)
			}
			lines++
		}
		if lines < 3 {
			t.Fatalf("%s: %d JSON log lines at -v, want the steps of the run\nstderr: %s", run.args[0], lines, r.stderr)
		}
	}
}
