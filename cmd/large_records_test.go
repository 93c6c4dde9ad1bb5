package cmd_test

import (
	"bytes"
	"context"
	"math/rand"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
)

// sizedTopic creates a one-partition topic with its own max.message.bytes
// and checks that the broker reports it as the topic's dynamic config.
func sizedTopic(t *testing.T, kc *kgo.Client, maxMessageBytes int) string {
	t.Helper()
	topic := testenv.Name(t, "t")
	adm := kadm.NewClient(kc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limit := strconv.Itoa(maxMessageBytes)
	resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &limit}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		adm.DeleteTopics(ctx, topic)
	})
	// A new topic's configs can be described a moment after it exists.
	testenv.Wait(t, 10*time.Second, "topic "+topic+" to report max.message.bytes "+limit, func() bool {
		return topicMaxMessageBytes(t, adm, topic) == limit
	})
	return topic
}

func topicMaxMessageBytes(t *testing.T, adm *kadm.Client, topic string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return ""
	}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "max.message.bytes" {
				return c.MaybeValue()
			}
		}
	}
	return ""
}

// kcatValue reads the value of the record at offset of partition 0 with
// kcat, a client that shares no code with xmirror nor with franz-go.
func kcatValue(t *testing.T, topic string, offset int64) []byte {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is needed to read the records back: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-C", "-b", testenv.Brokers(), "-t", topic, "-p", "0",
		"-o", strconv.FormatInt(offset, 10), "-c", "1", "-e", "-q", "-f", "%s",
		"-X", "receive.message.max.bytes=100000000")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s offset %d: %v: %s", topic, offset, err, errb.String())
	}
	return out.Bytes()
}

// payload is n deterministic bytes: any byte in raw, letters in json (a
// JSON string of them is as long as they are).
func payload(n int, seed int64, binary bool) string {
	r := rand.New(rand.NewSource(seed))
	b := make([]byte, n)
	r.Read(b)
	if !binary {
		for i := range b {
			b[i] = 'a' + b[i]%26
		}
	}
	return string(b)
}

func TestEntryOf20MiBMirrorsBothWaysThroughATopicThatAllowsIt(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	for _, format := range []string{"raw", "json"} {
		t.Run(format, func(t *testing.T) {
			binary := format == "raw"
			values := []string{"first", payload(1288000, 1, binary), payload(20<<20, 2, binary), "last"}
			source := testenv.Stream(t, rc)
			copy := testenv.Stream(t, rc)
			topic := sizedTopic(t, kc, 50<<20)
			ids := addEntries(t, rc, source, 0, len(values), func(i int) []string { return []string{"value", values[i]} })

			mustMirror(t, "r2k", "--stream", source, "--topic", topic, "--format", format, "--name", testenv.Name(t, "r2k"))
			for i, v := range values {
				want := v
				if format == "json" {
					want = `{"value":"` + v + `"}`
				}
				if got := kcatValue(t, topic, int64(i)); string(got) != want {
					t.Fatalf("record %d (entry %s): kcat reads a value of %d bytes, not the %d bytes of the entry's (first difference at %d)", i, ids[i], len(got), len(want), firstDiff(string(got), want))
				}
			}

			mustMirror(t, "k2r", "--topic", topic, "--stream", copy, "--format", format, "--name", testenv.Name(t, "k2r"))
			want, got := readSlices(t, rc, source), readSlices(t, rc, copy)
			if len(got) != len(want) {
				t.Fatalf("copy has %d entries, source %d", len(got), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(got[i].FieldValues, want[i].FieldValues) {
					t.Fatalf("entry %d (%s): the copy's fields differ from the source's", i, ids[i])
				}
			}
			n, err := rc.Do(context.Background(), rc.B().Xlen().Key(copy).Build()).AsInt64()
			if err != nil || n != int64(len(values)) {
				t.Fatalf("XLEN %s: %d, %v; want %d", copy, n, err, len(values))
			}
		})
	}
}

func firstDiff(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestRecordAboveTheTopicLimitIsRefusedNamingTheLimitAndHowToRaiseIt(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	adm := kadm.NewClient(kc)
	stream := testenv.Stream(t, rc)
	topic := sizedTopic(t, kc, 3<<20)
	name := testenv.Name(t, "m")
	// 2 MiB fits the topic (beyond Kafka's default 1 MiB); 4 MiB does not.
	sizes := []int{10, 10, 2 << 20, 4 << 20, 10}
	ids := addEntries(t, rc, stream, 0, len(sizes), func(i int) []string { return []string{"value", strings.Repeat("v", sizes[i])} })

	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", r.code, r.stderr)
	}
	for _, want := range []string{ids[3], topic, "max.message.bytes", "kafka-configs", "--entity-name " + topic, "accepts", strconv.Itoa(3 << 20)} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not name %q: %s", want, r.stderr)
		}
	}
	recs := readTopic(t, topic)
	if len(recs) != 3 {
		t.Fatalf("%d records in Kafka, want the 3 entries before the refused one", len(recs))
	}
	if id, _ := header(recs[2], "xmirror.id"); id != ids[2] || len(recs[2].Value) != len(`{"value":""}`)+2<<20 {
		t.Fatalf("last record is entry %s of %d bytes, want %s of %d and a bit", id, len(recs[2].Value), ids[2], 2<<20)
	}
	pending, err := rc.Do(context.Background(), rc.B().Xpending().Key(stream).Group(onlyGroup(t, rc, stream)).Start("-").End("+").Count(10).Build()).ToArray()
	if err != nil || len(pending) != 2 {
		t.Fatalf("pending entries: %d, %v; want the refused one and the one after it", len(pending), err)
	}
	if first, _ := pending[0].ToArray(); len(first) == 0 {
		t.Fatal("empty pending reply")
	} else if id, _ := first[0].ToString(); id != ids[3] {
		t.Fatalf("first pending entry %s, want the refused one %s", id, ids[3])
	}

	// Raising the limit as the message says lets the rest through.
	limit := strconv.Itoa(8 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &limit}}, topic); err != nil {
		t.Fatal(err)
	}
	testenv.Wait(t, 10*time.Second, "the new max.message.bytes", func() bool { return topicMaxMessageBytes(t, adm, topic) == limit })
	mustMirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name)
	if n := len(readTopic(t, topic)); n != len(sizes) {
		t.Fatalf("%d records after raising the limit, want %d", n, len(sizes))
	}
}

