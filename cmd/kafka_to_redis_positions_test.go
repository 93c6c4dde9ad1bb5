package cmd_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// txnProducer is a plain franz-go transactional producer with its own
// transactional ID, writing to partition 0.
func txnProducer(t *testing.T) *kgo.Client {
	t.Helper()
	return testenv.Kafka(t, kgo.TransactionalID(testenv.Name(t, "txn")), kgo.RecordPartitioner(kgo.ManualPartitioner()))
}

// openTxn begins a transaction of cl and produces vals to topic in it.
func openTxn(t *testing.T, cl *kgo.Client, topic string, vals ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	for _, v := range vals {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce in a transaction to %s: %v", topic, err)
		}
	}
}

// inTxn produces vals to topic in one transaction of cl and ends it with
// end (kgo.TryCommit or kgo.TryAbort).
func inTxn(t *testing.T, cl *kgo.Client, topic string, end kgo.TransactionEndTry, vals ...string) {
	t.Helper()
	openTxn(t, cl, topic, vals...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.EndTransaction(ctx, end); err != nil {
		t.Fatalf("end transaction: %v", err)
	}
	// EndTransaction returns once the coordinator decided; the markers
	// reach the partitions a moment later. Wait until the topic's last
	// stable offset caught up with its end, as a reader would see it.
	adm := kadm.NewClient(cl)
	testenv.Wait(t, 30*time.Second, "the transaction markers of "+topic, func() bool {
		ends, err1 := adm.ListEndOffsets(ctx, topic)
		stable, err2 := adm.ListCommittedOffsets(ctx, topic)
		if err1 != nil || err2 != nil {
			return false
		}
		caughtUp := true
		ends.Each(func(o kadm.ListedOffset) {
			if s, ok := stable.Lookup(o.Topic, o.Partition); !ok || s.Offset != o.Offset {
				caughtUp = false
			}
		})
		return caughtUp
	})
}

func values(es []rueidis.XRangeEntry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.FieldValues["n"])
	}
	return strings.Join(s, ",")
}

