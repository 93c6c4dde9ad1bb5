package cmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/xmirror/xmirror/mirror"
)

// Progress modes (--progress).
const (
	progressAuto = "auto" // a bar on a terminal, log lines elsewhere
	progressBar  = "bar"
	progressLog  = "log"
	progressNone = "none"
)

// defaultProgressInterval is how often a progress line is logged off a
// terminal: often enough to see a long copy move in a CI log, seldom
// enough not to flood it.
const defaultProgressInterval = 10 * time.Second

// lagInterval is how often a following bar asks how far behind its
// mirror is: a round trip to the servers, beside the mirror's own.
const lagInterval = 2 * time.Second

// progressFlags are the flags of live progress, shared by the mirror
// commands and run.
type progressFlags struct {
	mode     string
	interval time.Duration
}

func (f *progressFlags) bind(c *cobra.Command) {
	c.Flags().StringVar(&f.mode, "progress", progressAuto, "live progress on stderr: auto (a bar on a terminal, a log line every --progress-interval elsewhere), bar, log or none; -q is none")
	c.Flags().DurationVar(&f.interval, "progress-interval", defaultProgressInterval, "how often --progress log writes a progress line")
}

func (f *progressFlags) validate() []string {
	var problems []string
	switch f.mode {
	case progressAuto, progressBar, progressLog, progressNone:
	default:
		problems = append(problems, fmt.Sprintf("--progress must be auto, bar, log or none, got %q", f.mode))
	}
	if f.interval <= 0 {
		problems = append(problems, fmt.Sprintf("--progress-interval must be positive, got %s", f.interval))
	}
	return problems
}

// progressDisplay shows the progress of the mirrors of one command: a bar
// each on a terminal, or log lines. Its observers only count (atomics);
// the rendering is mpb's goroutine or the log ticker's.
type progressDisplay struct {
	verbose  bool // a bar per stream or partition too
	mode     string
	interval time.Duration
	log      *slog.Logger
	errOut   *switchWriter // handed back to stderr when the bars end
	stderr   io.Writer

	bars *mpb.Progress // bar mode
	mu   sync.Mutex
	all  []*mirrorProgress
	stop chan struct{}
	done chan struct{}
}

// newProgress is the display of a command's progress, as the flags and
// the terminal decide: nil when there is none to show.
func (a *app) newProgress(f *progressFlags) *progressDisplay {
	mode := f.mode
	if a.global.quiet {
		mode = progressNone
	}
	if mode == progressAuto {
		mode = progressLog
		if isTerminal(a.env.Stderr) {
			mode = progressBar
		}
	}
	if mode == progressNone {
		return nil
	}
	d := &progressDisplay{verbose: a.global.verbose, mode: mode, interval: f.interval, log: a.logger(), errOut: a.errOut, stderr: a.env.Stderr, stop: make(chan struct{}), done: make(chan struct{})}
	if mode == progressBar {
		// On stderr: stdout carries -o json. The bars refresh as a
		// terminal's, even through a writer that is not one (bar was
		// asked for). Log lines and summaries go above them meanwhile.
		d.bars = mpb.New(mpb.WithOutput(a.env.Stderr), mpb.WithAutoRefresh(), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithWidth(40))
		a.errOut.set(d.bars)
		close(d.done)
	} else {
		go d.logLoop()
	}
	return d
}

// mirrorProgress is what a display knows of one mirror's run.
type mirrorProgress struct {
	name   string
	follow bool
	lag    func(context.Context) ([]mirror.Lag, error) // nil when the mirror cannot tell

	start   time.Time
	total   atomic.Int64 // entries to go through, -1 unknown
	base    atomic.Int64 // done when the run was last set up
	done    atomic.Int64 // entries gone through: written, skipped, present or lost
	lagSeen atomic.Int64 // the last lag read, -1 before one
	bar     *mpb.Bar
	// parts are the bars of each stream or partition (-v), by key.
	parts map[string]*mpb.Bar
	// ended is closed when the mirror's run ended: its lag is no longer
	// asked for.
	ended   chan struct{}
	endOnce sync.Once
}

func (p *mirrorProgress) end() { p.endOnce.Do(func() { close(p.ended) }) }

