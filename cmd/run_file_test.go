package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
)

// writeFile writes a mirrors file of the test and returns its path.
func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// produceN writes n records {"n":"i"} to topic with a plain client.
func produceN(t *testing.T, kc *kgo.Client, topic string, from, n int) {
	t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Value: []byte(fmt.Sprintf(`{"n":"%d"}`, from+i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kc.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestRunConfigMirrorsAFileOnceThenFollowsAndReloads: one file of four
// mirrors, two in each direction (one by a stream pattern), run --once and then following; SIGHUP
// with a file that adds one mirror and removes another starts the one,
// drains the other and leaves the two others running undisturbed; a file
// with a problem is refused and the mirrors go on; SIGTERM drains all.
// Each entry arrives exactly once.
func TestRunConfigMirrorsAFileOnceThenFollowsAndReloads(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	dir := t.TempDir()
	srcA, srcB := testenv.Stream(t, rc), testenv.Stream(t, rc)
	outA, outB := testenv.Topic(t, kc, 1), testenv.Topic(t, kc, 1)
	inC, inD, inE := testenv.Topic(t, kc, 1), testenv.Topic(t, kc, 1), testenv.Topic(t, kc, 1)
	dstC, dstD, dstE := testenv.Stream(t, rc), testenv.Stream(t, rc), testenv.Stream(t, rc)
	prefix := testenv.Name(t, "m")
	mA, mB, mC, mD, mE := prefix+"-a", prefix+"-b", prefix+"-c", prefix+"-d", prefix+"-e"
	r2kMirror := func(name, stream, topic string) string {
		return fmt.Sprintf("  - name: %s\n    direction: redis-to-kafka\n    stream: [%s]\n    topic: %s\n", name, stream, topic)
	}
	// A mirrors its stream by a pattern only that stream matches.
	r2kPattern := func(name, stream, topic string) string {
		return fmt.Sprintf("  - name: %s\n    direction: r2k\n    stream-pattern: [\"%s*\"]\n    topic: %s\n", name, stream, topic)
	}
	k2rMirror := func(name, topic, stream string) string {
		return fmt.Sprintf("  - name: %s\n    direction: kafka-to-redis\n    topic: [%s]\n    stream: %s\n", name, topic, stream)
	}
	head := "redis: ${XMIRROR_REDIS}\nbrokers: ${XMIRROR_BROKERS:-127.0.0.1:9092}\ndefaults:\n  batch-size: 100\n  lease-ttl: 5s\nmirrors:\n"
	first := writeFile(t, dir, "first.yaml", head+r2kPattern(mA, srcA, outA)+r2kMirror(mB, srcB, outB)+k2rMirror(mC, inC, dstC)+k2rMirror(mD, inD, dstD))
	second := writeFile(t, dir, "second.yaml", head+r2kPattern(mA, srcA, outA)+k2rMirror(mC, inC, dstC)+k2rMirror(mD, inD, dstD)+k2rMirror(mE, inE, dstE))
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }

	addEntries(t, rc, srcA, 0, 300, fields)
	addEntries(t, rc, srcB, 0, 300, fields)
	produceN(t, kc, inC, 0, 300)
	produceN(t, kc, inD, 0, 300)
	r := mustMirror(t, "run", "--config", first, "--once", "--parallel", "2", "-o", "json")
	var results []struct {
		Mirror  string `json:"mirror"`
		Entries int64  `json:"entries"`
		Stopped string `json:"stopped"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &results); err != nil || len(results) != 4 {
		t.Fatalf("run --once -o json: %v\n%s", err, r.stdout)
	}
	for _, res := range results {
		if res.Entries != 300 || res.Stopped != "done" {
			t.Errorf("--once: %+v, want 300 entries, done", res)
		}
	}

	run := startXmirror(t, "run", "--config", first)
	addEntries(t, rc, srcA, 300, 200, fields)
	addEntries(t, rc, srcB, 300, 200, fields)
	produceN(t, kc, inC, 300, 200)
	produceN(t, kc, inD, 300, 200)
	testenv.Wait(t, 60*time.Second, "the four mirrors following", func() bool {
		return len(readTopic(t, outA)) == 500 && len(readTopic(t, outB)) == 500 && streamLen(rc, dstC)() == 500 && streamLen(rc, dstD)() == 500
	})

	// Reload: B removed, E added; A, C and D untouched.
	if err := os.Rename(second, first); err != nil {
		t.Fatal(err)
	}
	produceN(t, kc, inE, 0, 100)
	run.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Wait(t, 30*time.Second, "the reload", func() bool {
		return strings.Contains(run.stderr.String(), `msg="reloaded the mirrors file"`)
	})
	testenv.Wait(t, 60*time.Second, "the added mirror mirroring", func() bool { return streamLen(rc, dstE)() == 100 })
	testenv.Wait(t, 30*time.Second, "the removed mirror's summary", func() bool {
		return strings.Contains(run.stderr.String(), mB+": mirrored")
	})
	addEntries(t, rc, srcA, 500, 100, fields)
	addEntries(t, rc, srcB, 500, 100, fields) // no longer mirrored
	produceN(t, kc, inC, 500, 100)
	testenv.Wait(t, 60*time.Second, "the untouched mirrors going on", func() bool {
		return len(readTopic(t, outA)) == 600 && streamLen(rc, dstC)() == 600
	})

	// A file with a problem is refused; everything goes on.
	writeFile(t, dir, "first.yaml", head+"  - name: broken\n    direction: redis-to-kafka\n    batch-size: many\n")
	run.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Wait(t, 30*time.Second, "the refused reload", func() bool {
		return strings.Contains(run.stderr.String(), "reload refused") && strings.Contains(run.stderr.String(), `first.yaml:9:17: mirror \"broken\": batch-size: \"many\" is not a whole number`)
	})
	produceN(t, kc, inD, 500, 50)
	testenv.Wait(t, 60*time.Second, "mirroring after the refused reload", func() bool { return streamLen(rc, dstD)() == 550 })

	if code, _ := run.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("run after SIGTERM: exit %d\nstderr: %s", code, run.stderr.String())
	}
	logs := run.stderr.String()
	for _, m := range []string{mA, mC, mD, mE} {
		if n := strings.Count(logs, `msg="starting mirror" mirror=`+m+" "); n != 1 {
			t.Errorf("mirror %s started %d times in the follow run, want once (never restarted)", m, n)
		}
		if !strings.Contains(logs, m+": mirrored") {
			t.Errorf("mirror %s: no summary after SIGTERM", m)
		}
	}
	eachEntryOnce(t, outA, 600)
	eachEntryOnce(t, outB, 500)
	for stream, want := range map[string]int64{dstC: 600, dstD: 550, dstE: 100} {
		if n := streamLen(rc, stream)(); n != want {
			t.Errorf("stream %s holds %d entries, want %d", stream, n, want)
		}
	}
}

