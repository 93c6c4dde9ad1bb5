package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// The hand-rolled baseline: bench/handrolled.py (redis-py and
// confluent-kafka, batched, at-least-once), run on the same backlog as
// xmirror, so the report says what a user's own script would reach.
const (
	caseScriptR2K = "script redis-to-kafka (python)"
	caseScriptK2R = "script kafka-to-redis (python)"
)

// scriptOf is the hand-rolled script's case of each xmirror case.
var scriptOf = map[string]string{caseR2K: caseScriptR2K, caseK2R: caseScriptK2R}

// scriptAvailable says whether the script's Python (the virtualenv
// scripts/bench-venv.sh makes) runs and has its two clients.
func scriptAvailable(cfg *config) bool {
	if _, err := os.Stat(cfg.python); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, cfg.python, "-c", "import redis, confluent_kafka").Run() == nil
}

// scriptRun runs the script in direction r2k or k2r between stream and
// topic through its own consumer group, and measures it as xmirror is:
// the wall time of the process.
func scriptRun(ctx context.Context, cfg *config, e *env, direction, stream, topic string, size, n int) (measurement, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	group := e.newName("script")
	args := []string{cfg.script, direction, "--redis", cfg.redisURL, "--brokers", cfg.brokers,
		"--stream", stream, "--topic", topic, "--group", group, "--records", strconv.Itoa(n)}
	if direction == "k2r" {
		defer func() { // the script's Kafka consumer group
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			e.adm.DeleteGroups(dctx, group)
		}()
	}
	cmd := exec.CommandContext(ctx, cfg.python, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cpu := e.startCPU()
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
	}
	wall := time.Since(start)
	cores := cpu.stop(cmd.ProcessState)
	if err != nil {
		return measurement{}, fmt.Errorf("%s %s: %w: %s", cfg.script, direction, err, tail(errb.String()))
	}
	var res struct {
		Records int64 `json:"records"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &res); err != nil {
		return measurement{}, fmt.Errorf("%s %s printed %q: %w", cfg.script, direction, out.String(), err)
	}
	c := caseScriptR2K
	if direction == "k2r" {
		c = caseScriptK2R
	}
	m := measured(c, size, res.Records, wall)
	m.CPU = cores
	return m, nil
}
