package cmd_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xmirror/xmirror/internal/testenv"
)

// completions are what the shell completion offers for args, one per
// line (cobra's __complete, which the generated scripts call).
func completions(t *testing.T, args ...string) []string {
	t.Helper()
	r := xmirror(t, append([]string{"__complete"}, args...)...)
	if r.code != 0 {
		t.Fatalf("__complete %v: exit %d, stderr %s", args, r.code, r.stderr)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if !strings.HasPrefix(l, ":") {
			out = append(out, l)
		}
	}
	return out
}

// TestCompletionOffersLiveStreamsTopicsMirrorsAndEnums: Tab completes
// stream names from Redis, topic names from Kafka, mirror names for
// status, and the values of enum flags; a server that does not answer
// gives nothing, quickly.
func TestCompletionOffersLiveStreamsTopicsMirrorsAndEnums(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	mustMirror(t, "redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name)

	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"redis-to-kafka", "--stream", stream[:len(stream)-4]}, []string{stream}},
		{[]string{"kafka-to-redis", "--topic", topic[:len(topic)-4]}, []string{topic}},
		{[]string{"status", name[:len(name)-4]}, []string{name}},
		{[]string{"kafka-to-redis", "--format", ""}, []string{"json", "raw"}},
		{[]string{"redis-to-kafka", "--on-error", ""}, []string{"fail", "skip", "dead-letter"}},
		{[]string{"run", "--config", "f.yaml", "--progress", ""}, []string{"auto", "bar", "log", "none"}},
		{[]string{"status", "--log-level", ""}, []string{"debug", "info", "warn", "error"}},
		{[]string{"run", "--config", ""}, []string{"yaml", "yml"}}, // files of these extensions
	}
	for _, tt := range tests {
		got := completions(t, tt.args...)
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("complete %v: %q, want %q", tt.args, got, tt.want)
		}
	}
	begin := time.Now()
	if got := completions(t, "redis-to-kafka", "--redis", "redis://127.0.0.1:1/0", "--stream", "x"); len(got) != 0 {
		t.Errorf("completion against a Redis that is not there: %q, want nothing", got)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("completion against a Redis that is not there took %s", took)
	}
}
