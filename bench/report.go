package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// results is everything one bench run found; it is printed as tables and
// written as JSON.
type results struct {
	Started    time.Time      `json:"started"`
	Finished   time.Time      `json:"finished"`
	Host       map[string]any `json:"host"`
	Config     map[string]any `json:"config"`
	Throughput []row          `json:"throughput"`
	Idle       []row          `json:"idle"`
	Latency    []latencyRow   `json:"latency"`
	Big        *bigResult     `json:"big,omitempty"`
	Notes      []string       `json:"notes,omitempty"`
	Failures   []string       `json:"failures,omitempty"`
	runs       map[rowKey][]measurement
	order      []rowKey
	latRuns    map[string][]latencyResult // by direction
	latOrder   []string
}

type rowKey struct {
	c    string
	size int
}

// row is one figure: the median of its runs.
type row struct {
	Case       string  `json:"case"`
	Size       int     `json:"size"`
	Records    int64   `json:"records"`
	RecPerSec  float64 `json:"median_rec_per_s,omitempty"`
	MBPerSec   float64 `json:"median_mb_per_s,omitempty"`
	Seconds    float64 `json:"median_seconds"`
	Efficiency float64 `json:"efficiency,omitempty"`
	LimitOf    string  `json:"efficiency_limit,omitempty"`
	// VsScript is xmirror's rate over the hand-rolled script's on the
	// same backlog (bench/handrolled.py).
	VsScript   float64       `json:"xmirror_over_script,omitempty"`
	PeakRSSKiB int64         `json:"peak_rss_kib,omitempty"`
	CPU        *cpuCores     `json:"cpu,omitempty"`
	Runs       []measurement `json:"runs"`
}

// bigResult is the peak-memory run.
type bigResult struct {
	Entries      int64   `json:"entries"`
	Size         int     `json:"size"`
	Seconds      float64 `json:"seconds"`
	RecPerSec    float64 `json:"rec_per_s"`
	PeakRSSKiB   int64   `json:"peak_rss_kib"`
	RusageKiB    int64   `json:"rusage_maxrss_kib"`
	TargetRSSKiB int64   `json:"target_rss_kib"`
}

// latencyRow is one direction's follow-mode latency: the figures of its
// median run by p99, and every run.
type latencyRow struct {
	latencyResult
	Runs []latencyResult `json:"runs"`
}

// idleTarget is the most a one-shot run with nothing to do may take.
const idleTarget = 200 * time.Millisecond

// At latencyTargetRate entries per second, xmirror's follow-mode p99 may
// be at most latencyTargetRatio times Kafka alone's p99 in the same rounds,
// plus latencyTargetSlack.
const (
	latencyTargetRatio = 1.5
	latencyTargetSlack = 2 * time.Millisecond
	latencyTargetRate  = 10_000
)

func (r *results) addRun(m measurement) {
	if r.runs == nil {
		r.runs = map[rowKey][]measurement{}
	}
	k := rowKey{m.Case, m.Size}
	if _, ok := r.runs[k]; !ok {
		r.order = append(r.order, k)
	}
	r.runs[k] = append(r.runs[k], m)
}

// addLatency records a latency run; a warm-up's figures are not reported,
// but its entries must all arrive too.
func (r *results) addLatency(l latencyResult, warmup bool) {
	if l.Received != l.Sent {
		what := l.Direction
		if warmup {
			what += " (warm-up)"
		}
		r.fail(fmt.Sprintf("latency %s: %d of %d entries arrived", what, l.Received, l.Sent))
	}
	if warmup {
		return
	}
	if r.latRuns == nil {
		r.latRuns = map[string][]latencyResult{}
	}
	if _, ok := r.latRuns[l.Direction]; !ok {
		r.latOrder = append(r.latOrder, l.Direction)
	}
	r.latRuns[l.Direction] = append(r.latRuns[l.Direction], l)
}

func (r *results) fail(msg string) {
	progress("CHECK FAILED: %s", msg)
	r.Failures = append(r.Failures, msg)
}

// limits name, per xmirror case, the raw cases whose slower one bounds it.
var limits = map[string][2]string{
	caseR2K: {caseRedisRead, caseKafkaWrite},
	caseK2R: {caseKafkaRead, caseRedisWrite},
}