func (p *mirrorProgress) hasEnded() bool {
	select {
	case <-p.ended:
		return true
	default:
		return false
	}
}

// positionKey names a source position's bar.
func positionKey(p mirror.Position) string {
	if p.Stream != "" {
		return "stream " + p.Stream
	}
	return fmt.Sprintf("%s/%d", p.Topic, p.Partition)
}

// watch is the observer of one mirror's run. lag, when not nil, tells a
// following bar how far behind the mirror is.
func (d *progressDisplay) watch(name string, follow bool, lag func(context.Context) ([]mirror.Lag, error)) *mirror.Observer {
	if d == nil {
		return nil
	}
	p := &mirrorProgress{name: name, follow: follow, lag: lag, ended: make(chan struct{})}
	p.total.Store(-1)
	p.lagSeen.Store(-1)
	var shown sync.Once
	return &mirror.Observer{
		Started: func(s mirror.Start) {
			// Shown once it runs: a mirror built and never run (a
			// reload's unchanged one) shows nothing.
			shown.Do(func() {
				p.start = time.Now()
				d.mu.Lock()
				d.all = append(d.all, p)
				if d.bars != nil {
					d.addBar(p)
					if d.verbose {
						p.parts = map[string]*mpb.Bar{}
						for _, pos := range s.Positions {
							if pos.Source {
								d.addPartBar(p, pos)
							}
						}
					}
				}
				d.mu.Unlock()
			})
			// A run set up again counts from its new start.
			base := p.done.Load()
			p.base.Store(base)
			if s.Total >= 0 && !follow {
				p.total.Store(base + s.Total)
				if p.bar != nil {
					p.bar.SetTotal(base+s.Total, false)
				}
			}
		},
		Committed: func(c mirror.Commit) {
			t := c.Totals
			n := t.Entries + t.Skipped + t.DeadLettered + t.Present + t.Lost
			p.done.Store(n)
			if p.bar != nil {
				p.bar.SetCurrent(n)
			}
			if p.parts != nil {
				// Counted per stream or partition only when shown.
				d.mu.Lock()
				for _, pos := range c.Positions() {
					if !pos.Source {
						continue
					}
					n := pos.Entries
					b := p.parts[positionKey(pos)]
					if b == nil {
						pos.Entries = -1 // no total known
						b = d.addPartBar(p, pos)
					}
					b.IncrInt64(n)
				}
				d.mu.Unlock()
			}
		},
	}
}

// addBar adds p's bar: done / total, percent, rate and ETA for a one-shot
// run; entries, rate and lag on one line for a following one.
func (d *progressDisplay) addBar(p *mirrorProgress) {
	name := decor.Name(p.name+" ", decor.WCSyncSpaceR)
	rate := decor.Any(func(decor.Statistics) string { return humanRate(p.rate()) + " entries/s" }, decor.WCSyncSpace)
	if p.follow {
		status := decor.Any(func(decor.Statistics) string {
			line := fmt.Sprintf("following: %s", entryCount(p.done.Load()))
			if l := p.lagSeen.Load(); l >= 0 {
				line += fmt.Sprintf(", lag %d", l)
			}
			return line
		})
		p.bar = d.bars.New(0, mpb.NopStyle(), mpb.PrependDecorators(name, status), mpb.AppendDecorators(rate))
		if p.lag != nil {
			go p.watchLag(d.stop, p.ended)
		}
		return
	}
	counts := decor.Any(func(s decor.Statistics) string {
		if s.Total <= 0 {
			return fmt.Sprintf("%d", s.Current)
		}
		return fmt.Sprintf("%d / %d", s.Current, s.Total)
	}, decor.WCSyncSpace)
	p.bar = d.bars.New(0, mpb.BarStyle(), mpb.PrependDecorators(name, counts),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), rate,
			decor.Any(func(s decor.Statistics) string { return "ETA " + eta(s.Current, s.Total, p.rate()) }, decor.WCSyncSpace)))
}

