package cmd_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// restartDelay is how soon a supervisor (systemd's RestartSec, a container
// runtime) starts the mirror again after it died.
const restartDelay = 100 * time.Millisecond

// killNineAndRestart runs a follow mirror, kills it with SIGKILL once
// progress moved, and starts it again restartDelay later, cycles times,
// with the default --lease-ttl (15s): each restart must take the dead
// process's lease at once and log it. It returns the last run, running.
func killNineAndRestart(t *testing.T, rc rueidis.Client, kind, name string, args []string, cycles int, progress func() int64) *started {
	t.Helper()
	key := checkpoint.LeaseKey(kind, name)
	host, _ := os.Hostname()
	var p *started
	for i := 0; i <= cycles; i++ {
		begin := time.Now()
		p = startXmirror(t, args...)
		prefix := fmt.Sprintf("%s:%d:", host, p.cmd.Process.Pid)
		limit := 5 * time.Second // a third of the lease TTL
		if i == 0 {
			limit = 2 * time.Minute // the first start may build the binary
		}
		testenv.Wait(t, limit, fmt.Sprintf("run %d to hold lease %s", i+1, key), func() bool {
			select {
			case <-p.done:
				t.Fatalf("run %d, started %s after a kill -9: exit %d; stderr:\n%s", i+1, restartDelay, p.cmd.ProcessState.ExitCode(), p.stderr)
			default:
			}
			v, _ := rc.Do(context.Background(), rc.B().Get().Key(key).Build()).ToString()
			return strings.HasPrefix(v, prefix)
		})
		took := time.Since(begin)
		if i > 0 {
			testenv.Wait(t, 5*time.Second, "the restart to log the takeover", func() bool {
				return strings.Contains(p.stderr.String(), "took over the lease") && strings.Contains(p.stderr.String(), "old_holder=")
			})
		}
		if i == cycles {
			break
		}
		at := progress()
		testenv.Wait(t, 30*time.Second, fmt.Sprintf("run %d to mirror something", i+1), func() bool { return progress() > at })
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		t.Logf("run %d held the lease %s after its start; killed at %d", i+1, took.Round(time.Millisecond), progress())
		time.Sleep(restartDelay) // the supervisor's delay, not a wait for a condition
	}
	return p
}

// steadyLoad calls write every 20ms until stopped.
func steadyLoad(t *testing.T, write func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				write()
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func TestR2KRestartRightAfterKillNineRunsAtOnceAndLosesNothing(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.R2KKey(name))

	var mu sync.Mutex
	var ids []string
	n := 0
	stop := steadyLoad(t, func() {
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, addEntries(t, rc, stream, n, 20, func(i int) []string { return []string{"value", strconv.Itoa(i)} })...)
		n += 20
	})
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--follow", "--batch-size", "50"}
	p := killNineAndRestart(t, rc, "redis-to-kafka", name, args, 5, func() int64 { return endOffset(t, adm, topic) })
	stop()
	testenv.Wait(t, time.Minute, "every entry in Kafka", func() bool { return endOffset(t, adm, topic) >= int64(len(ids)) })
	if code, took := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d after %s; stderr:\n%s", code, took, p.stderr)
	}
	exactlyOnce(t, topic, ids)
	// And each record carries its entry's value.
	value := make(map[string]string, len(ids))
	for i, id := range ids {
		value[id] = `{"value":"` + strconv.Itoa(i) + `"}`
	}
	for _, r := range readTopic(t, topic) {
		id, _ := header(r, "xmirror.id")
		if string(r.Value) != value[id] {
			t.Fatalf("record %d (entry %s) holds %q, want %q", r.Offset, id, r.Value, value[id])
		}
	}
	t.Logf("%d entries mirrored once each across 5 kill -9 and restarts", len(ids))
}

func TestK2RRestartRightAfterKillNineRunsAtOnceAndLosesNothing(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 2)
	stream := testenv.Stream(t, rc)
	name := testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	pcl := testenv.Kafka(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(topic))

	var mu sync.Mutex
	n := 0
	stop := steadyLoad(t, func() {
		mu.Lock()
		defer mu.Unlock()
		// numbered's seq is per partition only within one call: make
		// whole rounds of both partitions so seq stays i/2.
		recs := numbered(n, 20, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pcl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Errorf("produce: %v", err)
			return
		}
		n += 20
	})
	xlen := streamLen(rc, stream)
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow", "--batch-size", "50"}
	p := killNineAndRestart(t, rc, "kafka-to-redis", name, args, 5, xlen)
	stop()
	testenv.Wait(t, time.Minute, "every record in the stream", func() bool { return xlen() >= int64(n) })
	if code, took := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d after %s; stderr:\n%s", code, took, p.stderr)
	}
	entries := readStream(t, rc, stream)
	checkOnceInOrder(t, entries, n)
	for _, e := range entries {
		id, _ := strconv.Atoi(e.FieldValues["id"])
		if e.FieldValues["p"] != strconv.Itoa(id%2) || e.FieldValues["seq"] != strconv.Itoa(id/2) || len(e.FieldValues) != 3 {
			t.Fatalf("entry %s holds %v, want record %d's fields", e.ID, e.FieldValues, id)
		}
	}
	t.Logf("%d records mirrored once each across 5 kill -9 and restarts", n)
}