// finalize turns the runs into rows: medians, efficiency, peak RSS.
func (r *results) finalize() {
	r.Throughput, r.Idle, r.Latency = nil, nil, nil
	for _, d := range r.latOrder {
		runs := r.latRuns[d]
		mid := medianBy(runs, func(l latencyResult) float64 { return l.P99ms })
		r.Latency = append(r.Latency, latencyRow{latencyResult: mid, Runs: runs})
	}
	median := map[rowKey]float64{}
	for _, k := range r.order {
		ms := r.runs[k]
		rw := row{Case: k.c, Size: k.size, Runs: ms}
		rates := make([]float64, len(ms))
		secs := make([]float64, len(ms))
		for i, m := range ms {
			rates[i], secs[i] = m.RecPerSec, m.Seconds
			rw.Records = max(rw.Records, m.Records)
			rw.PeakRSSKiB = max(rw.PeakRSSKiB, m.PeakRSSKiB)
		}
		rw.RecPerSec = med(rates)
		// The CPU of the run whose rate is the median, not a median per
		// party: the figures of one run belong together.
		rw.CPU = medianBy(ms, func(m measurement) float64 { return m.RecPerSec }).CPU
		rw.MBPerSec = rw.RecPerSec * float64(k.size) / 1e6
		rw.Seconds = med(secs)
		median[k] = rw.RecPerSec
		if k.c == caseIdleR2K || k.c == caseIdleK2R || k.c == caseIdleCreate {
			rw.RecPerSec, rw.MBPerSec = 0, 0
			r.Idle = append(r.Idle, rw)
			continue
		}
		r.Throughput = append(r.Throughput, rw)
	}
	for i := range r.Throughput {
		rw := &r.Throughput[i]
		lim, ok := limits[rw.Case]
		if !ok {
			continue
		}
		a, aok := median[rowKey{lim[0], rw.Size}]
		b, bok := median[rowKey{lim[1], rw.Size}]
		if !aok || !bok || a == 0 || b == 0 {
			continue
		}
		rw.LimitOf = lim[0]
		if b < a {
			a, rw.LimitOf = b, lim[1]
		}
		rw.Efficiency = rw.RecPerSec / a
	}
	for i := range r.Throughput {
		rw := &r.Throughput[i]
		if sc, ok := median[rowKey{scriptOf[rw.Case], rw.Size}]; ok && sc > 0 {
			rw.VsScript = rw.RecPerSec / sc
		}
	}
}

// medianBy is the run whose key is the median; of an even number of runs,
// the one with the higher of the two middle keys. The figures of the run
// come with it: they belong together.
func medianBy[T any](runs []T, key func(T) float64) T {
	s := append([]T(nil), runs...)
	sort.SliceStable(s, func(i, j int) bool { return key(s[i]) < key(s[j]) })
	return s[len(s)/2]
}

