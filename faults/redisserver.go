package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// redisServer is the suite's own redis-server, with the AOF on and fsynced
// on every write, so that its durability comes from the AOF alone: a kill -9
// of it loses nothing that was acknowledged. Scenarios that stop or crash
// Redis use it, so the shared test Redis is never disturbed.
type redisServer struct {
	g    *guard
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port) }
func (s *redisServer) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// start launches redis-server on the same directory (so it loads its AOF)
// and waits until it answers PING.
func (s *redisServer) start(ctx context.Context) error {
	if c, err := net.DialTimeout("tcp", s.addr(), 500*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("port %d is already taken; choose another with -aof-port", s.port)
	}
	cmd := exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--daemonize", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"),
		"--save", "", "--appendonly", "yes", "--appendfsync", "always")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.g.started(cmd.Process, "redis-server :"+strconv.Itoa(s.port))
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		s.g.finished(cmd.Process)
		close(done)
	}(s.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("redis-server on port %d exited during start-up; see %s", s.port, filepath.Join(s.dir, "redis.log"))
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d did not answer PING within 30s: %v", s.port, err)
		}
	}
}

// ping sends PING over a plain connection; a Redis still loading its AOF
// answers -LOADING, which is not ready.
func (s *redisServer) ping() error {
	c, err := net.DialTimeout("tcp", s.addr(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func (s *redisServer) pid() int { return s.cmd.Process.Pid }

// kill9 crashes it and waits until it is gone.
func (s *redisServer) kill9() error {
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("redis-server (pid %d) still alive 10s after SIGKILL", s.pid())
	}
}

// stop ends it for good and removes its directory.
func (s *redisServer) stop() {
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGCONT) // in case a scenario left it stopped
		s.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
	os.RemoveAll(s.dir)
}

// freePort is a TCP port nothing listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
