package cmd_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// TestRunConfigServesTheMetricsOfEveryMirror: a following run of a file
// of two mirrors, one each way, serves on one --metrics-addr (over the
// file's own metrics-addr, which could not be listened on) the entries of
// each under its mirror label, the Kafka clients' metrics and the lag of
// each, and /readyz 200 once both hold their lease. SIGHUP with a file without one
// of them deletes its every series while the other's go on counting.
func TestRunConfigServesTheMetricsOfEveryMirror(t *testing.T) {
	needCurl(t)
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	dir := t.TempDir()
	src, dst := testenv.Stream(t, rc), testenv.Stream(t, rc)
	out, in := testenv.Topic(t, kc, 1), testenv.Topic(t, kc, 2)
	prefix := testenv.Name(t, "m")
	mOut, mIn := prefix+"-out", prefix+"-in"
	head := "redis: ${XMIRROR_REDIS}\nbrokers: ${XMIRROR_BROKERS}\nmetrics-addr: 127.0.0.1:1\ndefaults:\n  lease-ttl: 5s\nmirrors:\n"
	outMirror := fmt.Sprintf("  - name: %s\n    direction: r2k\n    stream: [%s]\n    topic: %s\n", mOut, src, out)
	inMirror := fmt.Sprintf("  - name: %s\n    direction: k2r\n    topic: [%s]\n    stream: %s\n", mIn, in, dst)
	path := writeFile(t, dir, "mirrors.yaml", head+outMirror+inMirror)
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	addEntries(t, rc, src, 0, 50, fields)
	produceN(t, kc, in, 0, 40)

	port := freePort(t)
	base := "http://127.0.0.1:" + port
	run := startXmirror(t, "run", "--config", path, "--metrics-addr", "127.0.0.1:"+port)
	scrape := func() string {
		t.Helper()
		code, body := curl(t, base+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d\nstderr: %s", code, run.stderr)
		}
		return body
	}
	of := func(name string) string { return `mirror="` + name + `"` }
	entries := func(body, name, direction string) float64 {
		v, _ := sample(body, "xmirror_entries_total", of(name), `direction="`+direction+`"`)
		return v
	}
	testenv.Wait(t, 30*time.Second, "the metrics server", func() bool {
		code, _ := curl(t, base+"/healthz")
		return code == 200
	})
	testenv.Wait(t, 60*time.Second, "both mirrors' entries counted", func() bool {
		body := scrape()
		return entries(body, mOut, "redis-to-kafka") == 50 && entries(body, mIn, "kafka-to-redis") == 40
	})
	testenv.Wait(t, 30*time.Second, "/readyz 200 with both leases held", func() bool {
		code, _ := curl(t, base+"/readyz")
		return code == 200
	})
	body := scrape()
	for _, c := range []struct{ metric, mirror string }{
		{"xmirror_lease_held", mOut}, {"xmirror_lease_held", mIn},
		{"xmirror_kafka_produce_bytes_total", mOut}, {"xmirror_kafka_fetch_bytes_total", mIn},
		{"xmirror_kafka_connects_total", mOut}, {"xmirror_kafka_connects_total", mIn},
	} {
		if v, ok := sample(body, c.metric, of(c.mirror)); !ok || v <= 0 {
			t.Errorf("%s of mirror %s: %v, %v; want a positive series", c.metric, c.mirror, v, ok)
		}
	}
	if v, _ := sample(body, "xmirror_kafka_produce_bytes_total", of(mIn)); v != 0 {
		t.Errorf("the kafka-to-redis mirror counts %v bytes produced: the mirrors' Kafka clients are mixed", v)
	}
	if code, _ := curl(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	testenv.Wait(t, 30*time.Second, "the lag of both mirrors polled", func() bool {
		body := scrape()
		_, outOK := sample(body, "xmirror_lag_entries", of(mOut), `stream="`+src+`"`)
		_, inOK := sample(body, "xmirror_lag_entries", of(mIn), `topic="`+in+`"`)
		return outOK && inOK
	})

	// The file without the kafka-to-redis mirror.
	writeFile(t, dir, "mirrors.yaml", head+outMirror)
	run.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Wait(t, 30*time.Second, "the removed mirror's summary", func() bool {
		return strings.Contains(run.stderr.String(), mIn+": mirrored")
	})
	testenv.Wait(t, 10*time.Second, "the removed mirror's series gone", func() bool {
		return !strings.Contains(scrape(), of(mIn))
	})
	addEntries(t, rc, src, 50, 10, fields)
	testenv.Wait(t, 30*time.Second, "the other mirror counting on", func() bool {
		return entries(scrape(), mOut, "redis-to-kafka") == 60
	})
	if strings.Contains(scrape(), of(mIn)) {
		t.Errorf("a series of the removed mirror %s came back", mIn)
	}
	if code, body := curl(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz after the reload: %d %q", code, body)
	}

	if code, _ := run.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("run after SIGTERM: exit %d\nstderr: %s", code, run.stderr)
	}
	if code, _ := curl(t, base+"/healthz"); code != 0 {
		t.Fatalf("/healthz answered %d after the run ended", code)
	}
	if n := strings.Count(run.stderr.String(), `msg="serving metrics"`); n != 1 {
		t.Errorf("%d servers of metrics logged, want one for the process:\n%s", n, run.stderr)
	}
	eachEntryOnce(t, out, 60)
	if n := streamLen(rc, dst)(); n != 40 {
		t.Errorf("stream %s holds %d entries, want 40", dst, n)
	}
}

