package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// The cost of the number of streams and partitions: the same total of
// entries, raw format, from 1, 4 and 16 streams into a topic of as many
// partitions (redis-to-kafka), and from 1, 4 and 16 partitions into as
// many streams (kafka-to-redis, --stream '<name>.{partition}'). A mirror's
// cost should not grow with the work's shape.
var scaleWidths = []int{1, 4, 16}

const (
	defaultScaleTotal = 480_000
	scaleSize         = 100
)

func scaleCase(direction string, width int) string {
	what := "stream"
	if direction == "k2r" {
		what = "partition"
	}
	if width > 1 {
		what += "s"
	}
	return fmt.Sprintf("xmirror %s, %d %s (raw)", direction, width, what)
}

// scaleRounds runs, cfg.runs times (after a warm-up), each width in each
// direction, widths in turn within a round so a slow moment of the machine
// does not fall on one of them only.
func scaleRounds(ctx context.Context, cfg *config, env *env, res *results) error {
	total := cfg.scaleTotal
	rounds := cfg.runs
	if cfg.warmup {
		rounds++
	}
	for i := 0; i < rounds; i++ {
		warm := cfg.warmup && i == 0
		for _, direction := range []string{"r2k", "k2r"} {
			if direction == "k2r" && !cfg.k2rAvailable {
				continue
			}
			for _, width := range scaleWidths {
				progress("scale %s, %d wide, round %d/%d: %d entries", direction, width, i+1, rounds, total)
				m, err := scaleRun(ctx, cfg, env, res, direction, width, total)
				if err != nil {
					return fmt.Errorf("scale %s %d wide: %w", direction, width, err)
				}
				progress("  %-34s %9.0f rec/s", m.Case, m.RecPerSec)
				if !warm {
					res.addRun(m)
				}
			}
		}
	}
	return nil
}

func scaleRun(ctx context.Context, cfg *config, env *env, res *results, direction string, width, total int) (measurement, error) {
	per := total / width
	total = per * width
	c := scaleCase(direction, width)
	topic := env.newTopic("scale")
	if err := env.createTopicWith(ctx, topic, int32(width)); err != nil {
		return measurement{}, err
	}
	defer env.dropTopic(ctx, topic)
	name := env.newName("scale")
	defer env.dropKeys(ctx, name)
	var streams []string
	defer func() {
		for _, s := range streams {
			env.dropStream(ctx, s)
		}
	}()
	var args []string
	if direction == "r2k" {
		args = []string{"redis-to-kafka", "--topic", topic, "--name", name, "--format", "raw", "--value-field", "v"}
		for range width {
			s := env.newStream("scale")
			streams = append(streams, s)
			if _, err := rawRedisWrite(ctx, env, s, scaleSize, per, cfg.batch); err != nil {
				return measurement{}, err
			}
			args = append(args, "--stream", s)
		}
	} else {
		if _, err := rawKafkaWrite(ctx, env, topic, scaleSize, total); err != nil {
			return measurement{}, err
		}
		prefix := env.newName("scale")
		for p := range width {
			streams = append(streams, prefix+"."+strconv.Itoa(p))
		}
		args = []string{"kafka-to-redis", "--topic", topic, "--stream", prefix + ".{partition}", "--name", name, "--format", "raw"}
	}
	m, err := oneShot(ctx, cfg, env, c, args, scaleSize, "scale-"+direction+"-"+strconv.Itoa(width))
	if err != nil {
		return measurement{}, err
	}
	var landed int64
	if direction == "r2k" {
		if landed, err = env.topicRecords(ctx, topic); err != nil {
			return measurement{}, err
		}
	} else {
		for _, s := range streams {
			n, err := env.streamLen(ctx, s)
			if err != nil {
				return measurement{}, err
			}
			landed += n
		}
	}
	if m.Records != int64(total) || landed != int64(total) {
		res.fail(fmt.Sprintf("%s: mirrored %d, the destination holds %d, want %d", c, m.Records, landed, total))
	}
	return m, nil
}

// printScale writes each width's rate beside the 1-wide rate of its
// direction.
func (r *results) printScale(w io.Writer, runs string) {
	byCase := map[string]row{}
	for _, rw := range r.Throughput {
		byCase[rw.Case] = rw
	}
	if _, ok := byCase[scaleCase("r2k", 1)]; !ok {
		if _, ok := byCase[scaleCase("k2r", 1)]; !ok {
			return
		}
	}
	fmt.Fprintf(w, "\nCost of the number of streams and partitions (the same total of %d-byte entries, raw format; %s; target: 16 wide >= 0.8 of 1 wide)\n", scaleSize, runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tentries\trec/s\tof 1 wide\t")
	for _, direction := range []string{"r2k", "k2r"} {
		one, ok := byCase[scaleCase(direction, 1)]
		if !ok {
			continue
		}
		for _, width := range scaleWidths {
			rw, ok := byCase[scaleCase(direction, width)]
			if !ok {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t\n", leftPad(rw.Case), rw.Records, rw.RecPerSec, rw.RecPerSec/one.RecPerSec)
		}
	}
	tw.Flush()
}
