package cmd_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// freePort is a port of 127.0.0.1 nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// curl asks url with the real curl, bounded, and returns the HTTP status
// (0 when nothing answered) and the body.
func curl(t *testing.T, url string) (int, string) {
	t.Helper()
	out, _ := exec.Command("curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", url).Output()
	s := string(out)
	i := strings.LastIndex(s, "\n")
	code, _ := strconv.Atoi(strings.TrimSpace(s[i+1:]))
	return code, s[:max(i, 0)]
}

// needCurl fails the test without curl: the probes are checked as a
// client outside Go would ask them.
func needCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl not found: %v", err)
	}
}

// sample is the sum of the series of name in a /metrics body whose labels
// hold every one of labels (`mirror="m"`), and whether there is one.
func sample(body, name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
lines:
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				continue lines
			}
		}
		f := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum, found = sum+v, true
	}
	return sum, found
}

// documentedMetrics are the metrics the README's table of metrics lists.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(xmirror_[a-z_]+)`")
	var names []string
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		names = append(names, m[1])
	}
	if len(names) < 10 {
		t.Fatalf("the README lists %d metrics (%v), want its table of them", len(names), names)
	}
	return names
}

// TestMetricsOfAFollowRunAndItsProbes: a follow run of redis-to-kafka with
// --metrics-addr serves every documented series of the mirror, its
// entries counter moving while entries are added, /healthz 200, /readyz
// 200 while it runs and 503 naming Redis while Redis (a private one) is
// frozen, and 200 again once it wakes. A standby of the mirror answers
// /readyz 503 for the lease it does not hold. The server stops with the
// run.
func TestMetricsOfAFollowRunAndItsProbes(t *testing.T) {
	needCurl(t)
	r := startPrivateRedis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	stream, name := testenv.Name(t, "s"), testenv.Name(t, "m")
	opt, err := rueidis.ParseURL(r.url())
	must(t, err)
	opt.DisableCache = true
	rc, err := rueidis.NewClient(opt)
	must(t, err)
	defer rc.Close()
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	run := func(extra ...string) *exec.Cmd {
		args := append([]string{"r2k", "--redis", r.url(), "--stream", stream, "--topic", topic, "--name", name, "--follow"}, extra...)
		cmd := exec.Command(testenv.Binary(t), args...)
		cmd.Env = append(os.Environ(), "XMIRROR_BROKERS="+testenv.Brokers())
		return cmd
	}
	// The address from the environment, as a manifest would give it.
	active := run()
	active.Env = append(active.Env, "XMIRROR_METRICS_ADDR=127.0.0.1:"+port)
	m := startXmirrorCmd(t, active)
	me := `mirror="` + name + `"`

	testenv.Wait(t, 30*time.Second, "/readyz 200 once the lease is held", func() bool {
		code, _ := curl(t, base+"/readyz")
		return code == 200
	})
	// Entries added all along the two scrapes.
	var added sync.WaitGroup
	stopAdding := make(chan struct{})
	var n int
	var addErr error
	added.Go(func() {
		for addErr == nil {
			select {
			case <-stopAdding:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for i := 0; i < 10 && addErr == nil; i++ {
				addErr = rc.Do(context.Background(), rc.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("value", strconv.Itoa(n)).Build()).Error()
				n++
			}
		}
	})
	entries := func() float64 {
		code, body := curl(t, base+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		v, _ := sample(body, "xmirror_entries_total", me, `direction="redis-to-kafka"`)
		return v
	}
	var first float64
	testenv.Wait(t, 30*time.Second, "entries mirrored", func() bool { first = entries(); return first > 0 })
	code, body := curl(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, metric := range documentedMetrics(t) {
		if metric == "xmirror_lag_entries" {
			continue // only for a mirror that can tell its lag
		}
		if _, ok := sample(body, metric, me); !ok {
			t.Errorf("/metrics lacks the documented %s of the mirror", metric)
		}
	}
	for _, metric := range []string{"xmirror_kafka_produce_bytes_total", "xmirror_kafka_connects_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := sample(body, metric); !ok {
			t.Errorf("/metrics lacks %s", metric)
		}
	}
	if v, _ := sample(body, "xmirror_lease_held", me); v != 1 {
		t.Errorf("xmirror_lease_held %v while the run holds it", v)
	}
	testenv.Wait(t, 30*time.Second, "the entries counter to move", func() bool { return entries() > first })
	close(stopAdding)
	added.Wait()
	must(t, addErr)
	if code, body := curl(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %q", code, body)
	}

	// A standby on another port: alive, not ready.
	sport := freePort(t)
	standby := startXmirrorCmd(t, run("--standby", "--metrics-addr", "127.0.0.1:"+sport))
	testenv.Wait(t, 20*time.Second, "the standby's /healthz", func() bool {
		code, _ := curl(t, "http://127.0.0.1:"+sport+"/healthz")
		return code == 200
	})
	if code, body := curl(t, "http://127.0.0.1:"+sport+"/readyz"); code != 503 || !strings.Contains(body, "does not hold its lease") {
		t.Fatalf("standby /readyz: %d %q, want 503 for the lease", code, body)
	}
	if code, _ := standby.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("standby: exit %d\n%s", code, standby.stderr)
	}

	// Redis frozen: not ready, naming it; alive all the same.
	r.cmd.Process.Signal(syscall.SIGSTOP)
	frozen := true
	defer func() {
		if frozen {
			r.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	code, body = curl(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "redis 127.0.0.1:"+strconv.Itoa(r.port)) || strings.Count(strings.TrimSpace(body), "\n") != 0 {
		t.Fatalf("/readyz with Redis frozen: %d %q, want 503 and one line naming Redis", code, body)
	}
	if code, _ := curl(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz with Redis frozen: %d, want 200: the process lives", code)
	}
	r.cmd.Process.Signal(syscall.SIGCONT)
	frozen = false
	testenv.Wait(t, 30*time.Second, "/readyz 200 once Redis woke", func() bool {
		code, _ := curl(t, base+"/readyz")
		return code == 200
	})

	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, m.stderr)
	}
	if code, _ := curl(t, base+"/healthz"); code != 0 {
		t.Fatalf("/healthz answered %d after the run ended", code)
	}
	if !strings.Contains(m.stderr.String(), "serving metrics") {
		t.Errorf("the address served is not logged: %s", m.stderr)
	}
	eachEntryOnce(t, topic, n)
}

// TestMetricsOfAKafkaToRedisRun: a kafka-to-redis follow run counts what
// it mirrored, and its consumer's Kafka metrics are served.
func TestMetricsOfAKafkaToRedisRun(t *testing.T) {
	needCurl(t)
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 2)
	stream, name := testenv.Name(t, "s"), testenv.Name(t, "m")
	t.Cleanup(func() {
		rc.Do(context.Background(), rc.B().Del().Key(stream, checkpoint.K2RKey(name, stream)).Build())
	})
	var recs []*kgo.Record
	for i := range 40 {
		recs = append(recs, &kgo.Record{Topic: topic, Value: []byte(`{"n":"` + strconv.Itoa(i) + `"}`)})
	}
	must(t, kc.ProduceSync(context.Background(), recs...).FirstErr())
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	m := startXmirror(t, "k2r", "--topic", topic, "--stream", stream, "--name", name, "--follow", "--metrics-addr", "127.0.0.1:"+port)
	me := `mirror="` + name + `"`
	testenv.Wait(t, 30*time.Second, "40 entries counted", func() bool {
		_, body := curl(t, base+"/metrics")
		v, _ := sample(body, "xmirror_entries_total", me, `direction="kafka-to-redis"`)
		return v == 40
	})
	_, body := curl(t, base+"/metrics")
	if v, ok := sample(body, "xmirror_kafka_fetch_bytes_total", me, `topic="`+topic+`"`); !ok || v <= 0 {
		t.Errorf("xmirror_kafka_fetch_bytes_total of the topic: %v, %v; want the consumer's bytes", v, ok)
	}
	if code, body := curl(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, m.stderr)
	}
	if n := streamLen(rc, stream)(); n != 40 {
		t.Fatalf("stream holds %d entries, want 40", n)
	}
}