// TestRunConfigMetricsAddrProblems: metrics-addr is the process's: set
// under defaults or for one mirror it is refused at its line and column,
// saying where it belongs; a malformed address, at the top of the file,
// with --metrics-addr or in the environment, is a usage error (exit 2);
// one in use is a runtime failure (exit 1) naming it, before anything is
// mirrored.
func TestRunConfigMetricsAddrProblems(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", `redis: redis://127.0.0.1:1/0
brokers: 127.0.0.1:1
metrics-addr: nonsense
defaults:
  metrics-addr: :9464
mirrors:
  - name: out
    direction: r2k
    stream: orders
    metrics-addr: :9465
`)
	r := xmirror(t, "run", "--config", bad, "--check")
	for _, want := range []string{
		`bad.yaml:3:15: metrics-addr "nonsense" must be HOST:PORT or :PORT`,
		`bad.yaml:5:3: key "metrics-addr" cannot be set under defaults: the process serves one metrics endpoint for all its mirrors: set it at the top of the file, or give run --metrics-addr`,
		`bad.yaml:10:5: mirror "out": key "metrics-addr" cannot be set for one mirror: the process serves one metrics endpoint for all its mirrors: set it at the top of the file, or give run --metrics-addr`,
		`bad.yaml: 3 problems`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("--check lacks %q:\n%s", want, r.stderr)
		}
	}
	if r.code != 2 {
		t.Errorf("--check: exit %d, want 2", r.code)
	}

	good := writeFile(t, dir, "good.yaml", "redis: redis://127.0.0.1:1/0\nbrokers: 127.0.0.1:1\nmirrors:\n  - name: out\n    direction: r2k\n    stream: orders\n")
	for _, c := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--metrics-addr", "nonsense"}, "", `--metrics-addr "nonsense" must be HOST:PORT`},
		{[]string{"--metrics-addr", ""}, "", "--metrics-addr must not be empty"},
		{nil, "127.0.0.1:99999", `XMIRROR_METRICS_ADDR "127.0.0.1:99999" must be HOST:PORT`},
	} {
		cmd := xmirrorCmd(t, append([]string{"run", "--config", good}, c.args...)...)
		if c.env != "" {
			cmd.Env = append(cmd.Env, "XMIRROR_METRICS_ADDR="+c.env)
		}
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v env %q: exit %d, want 2 and %q\n%s", c.args, c.env, code, c.want, out)
		}
	}

	rc := testenv.Redis(t)
	stream, name := testenv.Name(t, "s"), testenv.Name(t, "m")
	t.Cleanup(func() {
		rc.Do(context.Background(), rc.B().Del().Key(stream, checkpoint.R2KKey(name)).Build())
	})
	addEntries(t, rc, stream, 0, 5, value)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer busy.Close()
	inUse := writeFile(t, dir, "in-use.yaml", fmt.Sprintf("redis: ${XMIRROR_REDIS}\nbrokers: ${XMIRROR_BROKERS}\nmetrics-addr: %s\nmirrors:\n  - name: %s\n    direction: r2k\n    stream: %s\n    topic: %s\n", busy.Addr(), name, stream, stream))
	r = xmirror(t, "run", "--config", inUse)
	line := oneErrorLine(t, "run", r)
	if r.code != 1 || !strings.Contains(line, "metrics (metrics-addr of "+inUse+"): cannot listen on "+busy.Addr().String()) || !strings.Contains(line, "address already in use") {
		t.Fatalf("address in use: exit %d, %q; want exit 1 naming the address and the file's key", r.code, line)
	}
	if n, _ := rc.Do(context.Background(), rc.B().Exists().Key(checkpoint.R2KKey(name)).Build()).AsInt64(); n != 0 {
		t.Fatal("the file's mirror ran although the metrics could not be served")
	}
}