// addPartBar adds the bar of one stream or partition of p, below p's:
// its total the entries to mirror there, when the run could tell. The
// caller holds d.mu.
func (d *progressDisplay) addPartBar(p *mirrorProgress, pos mirror.Position) *mpb.Bar {
	total := max(pos.Entries, 0)
	b := d.bars.New(total, mpb.BarStyle(),
		mpb.PrependDecorators(decor.Name("  "+positionKey(pos)+" ", decor.WCSyncSpaceR),
			decor.Any(func(s decor.Statistics) string {
				if s.Total <= 0 || pos.Entries < 0 {
					return fmt.Sprintf("%d", s.Current)
				}
				return fmt.Sprintf("%d / %d", s.Current, s.Total)
			}, decor.WCSyncSpace)),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace)))
	p.parts[positionKey(pos)] = b
	return b
}

// watchLag reads the mirror's lag every lagInterval until stop.
func (p *mirrorProgress) watchLag(stop, ended <-chan struct{}) {
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), lagInterval)
		if lags, err := p.lag(ctx); err == nil {
			var sum int64
			for _, l := range lags {
				sum += l.Entries
			}
			p.lagSeen.Store(sum)
		}
		cancel()
		select {
		case <-stop:
			return
		case <-ended:
			return
		case <-t.C:
		}
	}
}

func (p *mirrorProgress) rate() float64 {
	el := time.Since(p.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(p.done.Load()) / el
}

// eta is the time left at rate for done of total, for people: "12s",
// "3m4s", "?" when it cannot tell.
func eta(done, total int64, rate float64) string {
	if total <= 0 || done >= total {
		return "0s"
	}
	if !(rate > 0) {
		return "?"
	}
	left := time.Duration(float64(total-done) / rate * float64(time.Second))
	switch {
	case left < time.Second:
		return "<1s"
	case left < time.Minute:
		return left.Round(time.Second).String()
	case left < 100*time.Hour:
		// "3m0s" reads "3m"; "3m10s" stays as it is.
		s := left.Round(time.Second).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		return s
	}
	return ">100h"
}

// logLoop writes a progress line per mirror every interval until finish.
func (d *progressDisplay) logLoop() {
	defer close(d.done)
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		d.mu.Lock()
		all := append([]*mirrorProgress(nil), d.all...)
		d.mu.Unlock()
		for _, p := range all {
			if p.hasEnded() {
				continue
			}
			attrs := []any{"mirror", p.name, "entries", p.done.Load(), "entries_per_second", humanRate(p.rate())}
			if total := p.total.Load(); total >= 0 && !p.follow {
				attrs = append(attrs, "total", total, "percent", percent(p.done.Load(), total), "eta", eta(p.done.Load(), total, p.rate()))
			}
			if p.follow && p.lag != nil {
				ctx, cancel := context.WithTimeout(context.Background(), lagInterval)
				if lags, err := p.lag(ctx); err == nil {
					var sum int64
					for _, l := range lags {
						sum += l.Entries
					}
					attrs = append(attrs, "lag", sum)
				}
				cancel()
			}
			d.log.Info("progress", attrs...)
		}
	}
}

func percent(done, total int64) string {
	if total <= 0 {
		return "100%"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(min(done, total))/float64(total))
}

// finished ends the bar of mirror name: full when its run completed,
// left as it stood otherwise.
func (d *progressDisplay) finished(name string, completed bool) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.all {
		if p.name != name {
			continue
		}
		p.end()
		if p.bar == nil {
			continue
		}
		bars := []*mpb.Bar{p.bar}
		for _, b := range p.parts {
			bars = append(bars, b)
		}
		for _, b := range bars {
			switch {
			case b.Completed() || b.Aborted():
			case completed && !p.follow:
				b.SetTotal(-1, true) // to what it did: done
			default:
				b.Abort(false)
			}
		}
	}
}

// close ends every bar and waits until the last render, so the summary
// printed after it starts on a line of its own.
func (d *progressDisplay) close() {
	if d == nil {
		return
	}
	select {
	case <-d.stop:
		return // closed already
	default:
	}
	close(d.stop)
	<-d.done
	if d.bars != nil {
		d.mu.Lock()
		for _, p := range d.all {
			for _, b := range append([]*mpb.Bar{p.bar}, slices.Collect(maps.Values(p.parts))...) {
				if b != nil && !b.Completed() && !b.Aborted() {
					b.Abort(false)
				}
			}
		}
		d.mu.Unlock()
		d.bars.Wait()
		d.errOut.set(d.stderr)
	}
}
