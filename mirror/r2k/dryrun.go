package r2k

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// DryRun works out what a run of the mirror would do if it started now:
// the streams it would read (its patterns resolved), the topic of each,
// where it would start in each and how many entries it would mirror, and
// what would stop it. It only reads: no consumer group, topic, checkpoint,
// lease or stream is created or changed, and it takes no lease, so it may
// look at a mirror that is running.
func (m *Mirror) DryRun(ctx context.Context) (mirror.Plan, error) {
	cfg := &m.cfg
	p := mirror.Plan{Kind: checkpoint.KindRedisToKafka, Name: cfg.Name, Source: mapping.SourceText(cfg.Streams, cfg.StreamPatterns, false),
		Destination: cfg.Topic, Format: string(cfg.Format), Follow: cfg.Follow}
	rc, err := cfg.Redis.Connect(ctx, mirror.ConnectTimeout)
	if err != nil {
		return p, err
	}
	defer rc.Close()
	admCl, err := cfg.Kafka.Connect(ctx, mirror.ConnectTimeout)
	if err != nil {
		return p, err
	}
	defer admCl.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	streams, matched, err := m.planStreams(ctx, rc)
	if err != nil {
		return p, err
	}
	if err := p.ReadLease(ctx, rc, cfg.Standby); err != nil {
		return p, err
	}
	ck, found, err := checkpoint.LoadR2K(ctx, rc, cfg.Name)
	if err != nil {
		return p, err
	}
	if p.Group, err = m.consumerGroup(ctx, rc, streams, ck, found); err != nil {
		return p, err
	}
	topicOf := map[string]string{}
	var topics []string
	for _, s := range streams {
		t := m.plan.tmpl.Expand(map[string]string{"stream": s})
		topicOf[s] = t
		if !slices.Contains(topics, t) && mapping.ValidTopicName(t) == nil {
			topics = append(topics, t)
		}
	}
	var details kadm.TopicDetails
	if len(topics) > 0 {
		if details, err = kadm.NewClient(admCl).ListTopics(ctx, topics...); err != nil {
			return p, cfg.Kafka.Explain(fmt.Errorf("kafka %s: list topics %v: %w", cfg.Kafka, topics, err))
		}
	}
	cmds := make(rueidis.Commands, 0, 3*len(streams))
	for _, s := range streams {
		cmds = append(cmds, rc.B().Type().Key(s).Build(), rc.B().Xlen().Key(s).Build(), rc.B().XinfoGroups().Key(s).Build())
	}
	replies := rc.DoMulti(ctx, cmds...)
	for i, s := range streams {
		it := mirror.PlanItem{Stream: s, Topic: topicOf[s], Pattern: matched[s]}
		problem, err := m.planStream(&it, p.Group, ck.Streams[s], replies[3*i:3*i+3])
		if err != nil {
			return p, err
		}
		if problem == nil {
			problem = m.planTopic(&it, details)
		}
		if problem != nil {
			p.Problems = append(p.Problems, problem)
		}
		p.Items = append(p.Items, it)
	}
	if len(streams) == 0 && !cfg.Follow {
		p.Problems = nil // nothing to do is no failure: the run says so and exits 0
	}
	p.Total()
	return p, nil
}

// planStreams are the streams a run would read, sorted: the Streams and
// those the StreamPatterns match now, each with the pattern that matched
// it.
func (m *Mirror) planStreams(ctx context.Context, rc rueidis.Client) ([]string, map[string]string, error) {
	cfg := &m.cfg
	streams := slices.Clone(cfg.Streams)
	matched := map[string]string{}
	if len(cfg.StreamPatterns) > 0 {
		found, err := scanStreams(ctx, rc, cfg.StreamPatterns)
		if err != nil {
			return nil, nil, err
		}
		for _, pat := range cfg.StreamPatterns {
			for _, s := range found[pat] {
				_, dup := matched[s]
				if dup || slices.Contains(cfg.Streams, s) || cfg.OnError == mirror.OnErrorDeadLetter && s == cfg.DeadLetterStream {
					continue
				}
				matched[s] = pat
				streams = append(streams, s)
			}
		}
	}
	slices.Sort(streams)
	return streams, matched, nil
}

