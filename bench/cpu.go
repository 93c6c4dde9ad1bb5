package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/rueidis"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat and
// /proc/stat: 100 per second on every Linux architecture Go supports
// (sysconf(_SC_CLK_TCK) would say the same, but needs cgo).
const clockTicks = 100

// cpuCores is how many cores each party used during one measurement:
// CPU seconds / wall seconds of the interval. A nil field is unknown (a
// server on another machine, /proc unreadable), never 0.
type cpuCores struct {
	// Redis is the redis-server process (all its threads).
	Redis *float64 `json:"redis,omitempty"`
	// Kafka is the broker JVM(s) found on this machine.
	Kafka *float64 `json:"kafka,omitempty"`
	// Client is what was measured: the xmirror or Java child process, or
	// this bench process for the raw cases run in it.
	Client *float64 `json:"client,omitempty"`
	// Machine is every CPU's busy time (user, nice, system, irq, softirq,
	// steal): the three above, plus everything else running here.
	Machine *float64 `json:"machine,omitempty"`
	// RedisIdle and RedisWaiting are the shares of the interval Redis's
	// main thread, which runs every command, was neither running nor
	// ready to run (normally: no command to run, Redis was not the limit)
	// and was ready but waiting for a CPU (busy with other processes),
	// from its schedstat.
	RedisIdle    *float64 `json:"redis_idle,omitempty"`
	RedisWaiting *float64 `json:"redis_waiting,omitempty"`
}

// cpuParties are the local server processes whose CPU the bench reads,
// found once at the start; 0 / none when not on this machine.
type cpuParties struct {
	redisPid  int
	kafkaPids []int
}

// findParties looks for the Redis and Kafka processes: Redis by the pid
// it reports (INFO server), kept only if /proc shows a redis-server there;
// Kafka by its main class on a local command line.
func findParties(ctx context.Context, c rueidis.Client) cpuParties {
	var p cpuParties
	info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
	if err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
				pid, _ := strconv.Atoi(v)
				if comm, _, ok := procStat(pid); ok && comm == "redis-server" {
					p.redisPid = pid
				}
			}
		}
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(b, []byte{0}) {
			if string(arg) == "kafka.Kafka" {
				if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
					p.kafkaPids = append(p.kafkaPids, pid)
				}
				break
			}
		}
	}
	return p
}

// notes say which figures will be unknown, and why.
func (p cpuParties) notes() []string {
	var n []string
	if p.redisPid == 0 {
		n = append(n, "cpu: Redis's process is not on this machine (or INFO gave no process_id): its CPU is unknown")
	}
	if len(p.kafkaPids) == 0 {
		n = append(n, "cpu: no local process runs kafka.Kafka: the broker's CPU is unknown")
	}
	return n
}

// procStat reads a process's name and utime+stime in clock ticks.
func procStat(pid int) (comm string, ticks uint64, ok bool) {
	if pid <= 0 {
		return "", 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses, so
	// the fields start after the last ')'; utime and stime are fields 14
	// and 15, the 12th and 13th after it.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 13 {
		return "", 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	return string(b[open+1 : end]), u + s, true
}

// mainThreadSched reads how long a process's main thread has run on a CPU
// and waited for one (/proc/<pid>/task/<pid>/schedstat, nanoseconds).
func mainThreadSched(pid int) (run, wait uint64, ok bool) {
	if pid <= 0 {
		return 0, 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/schedstat")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, 0, false
	}
	run, err1 := strconv.ParseUint(f[0], 10, 64)
	wait, err2 := strconv.ParseUint(f[1], 10, 64)
	return run, wait, err1 == nil && err2 == nil
}

// machineStat reads /proc/stat's first line: busy and total ticks of all
// CPUs, and how many CPUs there are.
func machineStat() (busy, total uint64, cpus int, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	lines := strings.Split(string(b), "\n")
	f := strings.Fields(lines[0])
	// cpu user nice system idle iowait irq softirq steal [guest guest_nice]:
	// guest time is already counted in user, so it is left out.
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0, false
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return 0, 0, 0, false
		}
	}
	for _, t := range v {
		total += t
	}
	busy = total - v[3] - v[4] // all but idle and iowait
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "cpu") {
			cpus++
		}
	}
	return busy, total, cpus, cpus > 0
}

