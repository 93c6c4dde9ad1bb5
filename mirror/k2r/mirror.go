package k2r

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/lease"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// Config is a kafka-to-redis mirror. Its field names are what Validate's
// problems and the errors of a run name (see setting.Errorf).
type Config struct {
	mirror.RunConfig

	// Kafka holds the topics; Redis receives the entries and holds the
	// checkpoints and the lease.
	Redis endpoint.Redis
	Kafka endpoint.Kafka

	// Topics are the topics to mirror.
	Topics []string
	// TopicRegexes are regular expressions (Go's syntax), each matched
	// anywhere in a topic's name unless anchored: every topic of the
	// cluster one matches is mirrored too, found at start and, in follow
	// mode, every Rescan. A topic whose name starts with "__" (Kafka's
	// internal topics) is left out unless the expression starts with
	// "^__". Topics or TopicRegexes is required; a topic both name is
	// mirrored once.
	TopicRegexes []string
	// Rescan is how often a follow run looks for new topics matching
	// TopicRegexes.
	Rescan time.Duration
	// Stream is the destination stream, a template in which {topic} and
	// {partition} are replaced ({{ and }} are literal braces).
	Stream string
	// Format is how a record value becomes fields. With mapping.FormatJSON
	// Headers adds the record's headers as fields too; with
	// mapping.FormatRaw the value and key become ValueField and KeyField,
	// then one field per header.
	Format               mapping.Format
	Headers              bool
	ValueField, KeyField string
	// PreserveIDs takes each entry's ID from its lineage header instead
	// of letting Redis choose (one partition per stream).
	PreserveIDs bool
	// MaxFields is the most fields one entry may have: a record that maps
	// to more goes to OnError.
	MaxFields int
	// MaxLen trims each stream to about this many entries (0 never).
	MaxLen int64
	// Start is where a partition without a checkpoint starts: earliest or
	// latest.
	Start string
	// OnError is what a record that cannot be decoded (or, with
	// PreserveIDs, whose ID Redis cannot add) does: mirror.OnErrorFail,
	// OnErrorSkip or OnErrorDeadLetter (into DeadLetterStream).
	OnError          string
	DeadLetterStream string
	// OnGap is what a checkpoint below the log start does: mirror.OnGapFail
	// or OnGapSkip.
	OnGap string
	// OnTopicRecreated is what a topic deleted and created again since
	// the checkpoint was written does: OnTopicRecreatedFail or
	// OnTopicRecreatedRestart.
	OnTopicRecreated string
	// PartitionCheck is how often a follow run looks for partitions added
	// to its topics.
	PartitionCheck time.Duration
}

// Defaults is a one-shot kafka-to-redis mirror with every default, to
// which a caller adds a Name, the endpoints and the Topics.
func Defaults() Config {
	return Config{
		RunConfig:        mirror.DefaultRunConfig(),
		Stream:           DefaultStreamTemplate,
		Format:           mapping.FormatJSON,
		ValueField:       mapping.DefaultValueField,
		KeyField:         mapping.DefaultKeyField,
		MaxFields:        mapping.DefaultMaxFields,
		Start:            mapping.StartEarliest,
		OnError:          mirror.OnErrorFail,
		OnGap:            mirror.OnGapFail,
		OnTopicRecreated: OnTopicRecreatedFail,
		PartitionCheck:   DefaultPartitionCheck,
		Rescan:           mirror.DefaultRescan,
	}
}

// DefaultName is the name of a mirror of cfg that has none given:
// "<topic>[,<topic>...]><stream>" with the topics sorted, then each topic
// regex after a "~", sorted, so that the same settings always resume the
// same mirror.
func DefaultName(cfg Config) string {
	return mapping.SourceText(cfg.Topics, cfg.TopicRegexes, true) + ">" + cfg.Stream
}

// Validate reports every problem of cfg, each naming its field, as a
// *setting.ConfigError.
func (cfg *Config) Validate() error {
	_, _, err := cfg.validate()
	return err
}