func med(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// print writes the tables for people.
func (r *results) print(w io.Writer, cfg *config) {
	r.finalize()
	runs := fmt.Sprintf("median of %d runs", cfg.runs)
	if cfg.runs == 1 {
		runs = "1 run"
	}
	if cfg.warmup {
		runs += " after a warm-up"
	}
	if len(r.Throughput) > 0 {
		fmt.Fprintf(w, "\nThroughput (%s; MB/s = payload bytes/s in 10^6; eff = xmirror / min(raw source read, raw sink write);\n"+
			"cpu cores r/k/c/m = CPU seconds per second used by Redis / the Kafka broker / the measured client / the whole machine, during the median run; ? = unknown;\n"+
			"redis idle/wait = share of that run Redis's main thread was neither running nor ready (normally: no command to run) / ready but waiting for a CPU)\n", runs)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "size\tentries\tcase\trec/s\tMB/s\tseconds\teff\tpeak RSS\tcpu cores r/k/c/m\tredis idle/wait\t")
		last := -1
		for _, rw := range r.Throughput {
			size, n := "", ""
			if rw.Size != last {
				size, n = sizeLabel(rw.Size), fmt.Sprint(cfg.backlogFor(rw.Size))
				last = rw.Size
			}
			eff, rss := "", ""
			if rw.Efficiency > 0 {
				eff = fmt.Sprintf("%.2f", rw.Efficiency)
			}
			if rw.PeakRSSKiB > 0 {
				rss = fmt.Sprintf("%.1f MiB", float64(rw.PeakRSSKiB)/1024)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%.1f\t%.2f\t%s\t%s\t%s\t%s\t\n", size, n, leftPad(rw.Case), rw.RecPerSec, rw.MBPerSec, rw.Seconds, eff, rss, rw.CPU, rw.CPU.RedisSched())
		}
		tw.Flush()
	}
	r.printScale(w, runs)
	var vs []row
	for _, rw := range r.Throughput {
		if rw.VsScript > 0 {
			vs = append(vs, rw)
		}
	}
	if len(vs) > 0 {
		fmt.Fprintf(w, "\nxmirror against a hand-rolled script on the same backlog (bench/handrolled.py: redis-py and confluent-kafka, batches of 1000, at-least-once; %s)\n", runs)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "size\tcase\txmirror rec/s\tscript rec/s\txmirror / script\t")
		for _, rw := range vs {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.2f\t\n", sizeLabel(rw.Size), leftPad(rw.Case), rw.RecPerSec, rw.RecPerSec/rw.VsScript, rw.VsScript)
		}
		tw.Flush()
	}
	if len(r.Idle) > 0 {
		fmt.Fprintf(w, "\nOne-shot run with nothing new (wall time of the process, %s; target <= %s)\n", runs, idleTarget)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "after\tcase\twall ms\tpeak RSS\ttarget\t")
		for _, rw := range r.Idle {
			ok := "met"
			if rw.Seconds > idleTarget.Seconds() {
				ok = "MISSED"
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f MiB\t%s\t\n", sizeLabel(rw.Size), leftPad(rw.Case), rw.Seconds*1000, float64(rw.PeakRSSKiB)/1024, ok)
		}
		tw.Flush()
	}
	if len(r.Latency) > 0 {
		latRuns := runs
		if cfg.runs > 1 {
			latRuns = fmt.Sprintf("the run with the median p99 of %d, each a round of every direction in turn", cfg.runs)
			if cfg.warmup {
				latRuns += ", after a warm-up round"
			}
		}
		// The target is set at one rate, against Kafka alone's p99 in the
		// same rounds: at another rate, say nothing of it.
		judged := cfg.latRate == latencyTargetRate
		floor := -1.0
		for _, l := range r.Latency {
			if l.Direction == latencyFloor {
				floor = l.P99ms
			}
		}
		target := ""
		if judged {
			target = fmt.Sprintf("; target p99 <= %.1f x Kafka alone's p99 + %s at %d/s", latencyTargetRatio, latencyTargetSlack, latencyTargetRate)
		}
		fmt.Fprintf(w, "\nFollow-mode latency (send -> arrival at the destination, %d B entries; %s%s)\n", latencySize, latRuns, target)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "direction\trate/s\tseconds\tsent\treceived\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\tpeak RSS\tp99 of each run\ttarget\t")
		for _, l := range r.Latency {
			each := make([]string, len(l.Runs))
			for i, run := range l.Runs {
				each[i] = fmt.Sprintf("%.2f", run.P99ms)
			}
			target := ""
			if judged && !l.Burst && l.Direction != latencyFloor && floor >= 0 {
				limit := latencyTargetRatio*floor + float64(latencyTargetSlack)/float64(time.Millisecond)
				target = fmt.Sprintf("<= %.2f ms met", limit)
				if l.P99ms > limit {
					target = fmt.Sprintf("<= %.2f ms MISSED", limit)
				}
			}
			// Kafka alone runs no xmirror: no peak RSS to show.
			rss := ""
			if l.PeakRSSKiB > 0 {
				rss = fmt.Sprintf("%.1f MiB", float64(l.PeakRSSKiB)/1024)
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t\n", leftPad(l.Direction), l.Achieved, l.Seconds, l.Sent, l.Received, l.P50ms, l.P99ms, l.P999ms, l.MaxMs, rss, strings.Join(each, " / "), target)
		}
		tw.Flush()
	}
	if b := r.Big; b != nil {
		ok := "met"
		if b.PeakRSSKiB > b.TargetRSSKiB {
			ok = "MISSED"
		}
		fmt.Fprintf(w, "\nPeak memory: xmirror redis-to-kafka one-shot, %d entries of %d B: %.1f MiB peak RSS (target <= %d MiB: %s), %.1fs, %.0f rec/s\n",
			b.Entries, b.Size, float64(b.PeakRSSKiB)/1024, b.TargetRSSKiB/1024, ok, b.Seconds, b.RecPerSec)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "FAILED:", f)
	}
}

// leftPad keeps the case names left-aligned in a right-aligned table.
func leftPad(s string) string { return s + strings.Repeat(" ", max(0, 42-len(s))) }

func (r *results) write(path string) error {
	if path == "" {
		return nil
	}
	r.finalize()
	r.Host = map[string]any{"cpus": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH}
	if h, err := os.Hostname(); err == nil {
		r.Host["hostname"] = h
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// describeConfig is the configuration as recorded in the JSON.
func describeConfig(cfg *config) map[string]any {
	var cases []string
	for c := range cfg.cases {
		cases = append(cases, c)
	}
	sort.Strings(cases)
	return map[string]any{
		"redis":            redact(cfg.redisURL),
		"brokers":          cfg.brokers,
		"bin":              cfg.bin,
		"sizes":            cfg.sizes,
		"backlog":          cfg.backlog,
		"backlog_1k":       cfg.backlogLarge,
		"runs":             cfg.runs,
		"warmup":           cfg.warmup,
		"cases":            cases,
		"batch_size":       cfg.batch,
		"latency_rate":     cfg.latRate,
		"latency_duration": cfg.latDuration.String(),
		"big_backlog":      cfg.bigBacklog,
		"smoke":            cfg.smoke,
		"k2r_available":    cfg.k2rAvailable,
	}
}
