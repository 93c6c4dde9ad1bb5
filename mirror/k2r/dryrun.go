package k2r

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// DryRun works out what a run of the mirror would do if it started now:
// the partitions it would read (its regexes resolved), the stream each
// feeds, where it would start in each (its checkpoint, else Start) and how
// many records it would mirror, and what would stop it. It only reads: no
// checkpoint, lease or stream is created or changed, and it takes no
// lease, so it may look at a mirror that is running.
func (m *Mirror) DryRun(ctx context.Context) (mirror.Plan, error) {
	cfg := &m.cfg
	p := mirror.Plan{Kind: checkpoint.KindKafkaToRedis, Name: cfg.Name, Source: mapping.SourceText(cfg.Topics, cfg.TopicRegexes, false),
		Destination: cfg.Stream, Format: string(cfg.Format), Follow: cfg.Follow}
	rc, err := cfg.Redis.Connect(ctx, mirror.ConnectTimeout)
	if err != nil {
		return p, err
	}
	defer rc.Close()
	admin, err := cfg.Kafka.Connect(ctx, mirror.ConnectTimeout)
	if err != nil {
		return p, err
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := p.ReadLease(ctx, rc, cfg.Standby); err != nil {
		return p, err
	}

	adm := kadm.NewClient(admin)
	details := kadm.TopicDetails{}
	if len(cfg.Topics) > 0 {
		if details, err = adm.ListTopics(ctx, cfg.Topics...); err != nil {
			return p, cfg.Kafka.Explain(fmt.Errorf("kafka %s: list topics: %w", cfg.Kafka, err))
		}
	}
	matched := map[string]string{}
	var topics []string
	for _, t := range cfg.Topics {
		d, ok := details[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			p.Problems = append(p.Problems, setting.Errorf("kafka %s: topic %q does not exist; check {Topics} (xmirror never creates source topics)", cfg.Kafka, t))
			p.Items = append(p.Items, mirror.PlanItem{Topic: t, From: "-", EntriesKnown: true, Note: "does not exist"})
		case d.Err != nil:
			return p, cfg.Kafka.Explain(fmt.Errorf("kafka %s: topic %q: %w", cfg.Kafka, t, d.Err))
		default:
			topics = append(topics, t)
		}
	}
	if m.patterns.any() {
		all, err := allTopics(ctx, admin)
		if err != nil {
			return p, cfg.Kafka.Explain(fmt.Errorf("kafka %s: list topics: %w", cfg.Kafka, err))
		}
		for _, t := range slices.Sorted(maps.Keys(all)) {
			if expr, ok := m.patterns.match(t); ok && !slices.Contains(cfg.Topics, t) && all[t].Err == nil {
				matched[t], details[t] = expr, all[t]
				topics = append(topics, t)
			}
		}
	}
	if len(topics) == 0 {
		if len(cfg.Topics) == 0 && !cfg.Follow {
			p.Problems = nil // nothing matched is no failure: the run says so and exits 0
		}
		p.Total()
		return p, nil
	}

	setup := &partitionSetup{rc: rc, adm: adm, cfg: setupConfig{Config: cfg, tmpl: m.stream}, log: slog.New(slog.DiscardHandler), // the plan says it all
		streamIndex: map[string]int{}, feeds: map[string][]checkpoint.TopicPartition{}}
	var tps []checkpoint.TopicPartition
	for _, t := range topics {
		for _, n := range details[t].Partitions.Numbers() {
			tps = append(tps, checkpoint.TopicPartition{Topic: t, Partition: n})
		}
	}
	as := setup.assign(nil, tps)
	if cfg.PreserveIDs {
		if err := as.checkOnePartitionPerStream(); err != nil {
			p.Problems = append(p.Problems, err)
		}
	}
	checked := as.touched
	if cfg.OnError == mirror.OnErrorDeadLetter {
		checked = append(slices.Clone(checked), cfg.DeadLetterStream)
	}
	for _, s := range checked {
		if err := setup.checkStream(ctx, s); err != nil {
			if !setting.IsConfig(err) {
				return p, err
			}
			p.Problems = append(p.Problems, err)
		}
	}
	stored, recorded, err := setup.loadPositions(ctx, as.touched)
	if err != nil {
		return p, err
	}
	ids, err := topicIDs(ctx, admin, topics)
	if err != nil {
		return p, cfg.Kafka.Explain(fmt.Errorf("kafka %s: topic IDs: %w", cfg.Kafka, err))
	}
	restart, err := setup.recreatedTopics(as, recorded, ids)
	if err != nil {
		p.Problems = append(p.Problems, err)
		restart = map[string]map[string]string{}
	}
	logs, err := setup.logOffsets(ctx, as.topics)
	if err != nil {
		return p, err
	}
	latest := cfg.Start == mapping.StartLatest
	for _, st := range as.states {
		s, tp := as.streams[st.stream], st.tp
		partition := tp.Partition
		it := mirror.PlanItem{Stream: s, Topic: tp.Topic, Partition: &partition, Pattern: matched[tp.Topic], EntriesKnown: true}
		restarted := restart[s][tp.Topic] != ""
		pos, ok := stored[tp]
		log := logs[tp]
		start, err := startAt(tp, checkpoint.K2RKey(cfg.Name, s), pos, ok && !restarted, log, latest && !restarted, cfg.OnGap)
		switch {
		case err != nil:
			p.Problems = append(p.Problems, err)
			it.From, it.Note = fmt.Sprintf("offset %d (checkpoint)", pos), "the run would stop here"
		case ok && !restarted:
			it.From, it.Entries = fmt.Sprintf("offset %d (checkpoint)", start.next), max(0, log.stable-start.next)
			if start.lost > 0 {
				it.From = fmt.Sprintf("offset %d (the log start: the checkpoint is at %d)", start.next, pos)
				it.Note = fmt.Sprintf("%d records deleted before they were mirrored are skipped (on gap skip)", start.lost)
			}
		case restarted:
			it.From, it.Entries = fmt.Sprintf("offset %d (the log start of the recreated topic)", start.next), log.stable-start.next
			it.Note = "the topic was deleted and created again since the checkpoint: mirrored from its start (on topic recreated restart)"
		case latest:
			it.From = fmt.Sprintf("offset %d (start latest: new records only)", start.next)
		default:
			it.From, it.Entries = fmt.Sprintf("offset %d (the log start)", start.next), log.stable-start.next
		}
		p.Items = append(p.Items, it)
	}
	p.Total()
	return p, nil
}
