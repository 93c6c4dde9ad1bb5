package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/xmirror/xmirror/checkpoint"

	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/setting"
)

// A planner is a mirror that can tell what a run would do without
// running (both directions are).
type planner interface {
	DryRun(ctx context.Context) (mirror.Plan, error)
}

// shownPlan is a plan as a dry run shows it: its problems with their
// settings named as the command names them.
type shownPlan struct {
	mirror.Plan
	Problems []string `json:"problems"`
}

func showPlan(p mirror.Plan, names setting.Names) shownPlan {
	s := shownPlan{Plan: p, Problems: []string{}}
	for _, err := range p.Problems {
		s.Problems = append(s.Problems, setting.Render(err, names))
	}
	if s.Items == nil {
		s.Plan.Items = []mirror.PlanItem{}
	}
	return s
}

// dryRun prints what a run of m would do and exits 1 when the run would
// fail, listing why.
func (a *app) dryRun(ctx context.Context, f *runFlags, m runner, names setting.Names) error {
	defer closeRunner(m)
	p, err := m.(planner).DryRun(ctx)
	if err != nil {
		return commandError(err, names, nil)
	}
	s := showPlan(p, names)
	if f.output == "json" {
		writeJSON(a.env.Stdout, s)
	} else {
		writePlan(a.env.Stdout, s)
	}
	return planFailed([]shownPlan{s})
}

// planFailed is the error of a dry run whose plans have problems: exit 1,
// each problem named (the plans were printed before).
func planFailed(plans []shownPlan) error {
	var problems []string
	for _, p := range plans {
		for _, pr := range p.Problems {
			problems = append(problems, fmt.Sprintf("mirror %q: %s", p.Name, pr))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("dry run: the run would fail: %s", strings.Join(problems, "; "))
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // mirror names hold '>'
	enc.Encode(v)
}

// writePlan writes a plan as a table, one row per stream or partition.
func writePlan(w io.Writer, p shownPlan) {
	mode := "one-shot"
	if p.Follow {
		mode = "follow"
	}
	head := fmt.Sprintf("%s mirror %q, %s", p.Kind, p.Name, mode)
	if p.Group != "" {
		head += ", consumer group " + p.Group
	}
	fmt.Fprintf(w, "%s (dry run: nothing was written)\n", head)
	if p.Running {
		fmt.Fprintf(w, "  running now: %s holds its lease\n", p.Holder)
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	r2k := p.Kind == checkpoint.KindRedisToKafka
	if r2k {
		fmt.Fprintln(tw, "  STREAM\tTOPIC\tFROM\tENTRIES\tNOTE")
	} else {
		fmt.Fprintln(tw, "  TOPIC\tPARTITION\tSTREAM\tFROM\tOFFSETS\tNOTE")
	}
	for _, it := range p.Items {
		source := it.Stream
		if !r2k {
			source = it.Topic
		}
		if it.Pattern != "" {
			source += " (" + it.Pattern + ")"
		}
		if r2k {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", source, it.Topic, it.From, planCount(it), it.Note)
			continue
		}
		partition, stream := "-", "-"
		if it.Partition != nil {
			partition, stream = strconv.Itoa(int(*it.Partition)), it.Stream
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", source, partition, stream, it.From, planCount(it), it.Note)
	}
	tw.Flush()
	switch {
	case len(p.Items) == 0 && p.Follow:
		fmt.Fprintln(w, "  nothing matches yet: a run waits for streams or topics to appear")
	case len(p.Items) == 0:
		fmt.Fprintln(w, "  nothing to mirror: a run would exit 0 at once")
	}
	total := "would mirror " + entryCount(p.Entries)
	switch {
	case !r2k:
		total = fmt.Sprintf("would mirror at most %d records (%d offsets: a transaction's marker takes an offset too)", p.Entries, p.Entries)
	case !p.EntriesKnown:
		total = "would mirror at most " + entryCount(p.Entries) + " (Redis cannot count from a given entry ID without reading)"
	}
	if p.Follow {
		total += ", then follow what is added"
	}
	fmt.Fprintf(w, "  %s\n", total)
	for _, pr := range p.Problems {
		fmt.Fprintf(w, "  problem: %s\n", pr)
	}
}

// planCount is an item's count for people: "120", "≤ 120" for a bound.
func planCount(it mirror.PlanItem) string {
	switch {
	case !it.EntriesKnown:
		return "?"
	case it.EntriesAtMost:
		return "≤ " + strconv.FormatInt(it.Entries, 10)
	}
	return strconv.FormatInt(it.Entries, 10)
}
