package cmd_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
)

// redisCluster is a Redis Cluster of three masters started for a test, on
// free ports in a temporary directory, stopped when the test ends.
type redisCluster struct {
	ports []int
}

func (rc *redisCluster) url() string { return fmt.Sprintf("redis://127.0.0.1:%d", rc.ports[0]) }

// cli runs redis-cli against one node of the cluster: a client that
// shares no code with xmirror.
func (rc *redisCluster) cli(t *testing.T, port int, args ...string) string {
	t.Helper()
	out, err := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli -p %d %s: %v\n%s", port, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// clusterMissing skips the test when a cluster cannot be started, except
// under CI=true, where it fails: CI must never pass by testing nothing.
func clusterMissing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("a local Redis Cluster is required under CI=true: "+format, args...)
	}
	t.Skipf("cannot start a local Redis Cluster: "+format, args...)
}

// freeClusterPort is a port that is free along with its cluster bus port
// (port+10000), which each node also listens on.
func freeClusterPort(t *testing.T, taken map[int]bool) int {
	t.Helper()
	for range 200 {
		p := 20000 + rand.IntN(25000)
		if taken[p] {
			continue
		}
		free := true
		for _, q := range []int{p, p + 10000} {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(q)))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			taken[p] = true
			return p
		}
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

// startRedisCluster starts three redis-server nodes with cluster support
// and joins them with redis-cli --cluster create, every slot covered.
func startRedisCluster(t *testing.T) *redisCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			clusterMissing(t, "%s not found: %v", bin, err)
		}
	}
	dir := t.TempDir()
	rc := &redisCluster{}
	taken := map[int]bool{}
	for range 3 {
		port := freeClusterPort(t, taken)
		node := filepath.Join(dir, strconv.Itoa(port))
		if err := os.Mkdir(node, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("redis-server",
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--daemonize", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(node, "nodes.conf"),
			"--dir", node, "--logfile", filepath.Join(node, "redis.log"),
			"--save", "", "--appendonly", "no")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			clusterMissing(t, "start redis-server: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
		})
		rc.ports = append(rc.ports, port)
	}
	for _, port := range rc.ports {
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := exec.Command("redis-cli", "-p", strconv.Itoa(port), "PING").CombinedOutput()
			if err == nil && strings.TrimSpace(string(out)) == "PONG" {
				break
			}
			if time.Now().After(deadline) {
				clusterMissing(t, "node %d does not answer PING: %v %s", port, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	args := []string{"--cluster", "create"}
	for _, port := range rc.ports {
		args = append(args, fmt.Sprintf("127.0.0.1:%d", port))
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		clusterMissing(t, "redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, port := range rc.ports {
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(rc.cli(t, port, "CLUSTER", "INFO"), "cluster_state:ok") {
			if time.Now().After(deadline) {
				clusterMissing(t, "node %d never reached cluster_state:ok", port)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return rc
}

// TestRedisClusterIsRefusedBeforeAnything pins what both directions and
// check do on a Redis Cluster, which they do not support yet: exit 1 with
// one line saying so, no panic, and no lease or other key left behind.
// The cluster starts once, for all the cases.
func TestRedisClusterIsRefusedBeforeAnything(t *testing.T) {
	kc := testenv.Kafka(t)
	rc := startRedisCluster(t)
	// Streams in different slots, as a user would have them.
	streams := []string{testenv.Name(t, "a"), testenv.Name(t, "b"), testenv.Name(t, "c")}
	for _, s := range streams {
		if out, err := exec.Command("redis-cli", "-c", "-p", strconv.Itoa(rc.ports[0]), "XADD", s, "*", "value", "1").CombinedOutput(); err != nil {
			t.Fatalf("XADD %s on the cluster: %v %s", s, err, out)
		}
	}
	topic := testenv.Topic(t, kc, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 10 {
		if err := kc.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(`{"value":"1"}`)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	r2k := []string{"r2k", "--redis", rc.url(), "--topic", topic}
	for _, s := range streams {
		r2k = append(r2k, "--stream", s)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"redis-to-kafka", r2k, "is a Redis Cluster, which redis-to-kafka does not support yet"},
		{"redis-to-kafka follow", append(r2k, "--follow"), "is a Redis Cluster, which redis-to-kafka does not support yet"},
		{"kafka-to-redis", []string{"k2r", "--redis", rc.url(), "--topic", topic, "--stream", "x.{partition}"}, "is a Redis Cluster, which kafka-to-redis does not support yet"},
		{"kafka-to-redis follow", []string{"k2r", "--redis", rc.url(), "--topic", topic, "--stream", "x.{partition}", "--follow"}, "is a Redis Cluster, which kafka-to-redis does not support yet"},
		{"check", []string{"check", "--redis", rc.url()}, "is a Redis Cluster, which neither redis-to-kafka nor kafka-to-redis supports yet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := xmirror(t, tc.args...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 saying %q", r.code, r.stderr, tc.want)
			}
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") {
				t.Fatalf("a panic: %s", r.stderr)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
				if strings.HasPrefix(l, "xmirror: ") && !strings.HasPrefix(l, "xmirror: check failed") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("want one error line, got %q", lines)
			}
			for _, port := range rc.ports {
				if keys := strings.TrimSpace(rc.cli(t, port, "--scan", "--pattern", "xmirror:*")); keys != "" {
					t.Fatalf("node %d holds xmirror keys after a refused run: %s", port, keys)
				}
			}
		})
	}
	var out bytes.Buffer
	for _, port := range rc.ports {
		out.WriteString(rc.cli(t, port, "--scan", "--pattern", "xmirror:lease:*"))
	}
	if strings.TrimSpace(out.String()) != "" {
		t.Fatalf("leases left on the cluster: %s", out.String())
	}
}