func TestRecordAboveTheBrokerDefaultNamesMessageMaxBytes(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	ids := addEntries(t, rc, stream, 0, 2, func(i int) []string { return []string{"value", strings.Repeat("v", 10+i*(2<<20))} })
	r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", testenv.Name(t, "m"))
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", r.code, r.stderr)
	}
	for _, want := range []string{ids[1], "message.max.bytes", "--add-config max.message.bytes="} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not name %q: %s", want, r.stderr)
		}
	}
}

// A record larger than a fetch's per-partition byte limit (1 MiB) comes
// whole only as the first batch of a fetch response; records of that size
// in every partition must all be read, none starved.
func TestKafkaToRedisReadsRecordsLargerThanAFetchInEveryPartition(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Name(t, "t")
	adm := kadm.NewClient(kc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	limit := strconv.Itoa(16 << 20)
	resp, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"max.message.bytes": &limit}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), topic) })
	testenv.Wait(t, 10*time.Second, "the topic's max.message.bytes", func() bool { return topicMaxMessageBytes(t, adm, topic) == limit })

	// A plain producer, one record per batch, three 3 MiB records per
	// partition.
	pc := testenv.Kafka(t, kgo.ProducerBatchMaxBytes(16<<20), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	want := map[int32][]string{}
	for p := int32(0); p < 3; p++ {
		for i := 0; i < 3; i++ {
			v := payload(3<<20, int64(10*p)+int64(i), false)
			want[p] = append(want[p], v)
			r := &kgo.Record{Topic: topic, Partition: p, Value: []byte(`{"value":"` + v + `"}`)}
			if err := pc.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	prefix := testenv.Name(t, "s")
	for p := 0; p < 3; p++ {
		s := prefix + "-" + strconv.Itoa(p)
		t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(s).Build()) })
	}
	mustMirror(t, "k2r", "--topic", topic, "--stream", prefix+"-{partition}", "--name", testenv.Name(t, "k2r"))
	for p := int32(0); p < 3; p++ {
		got := readSlices(t, rc, prefix+"-"+strconv.Itoa(int(p)))
		if len(got) != len(want[p]) {
			t.Fatalf("partition %d: %d entries, want %d", p, len(got), len(want[p]))
		}
		for i, e := range got {
			if len(e.FieldValues) != 1 || e.FieldValues[0].Field != "value" || e.FieldValues[0].Value != want[p][i] {
				t.Fatalf("partition %d entry %d: not the record's value", p, i)
			}
		}
	}
}
