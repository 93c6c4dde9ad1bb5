package cmd_test

import (
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/xmirror/xmirror/internal/testenv"
)

// TestProgressBarAdvancesOnATerminalAndNotElsewhere: a one-shot run on a
// terminal (a pty) draws a bar that advances and finishes, then its
// summary; the same run with stderr not a terminal draws none; --progress
// log writes progress lines naming the mirror instead; -q and
// --progress none write neither.
func TestProgressBarAdvancesOnATerminalAndNotElsewhere(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	const n = 20000
	stream := testenv.Stream(t, rc)
	addEntries(t, rc, stream, 0, n, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	run := func(name string, extra ...string) []string {
		topic := testenv.Topic(t, kc, 1)
		return append([]string{"redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name, "--batch-size", "20", "--max-in-flight", "1"}, extra...)
	}

	// On a terminal.
	out := ptyRun(t, run(testenv.Name(t, "tty"))...)
	if !strings.Contains(out, "mirrored 20000 entries") {
		t.Fatalf("no summary on the terminal:\n%q", lastBytes(out, 2000))
	}
	counts := map[int]bool{}
	for _, m := range regexp.MustCompile(`(\d+) / 20000`).FindAllStringSubmatch(out, -1) {
		c, _ := strconv.Atoi(m[1])
		counts[c] = true
	}
	if !counts[n] || len(counts) < 3 {
		t.Errorf("the bar should advance (several counts) and finish at %d / %d; counts drawn: %v\n%q", n, n, counts, lastBytes(out, 2000))
	}
	if !strings.Contains(out, "100 %") {
		t.Errorf("the bar never showed 100 %%:\n%q", lastBytes(out, 2000))
	}
	if i, j := strings.LastIndex(out, "20000 / 20000"), strings.Index(out, "mirrored 20000 entries"); j < i {
		t.Errorf("the summary should follow the finished bar:\n%q", lastBytes(out, 2000))
	}

	// Not a terminal: no bar, no control sequences.
	r := mustMirror(t, run(testenv.Name(t, "pipe"))...)
	if strings.Contains(r.stderr, "\x1b[") || strings.Contains(r.stderr, " / 20000") || !strings.Contains(r.stderr, "mirrored 20000 entries") {
		t.Errorf("without a terminal, stderr should hold the summary and no bar:\n%q", lastBytes(r.stderr, 2000))
	}

	// Log lines instead.
	name := testenv.Name(t, "log")
	r = mustMirror(t, run(name, "--progress", "log", "--progress-interval", "100ms")...)
	if !strings.Contains(r.stderr, "msg=progress mirror="+name+" entries=") || !strings.Contains(r.stderr, "total=20000") {
		t.Errorf("--progress log: no progress line naming the mirror and its total:\n%s", lastBytes(r.stderr, 2000))
	}
	for _, quiet := range [][]string{{"-q", "--progress", "log", "--progress-interval", "100ms"}, {"--progress", "none"}} {
		r = mustMirror(t, run(testenv.Name(t, "quiet"), quiet...)...)
		if strings.Contains(r.stderr, "progress") {
			t.Errorf("%v: progress shown:\n%s", quiet, lastBytes(r.stderr, 2000))
		}
	}
	if r := xmirror(t, "redis-to-kafka", "--stream", stream, "--progress", "sometimes"); r.code != 2 || !strings.Contains(r.stderr, "--progress must be auto, bar, log or none") {
		t.Errorf("--progress sometimes: exit %d, stderr %q; want 2 naming the flag", r.code, r.stderr)
	}
}

// ptyRun runs xmirror with stderr on a terminal and returns the screen.
func ptyRun(t *testing.T, args ...string) string {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	pty.Setsize(tty, &pty.Winsize{Rows: 24, Cols: 160})
	cmd := xmirrorCmd(t, args...)
	cmd.Stderr = tty
	var screen syncBuffer
	copied := make(chan struct{})
	go func() { io.Copy(&screen, ptmx); close(copied) }()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run on a terminal: %v\n%s", err, screen.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("run on a terminal did not finish:\n%s", screen.String())
	}
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
	}
	return screen.String()
}

// TestProgressVerboseShowsABarPerStream: with -v, a bar per stream below
// the mirror's, each to its stream's own total.
func TestProgressVerboseShowsABarPerStream(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	a, b := testenv.Stream(t, rc), testenv.Stream(t, rc)
	addEntries(t, rc, a, 0, 3000, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	addEntries(t, rc, b, 0, 2000, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	topic := testenv.Topic(t, kc, 1)
	out := ptyRun(t, "-v", "redis-to-kafka", "--stream", a, "--stream", b, "--topic", topic, "--name", testenv.Name(t, "m"), "--batch-size", "50", "--max-in-flight", "1")
	for _, want := range []string{"stream " + a + " ", "3000 / 3000", "stream " + b + " ", "2000 / 2000", "5000 / 5000", "mirrored 5000 entries"} {
		if !strings.Contains(out, want) {
			t.Errorf("-v on a terminal lacks %q:\n%q", want, lastBytes(out, 3000))
		}
	}
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
