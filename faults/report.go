package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// row is the outcome of one scenario in one direction.
type row struct {
	scenario  string
	direction string
	verbose   bool

	entries  int   // entries written to the source
	got      int64 // records/entries found at the destination
	lost     int   // source entries missing at the destination
	dup      int   // extra copies at the destination
	ooo      int   // entries after a later one of their partition (key)
	bad      int   // destination records whose content differs from the source
	restarts int   // mirror processes started after the first
	wall     time.Duration

	fails []string // each one fails the run
	infos []string // worth knowing, not a failure
}

func (r *row) fail(format string, args ...any) {
	r.fails = append(r.fails, fmt.Sprintf(format, args...))
	r.logf("FAILURE: "+format, args...)
}

func (r *row) info(format string, args ...any) {
	r.infos = append(r.infos, fmt.Sprintf(format, args...))
	r.logf(format, args...)
}

// logf narrates the run on stderr with -v.
func (r *row) logf(format string, args ...any) {
	if r.verbose {
		fmt.Fprintf(os.Stderr, "%s %s/%s: %s\n", time.Now().Format("15:04:05.000"), r.scenario, r.direction, fmt.Sprintf(format, args...))
	}
}

func (r *row) passed() bool {
	return len(r.fails) == 0 && r.lost == 0 && r.dup == 0 && r.ooo == 0 && r.bad == 0 && r.got == int64(r.entries) && r.entries > 0
}

func (r *row) result() string {
	if r.passed() {
		return "PASS"
	}
	return "FAIL"
}

func printRow(w io.Writer, r row) {
	fmt.Fprintf(w, "%-14s %-3s %s  entries %d, at destination %d, lost %d, duplicated %d, out of order %d, bad content %d, restarts %d, %s\n",
		r.scenario, r.direction, r.result(), r.entries, r.got, r.lost, r.dup, r.ooo, r.bad, r.restarts, r.wall.Round(100*time.Millisecond))
	for _, f := range r.fails {
		fmt.Fprintf(w, "    FAIL: %s\n", f)
	}
	for _, f := range r.infos {
		fmt.Fprintf(w, "    note: %s\n", f)
	}
}

// printTable prints every run and returns how many failed.
func printTable(w io.Writer, rows []row, total time.Duration) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tdirection\tentries\tat dest\tlost\tduplicated\tout of order\tbad content\trestarts\twall time\tresult\t")
	failed := 0
	for _, r := range rows {
		if !r.passed() {
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", r.scenario, r.direction, r.entries, r.got, r.lost, r.dup, r.ooo, r.bad, r.restarts, r.wall.Round(100*time.Millisecond), r.result())
	}
	tw.Flush()
	fmt.Fprintf(w, "total wall time %s\n", total.Round(time.Second))
	if failed > 0 {
		fmt.Fprintln(w, "\nfailures:")
		for _, r := range rows {
			for _, f := range r.fails {
				fmt.Fprintf(w, "  %s/%s: %s\n", r.scenario, r.direction, strings.TrimSpace(f))
			}
		}
	}
	return failed
}