func (cfg *Config) validate() (StreamTemplate, topicPatterns, error) {
	var ps setting.Problems
	cfg.RunConfig.Validate(&ps)
	if cfg.Redis.URL == "" {
		ps.Addf("Redis", "{Redis} is required (endpoint.ParseRedisURL)")
	}
	if len(cfg.Kafka.Brokers) == 0 {
		ps.Addf("Kafka", "{Kafka} is required: at least one broker (endpoint.ParseBrokers)")
	}
	if len(cfg.Topics) == 0 && len(cfg.TopicRegexes) == 0 {
		ps.Addf("Topics", "{Topics} or {TopicRegexes} is required (repeat either for several)")
	}
	for _, t := range cfg.Topics {
		if err := mapping.ValidTopicName(t); err != nil {
			ps.Addf("Topics", "{Topics} %q: %s", t, err.Error())
		}
	}
	ps.Unique("Topics", "topic", cfg.Topics)
	patterns := compileTopicPatterns(&ps, cfg.TopicRegexes)
	if cfg.Rescan <= 0 {
		ps.Addf("Rescan", "{Rescan} must be positive, got %s", cfg.Rescan)
	}
	tmpl, err := ParseStreamTemplate(cfg.Stream)
	switch {
	case err != nil:
		ps.Addf("Stream", "{Stream}: %s", err.Error())
	case len(cfg.TopicRegexes) > 0 && tmpl.Uses("partition") && !tmpl.Uses("topic"):
		ps.Addf("Stream", "{Stream}: stream template %q has {partition} but not {topic}, so the same partition number of the topics {TopicRegexes} matches would share a stream; add {topic}", tmpl.String())
	default:
		if err := tmpl.CheckTopics(cfg.Topics); err != nil {
			ps.Addf("Stream", "{Stream}: %s", err.Error())
		}
	}
	if _, err := mapping.ParseFormat(string(cfg.Format)); err != nil {
		ps.Addf("Format", "{Format} %s", err.Error())
	}
	if cfg.Format == mapping.FormatRaw {
		if cfg.ValueField == "" || cfg.KeyField == "" {
			ps.Addf("ValueField", "{ValueField} and {KeyField} must not be empty")
		}
		if cfg.Headers {
			ps.Addf("Headers", "{Headers} is for {Format} json; {Format} raw always copies headers")
		}
	} else if cfg.ValueField != mapping.DefaultValueField || cfg.KeyField != mapping.DefaultKeyField {
		// Set to other names, they would be ignored.
		ps.Addf("ValueField", "{ValueField} and {KeyField} are for {Format} raw")
	}
	if cfg.MaxFields < 1 {
		ps.Addf("MaxFields", "{MaxFields} must be at least 1, got %d", cfg.MaxFields)
	}
	if cfg.MaxLen < 0 {
		ps.Addf("MaxLen", "{MaxLen} must be 0 (no trimming) or positive, got %d", cfg.MaxLen)
	}
	if _, err := mapping.ParseStart(cfg.Start, false); err != nil {
		ps.Addf("Start", "{Start} %s", err.Error())
	}
	mirror.ValidatePolicies(&ps, cfg.OnError, cfg.DeadLetterStream, cfg.OnGap)
	if cfg.OnTopicRecreated != OnTopicRecreatedFail && cfg.OnTopicRecreated != OnTopicRecreatedRestart {
		ps.Addf("OnTopicRecreated", "{OnTopicRecreated} must be fail or restart, got %q", cfg.OnTopicRecreated)
	}
	if cfg.PartitionCheck <= 0 {
		ps.Addf("PartitionCheck", "{PartitionCheck} must be positive, got %s", cfg.PartitionCheck)
	}
	return tmpl, patterns, ps.Err()
}

// Mirror is a kafka-to-redis mirror, ready to run.
type Mirror struct {
	cfg      Config
	stream   StreamTemplate
	patterns topicPatterns
	log      *slog.Logger

	probeOnce sync.Once
	probe     *mirror.LagProbe // for Lag
}

