package cmd_test

import (
	"context"
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

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// privateRedis is a redis-server of this test alone, which it may stop
// and start again from a file of its choosing.
type privateRedis struct {
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (r *privateRedis) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0" }

func (r *privateRedis) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--daemonize", "no",
		"--dir", r.dir, "--dbfilename", "dump.rdb", "--logfile", filepath.Join(r.dir, "redis.log"), "--save", "", "--appendonly", "no")
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Skipf("cannot start redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(r.cmd, r.done)
	testenv.Wait(t, 20*time.Second, "the private Redis to answer", func() bool {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(r.port), "PING").CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "PONG"
	})
}

func (r *privateRedis) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		<-r.done
	}
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("redis-server not found: %v", err)
	}
	r := &privateRedis{dir: t.TempDir()}
	for range 200 {
		p := 20000 + rand.IntN(25000)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			l.Close()
			r.port = p
			break
		}
	}
	if r.port == 0 {
		t.Fatal("no free port for a private Redis")
	}
	r.start(t)
	t.Cleanup(r.stop)
	return r
}

// Redis really restarted, from an RDB file older than what a follow run
// mirrored: the group, the checkpoint and the pending list are back where
// they were, and the run stayed up across it. It notices (the run_id, or
// the group delivering entries again), reads back and sends nothing twice.
func TestFollowAcrossARedisRestartFromAnOlderRDBSendsNothingAgain(t *testing.T) {
	r := startPrivateRedis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	stream := testenv.Name(t, "s")
	name := testenv.Name(t, "m")
	group := "xmirror:" + name
	connect := func() rueidis.Client {
		opt, err := rueidis.ParseURL(r.url())
		must(t, err)
		opt.DisableCache = true
		c, err := rueidis.NewClient(opt)
		must(t, err)
		return c
	}
	rc := connect()
	args := []string{"r2k", "--redis", r.url(), "--stream", stream, "--topic", topic, "--name", name}
	run := func(extra ...string) *exec.Cmd {
		cmd := exec.Command(testenv.Binary(t), append(args, extra...)...)
		cmd.Env = append(os.Environ(), "XMIRROR_BROKERS="+testenv.Brokers())
		return cmd
	}

	ids := addEntries(t, rc, stream, 0, 5, value)
	if out, err := run().CombinedOutput(); err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	ids = append(ids, addEntries(t, rc, stream, 5, 10, value)...)
	must(t, rc.Do(context.Background(), rc.B().Save().Build()).Error())
	old := filepath.Join(r.dir, "old.rdb")
	must(t, os.Rename(filepath.Join(r.dir, "dump.rdb"), old))

	m := startXmirrorCmd(t, run("--follow"))
	caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	rc.Close()
	r.stop()
	data, err := os.ReadFile(old)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(r.dir, "dump.rdb"), data, 0o644))
	r.start(t)
	rc = connect()
	defer rc.Close()
	if got := hget(t, rc, checkpoint.R2KKey(name), "stream:"+stream); got != ids[4] {
		t.Fatalf("restarted Redis: checkpoint at %q, want the older %s", got, ids[4])
	}
	ids = append(ids, addEntries(t, rc, stream, 15, 5, value)...)
	caughtUp(t, rc, name, group, stream, ids[len(ids)-1])
	if code, _ := m.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr)
	}
	onceEach(t, topic, ids)
	if !strings.Contains(m.stderr.String(), "read the checkpoint and Kafka back again") {
		t.Errorf("the restart is not reported: %s", m.stderr)
	}
}