// TestRunConfigCheckListsEveryProblemOfAFile: --check reports each
// problem at its line and column, and exits 2; a valid file exits 0
// without connecting.
func TestRunConfigCheckListsEveryProblemOfAFile(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", `redis: redis://127.0.0.1:1/0
brokers: 127.0.0.1:1
mirrors:
  - name: out
    direction: r2k
    stream: [orders, refunds]
  - name: in
    direction: kafka-to-redis
    topic: orders
    stream: orders-copy
`)
	r := xmirror(t, "run", "--config", good, "--check")
	if r.code != 0 || !strings.Contains(r.stdout, "2 mirrors, valid") {
		t.Errorf("valid file (servers unreachable): exit %d, stdout %q, stderr %q; want 0", r.code, r.stdout, r.stderr)
	}
	bad := writeFile(t, dir, "bad.yaml", `colour: blue
defaults:
  batch-size: 0
mirrors:
  - name: out
    direction: redis-to-kafka
    stream: orders
    batchsize: 5
    follow: maybe
  - name: out
    direction: k2r
    topic: t
  - name: other
    direction: sideways
  - direction: r2k
    topic: [a, b]
`)
	r = xmirror(t, "run", "--config", bad, "--check")
	for _, want := range []string{
		`bad.yaml:1:1: unknown key "colour"`,
		`bad.yaml:8:5: mirror "out": unknown key "batchsize" for a redis-to-kafka mirror`,
		`bad.yaml:9:13: mirror "out": follow: "maybe" is not true or false`,
		`bad.yaml:10:11: mirror name "out" is used twice (first at line 5)`,
		`bad.yaml:14:16: mirror "other": direction "sideways" is none of`,
		`bad.yaml:15:5: a mirror needs a "name"`,
		`bad.yaml:10:11: mirror "out": batch-size must be from 1 to 100000, got 0`,
		`bad.yaml:16:5: the mirror at line 15: "topic" takes one value, not a list`,
		`bad.yaml: 8 problems`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("--check of a bad file lacks %q:\n%s", want, r.stderr)
		}
	}
	if r.code != 2 {
		t.Errorf("--check of a bad file: exit %d, want 2", r.code)
	}
}

// TestRunConfigTheREADMEExampleIsValid: the README's example mirrors file
// is one xmirror accepts as it is written.
func TestRunConfigTheREADMEExampleIsValid(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const start = "```yaml\n# mirrors.yaml\n"
	i := strings.Index(string(readme), start)
	if i < 0 {
		t.Fatal("the README has no example mirrors file")
	}
	body := string(readme[i+len("```yaml\n"):])
	body = body[:strings.Index(body, "```")]
	path := writeFile(t, t.TempDir(), "mirrors.yaml", body)
	r := xmirror(t, "run", "--config", path, "--check")
	if r.code != 0 || !strings.Contains(r.stdout, "5 mirrors, valid") {
		t.Errorf("the README's mirrors file: exit %d, stdout %q, stderr %q; want 0, 5 mirrors", r.code, r.stdout, r.stderr)
	}
}