// New validates cfg (a *setting.ConfigError lists every problem) and
// returns the mirror it describes. It connects to nothing: Run does.
func New(_ context.Context, cfg Config) (*Mirror, error) {
	tmpl, patterns, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	cfg.Topics = slices.Clone(cfg.Topics)
	cfg.TopicRegexes = slices.Clone(cfg.TopicRegexes)
	return &Mirror{cfg: cfg, stream: tmpl, patterns: patterns, log: cfg.Log()}, nil
}

// Name is the mirror's name.
func (m *Mirror) Name() string { return m.cfg.Name }

// Run connects, takes the mirror's lease, sets it up from its checkpoints
// and mirrors until each partition's end as of the start is mirrored
// (one-shot) or ctx ends (follow; it then returns ctx's error after
// draining what was in flight), then closes everything within a bounded
// time. A follow run that lost its lease sets itself up again. An error of
// a run that stopped before it was set up is a *mirror.SetUpError: its
// stats count nothing.
func (m *Mirror) Run(ctx context.Context) (mirror.Stats, error) {
	matches := &topicMatches{patterns: m.patterns, explicit: map[string]bool{}, leftOut: map[string]string{}}
	for _, t := range m.cfg.Topics {
		matches.explicit[t] = true
	}
	return lease.Run(ctx, &m.cfg.RunConfig, m.cfg.Redis, checkpoint.KindKafkaToRedis, nil,
		func(ctx context.Context, rc rueidis.Client, cl *lease.Closers, before mirror.Stats) (mirror.Stats, bool, error) {
			return m.runOnce(ctx, matches, rc, cl, before)
		})
}

// runOnce sets the mirror up from its checkpoints, under its lease (ctx
// ends when it is lost), and mirrors until the run ends. Every client it
// opens is added to cl. matches are the topics its patterns matched in
// the set-ups of this Run before.
func (m *Mirror) runOnce(ctx context.Context, matches *topicMatches, rc rueidis.Client, cl *lease.Closers, before mirror.Stats) (mirror.Stats, bool, error) {
	cfg, log := &m.cfg, m.log
	admin, err := cfg.Kafka.Connect(ctx, mirror.ConnectTimeout)
	if err != nil {
		return mirror.Stats{}, false, err
	}
	cl.Add("close the Kafka admin connection", admin.Close)
	log.Debug("connected to kafka", "brokers", cfg.Kafka.String())
	opt := cfg.EngineOptions(before)
	k, err := openSession(ctx, rc, admin, setupConfig{Config: cfg, tmpl: m.stream, retryFor: opt.RetryFor, matches: matches})
	if err != nil {
		return mirror.Stats{}, false, err
	}
	cl.Add("close the Kafka consumer", k.CloseSource)
	log.Debug("mirroring", "topics", k.src.topics(), "stream", cfg.Stream, "follow", cfg.Follow, "batch_size", cfg.BatchSize, "max_in_flight", cfg.MaxInFlight)
	// The writes still in flight end before anything else is closed, or
	// the lease released.
	cl.AddStep("finish the writes to Redis", k.CloseSink)
	stats, runErr := k.Run(ctx, opt)
	if stats.Present > 0 {
		log.Info("entries already present in their streams were not written again", "count", stats.Present, "preserve_ids", cfg.PreserveIDs)
	}
	if stats.DeadLettered > 0 {
		log.Warn("records that could not be decoded were copied to the dead-letter stream", "count", stats.DeadLettered, "stream", cfg.DeadLetterStream)
	}
	return stats, true, runErr
}

// started is what the observer learns at the start of a run: where each
// partition starts and, for a one-shot run, how many records lie between
// there and its end as of the start.
func (k *session) started() mirror.Start {
	s := mirror.Start{Total: -1}
	total := int64(0)
	for _, st := range k.src.partitionStates() {
		p := mirror.Position{Topic: st.tp.Topic, Partition: st.tp.Partition, Offset: st.next, Source: true, Entries: -1}
		if !st.done {
			total += max(st.target-st.next, 0)
		}
		if !k.cfg.Follow {
			p.Entries = 0
			if !st.done {
				p.Entries = max(st.target-st.next, 0)
			}
		}
		s.Positions = append(s.Positions, p)
	}
	if !k.cfg.Follow {
		s.Total = total
	}
	return s
}