// cpuSampler takes the CPU counters at the start of a measurement; stop
// takes them again and turns the differences into cores.
type cpuSampler struct {
	parties cpuParties
	start   time.Time
	redis   uint64
	redisOK bool
	// of Redis's main thread
	redisRun, redisWait uint64
	redisSchedOK        bool
	kafka               uint64
	kafkaOK             bool
	self                time.Duration
	selfOK              bool
	busy                uint64
	total               uint64
	machOK              bool
}

// startCPU starts sampling; call it right before the timed interval.
func (e *env) startCPU() *cpuSampler {
	s := &cpuSampler{parties: e.cpu}
	_, s.redis, s.redisOK = procStat(s.parties.redisPid)
	s.kafka, s.kafkaOK = kafkaTicks(s.parties.kafkaPids)
	s.self, s.selfOK = selfCPU()
	s.busy, s.total, _, s.machOK = machineStat()
	// Read last and first in stop, right by the clock readings: the
	// shares are of the same wall time.
	s.redisRun, s.redisWait, s.redisSchedOK = mainThreadSched(s.parties.redisPid)
	s.start = time.Now()
	return s
}

// stop ends the interval. The client is child (an xmirror or Java process
// that ran exactly during the interval) if not nil, else this process.
func (s *cpuSampler) stop(child *os.ProcessState) *cpuCores {
	run, wait, schedOK := mainThreadSched(s.parties.redisPid)
	wall := time.Since(s.start).Seconds()
	c := &cpuCores{}
	if wall <= 0 {
		return c
	}
	cores := func(sec float64) *float64 { v := sec / wall; return &v }
	ticks := func(t uint64) *float64 { return cores(float64(t) / clockTicks) }
	if _, r, ok := procStat(s.parties.redisPid); ok && s.redisOK && r >= s.redis {
		c.Redis = ticks(r - s.redis)
	}
	if schedOK && s.redisSchedOK && run >= s.redisRun && wait >= s.redisWait {
		ns := wall * 1e9
		waiting := float64(wait-s.redisWait) / ns
		idle := max(0, 1-float64(run-s.redisRun)/ns-waiting)
		c.RedisIdle, c.RedisWaiting = &idle, &waiting
	}
	if k, ok := kafkaTicks(s.parties.kafkaPids); ok && s.kafkaOK && k >= s.kafka {
		c.Kafka = ticks(k - s.kafka)
	}
	if child != nil {
		c.Client = cores((child.UserTime() + child.SystemTime()).Seconds())
	} else if self, ok := selfCPU(); ok && s.selfOK {
		c.Client = cores((self - s.self).Seconds())
	}
	if busy, total, cpus, ok := machineStat(); ok && s.machOK && total > s.total && busy >= s.busy {
		// The busy fraction of all CPUs, in cores.
		v := float64(busy-s.busy) / float64(total-s.total) * float64(cpus)
		c.Machine = &v
	}
	return c
}

// kafkaTicks is the CPU of the broker processes; unknown if there are
// none or one cannot be read (it exited).
func kafkaTicks(pids []int) (uint64, bool) {
	var sum uint64
	for _, pid := range pids {
		_, t, ok := procStat(pid)
		if !ok {
			return 0, false
		}
		sum += t
	}
	return sum, len(pids) > 0
}

// selfCPU is this process's user+system time so far.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// String is the table cell: redis/kafka/client/machine, ? when unknown.
func (c *cpuCores) String() string {
	if c == nil {
		return ""
	}
	var parts []string
	for _, v := range []*float64{c.Redis, c.Kafka, c.Client, c.Machine} {
		if v == nil {
			parts = append(parts, "?")
		} else {
			parts = append(parts, fmt.Sprintf("%.2f", *v))
		}
	}
	return strings.Join(parts, "/")
}

// RedisSched is the table cell of Redis's main thread: the share of the
// run it was idle / waiting for a CPU, "" when unknown.
func (c *cpuCores) RedisSched() string {
	if c == nil || c.RedisIdle == nil || c.RedisWaiting == nil {
		return ""
	}
	return fmt.Sprintf("%.2f/%.2f", *c.RedisIdle, *c.RedisWaiting)
}
