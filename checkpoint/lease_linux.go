package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// identify is when process pid (this one) started, the boot ID and its pid
// namespace, from /proc; all empty when any of them cannot be read, or
// when /proc is not this process's (mounted for another pid namespace).
func identify(pid int) (start uint64, boot, pidns string) {
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(pid) {
		return 0, "", ""
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return 0, "", ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid") // pid:[4026531836]
	if err != nil {
		return 0, "", ""
	}
	ns = strings.TrimSuffix(strings.TrimPrefix(ns, "pid:["), "]")
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, "", ""
	}
	_, start, err = parseStat(stat)
	boot = strings.TrimSpace(string(b))
	if err != nil || boot == "" || ns == "" || strings.ContainsAny(boot+ns, " =") {
		return 0, "", ""
	}
	return start, boot, ns
}

// parseStat reads the state (field 3) and start time (field 22, clock
// ticks since boot) of a /proc/<pid>/stat line. The command name (field 2)
// is in parentheses and may hold spaces and parentheses itself, so the
// fields are counted from the last ')'.
func parseStat(stat []byte) (state byte, start uint64, err error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, errors.New("no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("%d fields after the command name", len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("start time %q: %w", f[19], err)
	}
	return f[0][0], start, nil
}

// processGone reports whether the process pid that started at start is no
// longer running: no process has that pid (kill -0 says so, whatever
// /proc shows of other users' processes), or the one that has it started
// at another time (the pid was reused, by this process perhaps), or it is
// a zombie. When in doubt it is running.
func processGone(pid int, start uint64) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// Gone between the two looks, or hidden (hidepid): the
		// first is settled by the next run, the second must be
		// left alone.
		return errors.Is(err, os.ErrNotExist) && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	}
	state, started, err := parseStat(stat)
	if err != nil {
		return false
	}
	return started != start || state == 'Z' || state == 'X'
}