// planStream fills in it from the replies to TYPE, XLEN and XINFO GROUPS
// of its stream: where a run through group would start (confirmed is the
// checkpoint's last entry of the stream) and how many entries it would
// read. It returns what would stop the run, if anything.
func (m *Mirror) planStream(it *mirror.PlanItem, group, confirmed string, replies []rueidis.RedisResult) (problem, err error) {
	cfg := &m.cfg
	typ, err := replies[0].ToString()
	if err != nil {
		return nil, mirror.ClassifyRedis(fmt.Errorf("redis %s: type of %q: %w", cfg.Redis.Addr(), it.Stream, err))
	}
	switch typ {
	case "stream":
	case "none":
		it.From, it.EntriesKnown = "-", true
		switch {
		case cfg.Follow:
			it.Note = "does not exist yet: a run waits for it"
		case cfg.AllowMissing:
			it.Note = "does not exist: skipped (missing streams allowed)"
		default:
			it.Note = "does not exist"
			return setting.Errorf("stream %q does not exist in Redis; check the name, or pass {AllowMissing} to skip missing streams", it.Stream), nil
		}
		return nil, nil
	default:
		it.Note = "not a stream"
		return setting.Errorf("key %q holds a %s, not a stream; check {Streams}", it.Stream, typ), nil
	}
	length, err := replies[1].AsInt64()
	if err != nil {
		return nil, mirror.ClassifyRedis(fmt.Errorf("redis %s: XLEN %q: %w", cfg.Redis.Addr(), it.Stream, err))
	}
	var ps mirror.PositionStatus
	groupFound, err := groupLag(&ps, group, replies[2])
	if err != nil {
		return nil, mirror.ClassifyRedis(fmt.Errorf("redis %s: read the consumer groups of stream %q (XINFO GROUPS): %w", cfg.Redis.Addr(), it.Stream, err))
	}
	if groupFound {
		it.From = "where consumer group " + group + " stands"
		if confirmed != "" {
			it.From = "after " + confirmed + " (checkpoint)"
		}
		if ps.Pending > 0 {
			it.Note = fmt.Sprintf("%d entries read but not confirmed by an earlier run: read back from Kafka, not sent twice", ps.Pending)
		}
		if ps.LagKnown {
			it.Entries, it.EntriesKnown = ps.Lag, true
		} else {
			// XDEL left holes Redis cannot count across.
			it.Entries, it.EntriesKnown, it.EntriesAtMost = length, true, true
		}
		return nil, nil
	}
	start := m.plan.start
	switch {
	case start.Latest:
		it.From, it.Entries, it.EntriesKnown = "new entries only (start latest)", 0, true
	case start.ID != "":
		it.From, it.Entries, it.EntriesKnown, it.EntriesAtMost = "entry "+start.ID+" (start)", length, true, true
	default:
		it.From, it.Entries, it.EntriesKnown = "first entry", length, true
	}
	it.Note = fmt.Sprintf("a run creates consumer group %s", group)
	if confirmed != "" {
		it.Note += fmt.Sprintf(" (the checkpoint is at %s: what is already in Kafka is read back and not sent twice)", confirmed)
	}
	return nil, nil
}

// planTopic fills in what a run would do with its topic, from details;
// it returns what would stop the run, if anything.
func (m *Mirror) planTopic(it *mirror.PlanItem, details kadm.TopicDetails) error {
	cfg := &m.cfg
	if err := mapping.ValidTopicName(it.Topic); err != nil {
		return setting.Errorf("stream %q maps to an invalid topic %q: %s; choose another {Topic}", it.Stream, it.Topic, err)
	}
	d, ok := details[it.Topic]
	switch {
	case ok && d.Err == nil:
		return nil
	case ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition):
		return fmt.Errorf("kafka %s: topic %q: %w", cfg.Kafka, it.Topic, cfg.Kafka.Denied(d.Err, "Describe", endpoint.KafkaTopic, it.Topic))
	case cfg.CreateTopic:
		note := fmt.Sprintf("a run creates topic %s (partitions: %s, replication factor: %s)", it.Topic, brokerDefault(int64(cfg.Partitions)), brokerDefault(int64(cfg.ReplicationFactor)))
		it.Note = joinNotes(it.Note, note)
		return nil
	case cfg.Follow && it.Pattern != "":
		it.Note = joinNotes(it.Note, fmt.Sprintf("topic %s does not exist: left out until it does", it.Topic))
		return nil
	}
	it.Note = joinNotes(it.Note, "topic does not exist")
	return setting.Errorf("topic %q does not exist; create it, or pass {CreateTopic} [{Partitions} N] to let xmirror create it", it.Topic)
}

func brokerDefault(n int64) string {
	if n < 0 {
		return "broker default"
	}
	return fmt.Sprint(n)
}

func joinNotes(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
