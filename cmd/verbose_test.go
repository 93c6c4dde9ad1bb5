package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

func TestVerboseLogsEachStepOfAFreshRun(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	back := testenv.Stream(t, rc)
	addEntries(t, rc, stream, 0, 3, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	r2kName, k2rName := testenv.Name(t, "r"), testenv.Name(t, "k")
	t.Cleanup(func() {
		ctx := context.Background()
		rc.Do(ctx, rc.B().Del().Key(checkpoint.R2KKey(r2kName)).Build())
		rc.Do(ctx, rc.B().Del().Key(checkpoint.K2RKey(k2rName, back)).Build())
	})
	redacted := testenv.RedisURL()
	cases := []struct {
		name  string
		args  []string
		steps []string
	}{
		{"redis-to-kafka", []string{"r2k", "-v", "--stream", stream, "--topic", topic, "--name", r2kName}, []string{
			`msg="connected to redis" mirror=` + r2kName + ` url=` + redacted,
			`msg="lease taken" mirror=` + r2kName,
			`msg="connected to kafka" mirror=` + r2kName + ` brokers=`,
			`msg="topics ready" mirror=` + r2kName + ` partitions=map[` + topic + `:1]`,
			`msg="no checkpoint yet: a new mirror" mirror=` + r2kName,
			`msg="consumer group" mirror=` + r2kName + ` group=xmirror:` + r2kName,
			`msg="consumer group created" mirror=` + r2kName + ` stream=` + stream + ` group=xmirror:` + r2kName + ` at=0`,
			`msg="nothing pending from an earlier run, and nothing in Kafka after the checkpoint" mirror=` + r2kName,
			`msg=mirroring mirror=` + r2kName + ` streams=[` + stream + `]`,
			`msg=stopped mirror=` + r2kName + ` reason=done`,
		}},
		{"kafka-to-redis", []string{"k2r", "-v", "--topic", topic, "--stream", back, "--name", k2rName}, []string{
			`msg="connected to redis" mirror=` + k2rName + ` url=` + redacted,
			`msg="lease taken" mirror=` + k2rName,
			`msg="connected to kafka" mirror=` + k2rName + ` brokers=`,
			`msg=partition mirror=` + k2rName + ` topic=` + topic + ` partition=0 stream=` + back + ` from=0`,
			`msg=mirroring mirror=` + k2rName + ` topics=[` + topic + `]`,
			`msg=stopped mirror=` + k2rName + ` reason=done`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustMirror(t, tc.args...)
			for _, step := range tc.steps {
				if !strings.Contains(r.stderr, step) {
					t.Errorf("-v does not log %s; stderr:\n%s", step, r.stderr)
				}
			}
			// Steps, not batches: a handful of lines.
			if n := strings.Count(r.stderr, "\n"); n > 20 {
				t.Errorf("%d lines for a run of 3 entries; stderr:\n%s", n, r.stderr)
			}
		})
	}
}