// TestMetricsAddrThatCannotServeFailsClearly: an address in use is a
// runtime failure (exit 1), one line naming it, before anything is
// mirrored; a malformed one is a usage error (exit 2), in the flag and in
// the environment.
func TestMetricsAddrThatCannotServeFailsClearly(t *testing.T) {
	rc := testenv.Redis(t)
	stream, name := testenv.Name(t, "s"), testenv.Name(t, "m")
	t.Cleanup(func() {
		rc.Do(context.Background(), rc.B().Del().Key(stream, checkpoint.R2KKey(name)).Build())
	})
	addEntries(t, rc, stream, 0, 5, value)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer busy.Close()
	args := []string{"r2k", "--stream", stream, "--topic", stream, "--name", name}

	res := xmirror(t, append(args, "--metrics-addr", busy.Addr().String())...)
	line := oneErrorLine(t, "r2k", res)
	if res.code != 1 || !strings.Contains(line, "cannot listen on "+busy.Addr().String()) || !strings.Contains(line, "address already in use") ||
		!strings.Contains(line, "--metrics-addr") {
		t.Fatalf("address in use: exit %d, %q; want exit 1 naming the address and the flag", res.code, line)
	}
	if n, _ := rc.Do(context.Background(), rc.B().Exists().Key(checkpoint.R2KKey(name)).Build()).AsInt64(); n != 0 {
		t.Fatal("the run mirrored although its metrics could not be served")
	}

	for _, bad := range []struct{ flag, env string }{{"nonsense", ""}, {"", "127.0.0.1:99999"}} {
		cmd := xmirrorCmd(t, args...)
		if bad.flag != "" {
			cmd.Args = append(cmd.Args, "--metrics-addr", bad.flag)
		} else {
			cmd.Env = append(cmd.Env, "XMIRROR_METRICS_ADDR="+bad.env)
		}
		out, _ := cmd.CombinedOutput()
		want := "--metrics-addr"
		if bad.flag == "" {
			want = "XMIRROR_METRICS_ADDR"
		}
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), want+" \"") || !strings.Contains(string(out), "HOST:PORT") {
			t.Fatalf("malformed address %+v: exit %d\n%s", bad, code, out)
		}
	}
}
