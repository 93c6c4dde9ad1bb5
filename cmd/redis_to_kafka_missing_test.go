package cmd_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/internal/testenv"
)

// A one-shot redis-to-kafka checks its streams before its topics: a missing
// stream is named (not its topic) or, with --allow-missing, skipped, and no
// topic is created for a stream that is not there.
func TestRedisToKafkaChecksStreamsBeforeTopics(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	exists := func(topic string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		details, err := adm.ListTopics(ctx, topic)
		if err != nil {
			t.Fatalf("list topics: %v", err)
		}
		d, ok := details[topic]
		return ok && d.Err == nil
	}
	for _, tc := range []struct {
		name    string
		flags   []string
		present bool // a second stream, with entries, is mirrored too
		code    int
		want    string
	}{
		{"create-topic, missing stream", []string{"--create-topic"}, false, 1, "does not exist in Redis"},
		{"create-topic, allow-missing", []string{"--create-topic", "--allow-missing"}, false, 0, ""},
		{"missing topic, missing stream", nil, false, 1, "does not exist in Redis"},
		{"missing topic, allow-missing", []string{"--allow-missing"}, false, 0, ""},
		{"create-topic, allow-missing, one stream present", []string{"--create-topic", "--allow-missing"}, true, 0, "mirrored 2 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			missing := testenv.Name(t, "missing")
			prefix := testenv.Name(t, "t")
			topicOf := func(stream string) string { return prefix + "." + stream }
			args := []string{"r2k", "--stream", missing, "--topic", prefix + ".{stream}", "--name", testenv.Name(t, "m")}
			var stream string
			if tc.present {
				stream = testenv.Stream(t, rc)
				addEntries(t, rc, stream, 0, 2, func(i int) []string { return []string{"n", fmt.Sprint(i)} })
				args = append(args, "--stream", stream)
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					adm.DeleteTopics(ctx, topicOf(stream))
				})
			}
			r := xmirror(t, append(args, tc.flags...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			if tc.code != 0 {
				line := strings.TrimSpace(r.stderr)
				if !strings.Contains(line, fmt.Sprintf("stream %q %s", missing, tc.want)) || strings.Contains(line, topicOf(missing)) || strings.Count(line, "\n") > 0 {
					t.Fatalf("stderr %q: want one line naming the stream %s, not its topic", r.stderr, missing)
				}
			} else if !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("stderr %q, want %q", r.stderr, tc.want)
			}
			if exists(topicOf(missing)) {
				adm.DeleteTopics(context.Background(), topicOf(missing))
				t.Fatalf("topic %s created for a stream that does not exist", topicOf(missing))
			}
			if tc.present {
				if n := len(readTopic(t, topicOf(stream))); n != 2 {
					t.Fatalf("topic %s holds %d records, want the stream's 2", topicOf(stream), n)
				}
			}
		})
	}
}