// A partition without a checkpoint gets its start position stored before
// anything is mirrored: a cron job with --start latest mirrors what was
// produced between its runs instead of starting at "latest" each time.
func TestK2RStartLatestResumesFromWhereTheFirstRunStarted(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	key := checkpoint.K2RKey(name, stream)
	delKeys(t, rc, key)
	produce(t, topic, numbered(0, 5, 1))

	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--start", "latest", "-o", "json"}
	if r := mustMirror(t, args...); !strings.Contains(r.stdout, `"entries":0,`) {
		t.Fatalf("first run mirrored old records: %s", r.stdout)
	}
	ck, err := rc.Do(context.Background(), rc.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil || ck[topic+":0"] != "5" || ck["version"] != "2" || ck["kind"] != "kafka-to-redis" || ck["partitions"] != topic+":0" {
		t.Fatalf("checkpoint after the first run: %v %v", ck, err)
	}
	produce(t, topic, []*kgo.Record{{Value: []byte(`{"n":"between runs"}`)}})
	if r := mustMirror(t, args...); !strings.Contains(r.stdout, `"entries":1,`) {
		t.Fatalf("second run: %s", r.stdout)
	}
	if got := values(readStream(t, rc, stream)); got != "between runs" {
		t.Fatalf("stream holds %q", got)
	}
}

// --start earliest pins the log start too, so records deleted by retention
// before the next run are reported as a gap, not silently skipped.
func TestK2RStartEarliestOnAnEmptyTopicPinsTheLogStart(t *testing.T) {
	rc := testenv.Redis(t)
	cl := testenv.Kafka(t)
	topic := testenv.Topic(t, cl, 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name}
	mustMirror(t, args...)

	produce(t, topic, numbered(0, 3, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: topic, Partition: 0, At: 2})
	if _, err := kadm.NewClient(cl).DeleteRecords(ctx, del); err != nil {
		t.Fatalf("delete records: %v", err)
	}
	r := xmirror(t, args...)
	if r.code != 1 || !strings.Contains(r.stderr, "checkpoint is at offset 0 but the log now starts at 2") {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
}

func TestK2ROneShotFinishesAtACommittedTransaction(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	inTxn(t, txnProducer(t), topic, kgo.TryCommit, `{"n":"1"}`, `{"n":"2"}`, `{"n":"3"}`)

	r := mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--timeout", "10s")
	if !strings.Contains(r.stderr, "mirrored 3 entries") {
		t.Fatalf("summary: %s", r.stderr)
	}
	if got := values(readStream(t, rc, stream)); got != "1,2,3" {
		t.Fatalf("stream holds %q", got)
	}
}

func TestK2ROneShotLeavesOutAnAbortedTransaction(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	txn := txnProducer(t)
	inTxn(t, txn, topic, kgo.TryCommit, `{"n":"1"}`)
	inTxn(t, txn, topic, kgo.TryAbort, `{"n":"aborted"}`, `{"n":"aborted too"}`)

	r := mustMirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--timeout", "10s")
	if !strings.Contains(r.stderr, "mirrored 1 entry") {
		t.Fatalf("summary: %s", r.stderr)
	}
	if got := values(readStream(t, rc, stream)); got != "1" {
		t.Fatalf("stream holds %q", got)
	}
}

// The snapshot ends (last stable offset) right after the records of an
// aborted transaction whose marker lies past it, behind a transaction still
// open: nothing below the target is ever delivered, yet the run must finish.
func TestK2ROneShotFinishesWhenTheSnapshotEndsInAbortedRecords(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	delKeys(t, rc, checkpoint.K2RKey(name, stream))
	a, b := txnProducer(t), txnProducer(t)
	openTxn(t, a, topic, `{"n":"aborted"}`) // offset 0
	openTxn(t, b, topic, `{"n":"late"}`)    // offset 1: the last stable offset stays here while b is open
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}

	args := []string{"k2r", "--topic", topic, "--stream", stream, "--name", name, "--timeout", "10s", "-o", "json"}
	if r := mustMirror(t, args...); !strings.Contains(r.stdout, `"entries":0,`) {
		t.Fatalf("run with b open: %s", r.stdout)
	}
	if err := b.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if r := mustMirror(t, args...); !strings.Contains(r.stdout, `"entries":1,`) {
		t.Fatalf("run after b committed: %s", r.stdout)
	}
	if got := values(readStream(t, rc, stream)); got != "late" {
		t.Fatalf("stream holds %q", got)
	}
}

// Partitions added to a topic while a follow run goes on are mirrored too,
// from their first record.
func TestK2RFollowMirrorsPartitionsAddedDuringTheRun(t *testing.T) {
	rc := testenv.Redis(t)
	cl := testenv.Kafka(t)
	topic := testenv.Topic(t, cl, 1)
	stream, name := testenv.Stream(t, rc), testenv.Name(t, "m")
	perPartition := stream + "-{partition}"
	s0, s1 := stream+"-0", stream+"-1"
	delKeys(t, rc, s0, s1, checkpoint.K2RKey(name, s0), checkpoint.K2RKey(name, s1))
	produce(t, topic, []*kgo.Record{{Partition: 0, Value: []byte(`{"n":"p0"}`)}})

	p := startXmirror(t, "k2r", "--topic", topic, "--stream", perPartition, "--name", name, "--follow", "--partition-check", "500ms")
	xlen := func(s string) int64 {
		n, _ := rc.Do(context.Background(), rc.B().Xlen().Key(s).Build()).AsInt64()
		return n
	}
	testenv.Wait(t, 30*time.Second, "the first record", func() bool { return xlen(s0) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreatePartitions(ctx, 1, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("add a partition: %v", err)
	}
	produce(t, topic, []*kgo.Record{{Partition: 1, Value: []byte(`{"n":"p1"}`)}})
	testenv.Wait(t, 30*time.Second, "the record of the new partition in "+s1, func() bool { return xlen(s1) == 1 })
	if got := values(readStream(t, rc, s1)); got != "p1" {
		t.Fatalf("stream %s holds %q", s1, got)
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	// The partition taken on during the run is covered like the others:
	// its position deleted, the next run refuses to start.
	key1 := checkpoint.K2RKey(name, s1)
	if got, _ := rc.Do(context.Background(), rc.B().Hget().Key(key1).Field("partitions").Build()).ToString(); got != topic+":1" {
		t.Fatalf("checkpoint %s lists %q, want %s", key1, got, topic+":1")
	}
	must(t, rc.Do(context.Background(), rc.B().Hdel().Key(key1).Field(topic+":1").Build()).Error())
	if r := xmirror(t, "k2r", "--topic", topic, "--stream", perPartition, "--name", name); r.code != 1 || !strings.Contains(r.stderr, key1) || !strings.Contains(r.stderr, "partition 1") {
		t.Fatalf("run after the added partition's position was deleted: exit %d, stderr %q", r.code, r.stderr)
	}
}
