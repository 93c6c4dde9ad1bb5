package cmd_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// snapshot is the serialized value of some keys, taken in one
// transaction, as a Redis snapshot holds them.
type snapshot map[string]string

func takeSnapshot(t *testing.T, c rueidis.Client, keys ...string) snapshot {
	t.Helper()
	cmds := rueidis.Commands{c.B().Multi().Build()}
	for _, k := range keys {
		cmds = append(cmds, c.B().Dump().Key(k).Build())
	}
	cmds = append(cmds, c.B().Exec().Build())
	replies := c.DoMulti(context.Background(), cmds...)
	vals, err := replies[len(replies)-1].ToArray()
	if err != nil || len(vals) != len(keys) {
		t.Fatalf("DUMP %v: %v", keys, err)
	}
	s := snapshot{}
	for i, k := range keys {
		v, err := vals[i].ToString()
		if err != nil {
			t.Fatalf("DUMP %s: %v", k, err)
		}
		s[k] = v
	}
	return s
}

// restore puts the keys back as the snapshot held them, in one
// transaction: what a Redis restarted from that snapshot would hold.
func (s snapshot) restore(t *testing.T, c rueidis.Client) {
	t.Helper()
	cmds := rueidis.Commands{c.B().Multi().Build()}
	for k, v := range s {
		cmds = append(cmds, c.B().Restore().Key(k).Ttl(0).SerializedValue(v).Replace().Build())
	}
	cmds = append(cmds, c.B().Exec().Build())
	replies := c.DoMulti(context.Background(), cmds...)
	if _, err := replies[len(replies)-1].ToArray(); err != nil {
		t.Fatalf("RESTORE: %v", err)
	}
}

// Redis going back to an older snapshot during a follow run takes the
// stream's last entries and the checkpoint's last positions with it,
// consistently. The run says so, reloads the positions Redis holds and
// writes the lost records again: each record ends up once. (It used to stop
// with "another process is probably running".)
func TestK2RFollowRunResumesAfterRedisLostWrites(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 2)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	xlen := streamLen(rc, stream)
	produce(t, topic, numbered(0, 1000, 2))
	p := startXmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow", "--batch-size", "100")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr of the run:\n%s", p.stderr.String())
		}
	})
	testenv.Wait(t, 30*time.Second, "1000 entries", func() bool { return xlen() == 1000 })
	snap := takeSnapshot(t, rc, stream, key)

	produce(t, topic, numbered(1000, 1000, 2))
	testenv.Wait(t, 30*time.Second, "2000 entries", func() bool { return xlen() == 2000 })
	snap.restore(t, rc)
	if n := xlen(); n != 1000 {
		t.Fatalf("restored stream holds %d entries", n)
	}
	// The next write finds the positions gone back.
	produce(t, topic, numbered(2000, 1000, 2))
	testenv.Wait(t, 60*time.Second, "3000 entries", func() bool { return xlen() >= 3000 })
	if p.cmd.ProcessState != nil {
		t.Fatalf("the run stopped: %s", p.stderr.String())
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	stderr := p.stderr.String()
	// Each partition was at 500 in the snapshot and at 1000 when it was
	// restored.
	if !strings.Contains(stderr, "Redis lost writes: positions of "+topic+"/") || !strings.Contains(stderr, "went back from 1000 to 500") {
		t.Errorf("no warning naming the lost writes: %s", stderr)
	}
	if strings.Contains(stderr, "another process") {
		t.Errorf("blames another process: %s", stderr)
	}
	checkOnceInOrder(t, readStream(t, rc, stream), 3000)
}

// A one-shot run does the same: Redis going back under it mid-run is
// warned of, the positions it kept are reloaded, and the run ends with
// every record of its snapshot once.
func TestK2ROneShotRunResumesAfterRedisLostWrites(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	xlen := streamLen(rc, stream)
	const n = 30000
	produce(t, topic, numbered(0, n, 1))
	p := startXmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--batch-size", "5", "--max-in-flight", "1")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr of the run:\n%s", p.stderr.String())
		}
	})
	testenv.Wait(t, time.Minute, "1000 entries", func() bool { return xlen() >= 1000 })
	snap := takeSnapshot(t, rc, stream, key)
	testenv.Wait(t, time.Minute, "3000 entries", func() bool { return xlen() >= 3000 })
	snap.restore(t, rc)
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the run did not finish")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(p.stderr.String(), "Redis lost writes: positions of "+topic+"/0 went back from") {
		t.Fatalf("the run did not meet the rollback (it finished first?): %s", p.stderr.String())
	}
	checkOnceInOrder(t, readStream(t, rc, stream), n)
}

// With --start latest, a partition whose position Redis lost altogether
// (a snapshot from before the mirror wrote it) would start again at the
// partition's end and skip what was lost: the run stops instead, saying
// where the partition was.
func TestK2RLostPositionUnderStartLatestStopsInsteadOfSkipping(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	xlen := streamLen(rc, stream)
	p := startXmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow", "--start", "latest")
	testenv.Wait(t, 30*time.Second, "the start position stored", func() bool { return hget(t, rc, key, topic+":0") == "0" })
	produce(t, topic, numbered(0, 50, 1))
	testenv.Wait(t, 30*time.Second, "50 entries", func() bool { return xlen() == 50 })
	// Redis back to a copy from before the mirror ran: neither the stream
	// nor its checkpoint.
	if err := rc.Do(context.Background(), rc.B().Del().Key(key, stream).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	produce(t, topic, numbered(50, 50, 1))
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		m, _ := rc.Do(context.Background(), rc.B().Hgetall().Key(key).Build()).AsStrMap()
		t.Fatalf("the run went on after Redis lost the partition's position (stream holds %d entries, checkpoint %v); stderr:\n%s", xlen(), m, p.stderr.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.stderr.String(), "Redis lost writes") || !strings.Contains(p.stderr.String(), "offset 50") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 saying Redis lost the position at offset 50", code, p.stderr.String())
	}
}
