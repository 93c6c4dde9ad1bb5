package r2k

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/lease"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// Defaults of a redis-to-kafka mirror.
const (
	// DefaultGroupPrefix makes the default consumer group of a mirror its
	// own, xmirror:<name>: mirrors that shared a group would split a
	// stream between them. (Mirrors whose checkpoint predates it keep the
	// group they read through, checkpoint.LegacyGroup.)
	DefaultGroupPrefix = "xmirror:"
	// DefaultTopic names each topic after its stream.
	DefaultTopic = "{stream}"
	// DefaultLinger sends a partition's batch as soon as the producer
	// can: under load batches still fill while earlier requests are in
	// flight, and in follow mode no entry waits for company (latency).
	DefaultLinger = 0
	// DefaultBatchBytes keeps a batch of large entries about as large as
	// Kafka's own default fetch of a partition (max.partition.fetch.bytes):
	// batches of 2000 entries of 1 KiB made the collector run without
	// pause in the 48 MiB the mirror aims at.
	DefaultBatchBytes = 1 << 20
	// DefaultCompression sends record batches as they are.
	DefaultCompression = "none"
	// visibleWait bounds how long a one-shot run waits, before it
	// returns, for its last transaction's markers: a few milliseconds
	// normally.
	visibleWait = 2 * time.Second
)

// Config is a redis-to-kafka mirror. Its field names are what Validate's
// problems and the errors of a run name (see setting.Errorf).
type Config struct {
	mirror.RunConfig

	// Redis holds the streams, the consumer group, the checkpoint and the
	// lease; Kafka receives the records.
	Redis endpoint.Redis
	Kafka endpoint.Kafka

	// Streams are the streams to mirror.
	Streams []string
	// StreamPatterns are Redis glob patterns, as SCAN MATCH takes them:
	// every stream one matches is mirrored too, found at start and, in
	// follow mode, every Rescan (see streamMatches). Streams or
	// StreamPatterns is required; a stream both name is mirrored once.
	StreamPatterns []string
	// Rescan is how often a follow run looks for new streams matching
	// StreamPatterns.
	Rescan time.Duration
	// Topic is the destination topic, a template in which {stream} is the
	// stream's name.
	Topic string
	// Group is the consumer group that tracks what was read; "" is a
	// group of the mirror's own (DefaultGroupPrefix + Name). A mirror
	// keeps the group its checkpoint records.
	Group string
	// Start is where a new consumer group starts: earliest, latest or an
	// entry ID.
	Start string
	// Format is how an entry becomes a record value; with mapping.FormatRaw
	// the value is ValueField's bytes and the other fields are headers.
	Format     mapping.Format
	ValueField string
	// KeyField is the field whose value becomes the record key ("" none).
	KeyField string
	// CreateTopic creates missing topics with Partitions partitions and
	// ReplicationFactor replicas (-1: the broker's defaults).
	CreateTopic       bool
	Partitions        int32
	ReplicationFactor int16
	// AllowMissing lets a one-shot run skip streams that do not exist
	// (a follow run waits for them).
	AllowMissing bool
	// Linger is how long the producer lets a batch fill; Compression is
	// none, gzip, snappy, lz4 or zstd.
	Linger      time.Duration
	Compression string
	// ClaimIdle takes over entries other consumers of the group left
	// pending this long (0 never).
	ClaimIdle time.Duration
	// BatchBytes bounds the entry data one read takes from a stream,
	// about (0 no bound).
	BatchBytes int
	// OnError is what an entry Kafka refuses does: mirror.OnErrorFail,
	// OnErrorSkip or OnErrorDeadLetter (into DeadLetterStream, in the
	// source Redis).
	OnError          string
	DeadLetterStream string
	// Timestamp is the record timestamp: TimestampID or TimestampNow.
	Timestamp TimestampSource
	// MaxFields warns, once per stream, of an entry with more fields,
	// which kafka-to-redis with the same limit refuses.
	MaxFields int
	// OnGap is what entries trimmed before they were mirrored do:
	// mirror.OnGapFail or OnGapSkip.
	OnGap string
	// TrimSource trims each stream, at start and after each commit, up
	// to what Kafka confirmed and the commit checkpointed, never past an
	// entry a consumer group of the stream has not yet delivered and
	// acknowledged (see checkpoint.R2KTrimCommand): Redis as a bounded
	// buffer in front of Kafka. Off by default: the streams are the
	// application's.
	TrimSource bool
}

// Defaults is a one-shot redis-to-kafka mirror with every default, to
// which a caller adds a Name, the endpoints and the Streams.
func Defaults() Config {
	return Config{
		RunConfig:         mirror.DefaultRunConfig(),
		Topic:             DefaultTopic,
		Start:             mapping.StartEarliest,
		Format:            mapping.FormatJSON,
		ValueField:        mapping.DefaultValueField,
		Partitions:        -1,
		ReplicationFactor: -1,
		Linger:            DefaultLinger,
		Compression:       DefaultCompression,
		BatchBytes:        DefaultBatchBytes,
		OnError:           mirror.OnErrorFail,
		Timestamp:         TimestampID,
		MaxFields:         mapping.DefaultMaxFields,
		OnGap:             mirror.OnGapFail,
		Rescan:            mirror.DefaultRescan,
	}
}

// DefaultName is the name of a mirror of cfg that has none given: derived
// from its streams, stream patterns (each after a ~), topic and group, so
// that the same settings always resume the same mirror.
func DefaultName(cfg Config) string {
	name := mapping.SourceText(cfg.Streams, cfg.StreamPatterns, true) + ">" + cfg.Topic
	if cfg.Group != "" && cfg.Group != checkpoint.LegacyGroup {
		name += "@" + cfg.Group
	}
	return name
}

// Validate reports every problem of cfg, each naming its field, as a
// *setting.ConfigError.
func (cfg *Config) Validate() error {
	_, err := cfg.validate()
	return err
}

// plan is what validation derives from a Config.
type plan struct {
	tmpl    mapping.Template  // Topic, parsed
	topicOf map[string]string // stream -> topic
	topics  []string          // sorted, each once
	start   mapping.Start
	txnID   string
}

func (cfg *Config) validate() (plan, error) {
	var ps setting.Problems
	var p plan
	cfg.RunConfig.Validate(&ps)
	if cfg.Name != "" {
		id, err := TransactionalID(cfg.Name)
		if err != nil {
			ps.Add("Name", err)
		}
		p.txnID = id
	}
	if cfg.Redis.URL == "" {
		ps.Addf("Redis", "{Redis} is required (endpoint.ParseRedisURL)")
	}
	if len(cfg.Kafka.Brokers) == 0 {
		ps.Addf("Kafka", "{Kafka} is required: at least one broker (endpoint.ParseBrokers)")
	}
	if len(cfg.Streams) == 0 && len(cfg.StreamPatterns) == 0 {
		ps.Addf("Streams", "{Streams} or {StreamPatterns} is required (repeat either for several)")
	}
	if slices.Contains(cfg.Streams, "") {
		ps.Addf("Streams", "{Streams} must not be empty")
	}
	seen := ps.Unique("Streams", "stream", cfg.Streams)
	if slices.Contains(cfg.StreamPatterns, "") {
		ps.Addf("StreamPatterns", "{StreamPatterns} must not be empty")
	}
	ps.Unique("StreamPatterns", "stream pattern", cfg.StreamPatterns)
	if cfg.Rescan <= 0 {
		ps.Addf("Rescan", "{Rescan} must be positive, got %s", cfg.Rescan)
	}
	tmpl, err := mapping.ParseTemplate(cfg.Topic, "stream")
	if err != nil {
		ps.Addf("Topic", "{Topic}: %s", err.Error())
	} else {
		p.tmpl = tmpl
		p.topicOf = map[string]string{}
		for _, s := range cfg.Streams {
			t := tmpl.Expand(map[string]string{"stream": s})
			if terr := mapping.ValidTopicName(t); terr != nil {
				ps.Addf("Topic", "stream %q maps to an invalid topic: %s; choose one with {Topic}", s, terr.Error())
			}
			p.topicOf[s] = t
		}
		for _, t := range p.topicOf {
			p.topics = append(p.topics, t)
		}
		sort.Strings(p.topics)
		p.topics = slices.Compact(p.topics)
	}
	if _, err := mapping.ParseFormat(string(cfg.Format)); err != nil {
		ps.Addf("Format", "{Format} %s", err.Error())
	}
	if cfg.Format == mapping.FormatRaw && cfg.ValueField == "" {
		ps.Addf("ValueField", "{ValueField} must not be empty with {Format} raw")
	}
	if p.start, err = mapping.ParseStart(cfg.Start, true); err != nil {
		ps.Addf("Start", "{Start} %s", err.Error())
	} else if cfg.TrimSource && p.start != (mapping.Start{}) {
		ps.Addf("TrimSource", "{TrimSource} with {Start} %s would trim the entries before the start, which are never mirrored; start at earliest (an existing consumer group keeps its position), or trim them yourself (XTRIM MINID)", cfg.Start)
	}
	if cfg.Partitions == 0 || cfg.Partitions < -1 {
		ps.Addf("Partitions", "{Partitions} must be positive or -1, got %d", cfg.Partitions)
	}
	if cfg.ReplicationFactor == 0 || cfg.ReplicationFactor < -1 {
		ps.Addf("ReplicationFactor", "{ReplicationFactor} must be positive or -1, got %d", cfg.ReplicationFactor)
	}
	if cfg.ClaimIdle < 0 {
		ps.Addf("ClaimIdle", "{ClaimIdle} must not be negative")
	}
	if cfg.Linger < 0 {
		ps.Addf("Linger", "{Linger} must not be negative")
	}
	if cfg.MaxFields < 1 {
		ps.Addf("MaxFields", "{MaxFields} must be at least 1, got %d", cfg.MaxFields)
	}
	if cfg.BatchBytes < 0 {
		ps.Addf("BatchBytes", "{BatchBytes} must not be negative, got %d (0 turns the byte bound off)", cfg.BatchBytes)
	}
	if _, err := compressionCodec(cfg.Compression); err != nil {
		ps.Addf("Compression", "{Compression} %s", err.Error())
	}
	if _, err := ParseTimestampSource(string(cfg.Timestamp)); err != nil {
		ps.Addf("Timestamp", "{Timestamp} %s", err.Error())
	}
	mirror.ValidatePolicies(&ps, cfg.OnError, cfg.DeadLetterStream, cfg.OnGap)
	if cfg.OnError == mirror.OnErrorDeadLetter && seen[cfg.DeadLetterStream] {
		ps.Addf("DeadLetterStream", "{DeadLetterStream} %q is also a {Streams}: its dead letters would be mirrored again", cfg.DeadLetterStream)
	}
	return p, ps.Err()
}

// Mirror is a redis-to-kafka mirror, ready to run.
type Mirror struct {
	cfg  Config
	plan plan
	log  *slog.Logger

	probeOnce sync.Once
	probe     *mirror.LagProbe // for Lag
}

// New validates cfg (a *setting.ConfigError lists every problem) and
// returns the mirror it describes. It connects to nothing: Run does.
func New(_ context.Context, cfg Config) (*Mirror, error) {
	p, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	cfg.Streams = slices.Clone(cfg.Streams)
	cfg.StreamPatterns = slices.Clone(cfg.StreamPatterns)
	return &Mirror{cfg: cfg, plan: p, log: cfg.Log()}, nil
}

// Name is the mirror's name.
func (m *Mirror) Name() string { return m.cfg.Name }

// Run connects, takes the mirror's lease, sets it up from its checkpoint
// and mirrors until the snapshot taken at the start is mirrored (one-shot)
// or ctx ends (follow; it then returns ctx's error after draining what was
// in flight), then closes everything within a bounded time. A follow run
// that lost its lease, or that Kafka fenced, sets itself up again; so
// does one that finds new streams matching its StreamPatterns. An error
// of a run that stopped before it was set up is a *mirror.SetUpError: its
// stats count nothing.
func (m *Mirror) Run(ctx context.Context) (mirror.Stats, error) {
	matches := newStreamMatches()
	return lease.Run(ctx, &m.cfg.RunConfig, m.cfg.Redis, checkpoint.KindRedisToKafka, func(err error) bool { return errors.As(err, new(*FencedError)) },
		func(ctx context.Context, rc rueidis.Client, cl *lease.Closers, before mirror.Stats) (mirror.Stats, bool, error) {
			return m.runOnce(ctx, matches, rc, cl, before)
		})
}

// runOnce sets the mirror up from its checkpoint, under its lease (ctx
// ends when it is lost), and mirrors until the run ends. Every client it
// opens is added to cl. matches are the streams its patterns matched in
// the set-ups of this Run before.
func (m *Mirror) runOnce(ctx context.Context, matches *streamMatches, rc rueidis.Client, cl *lease.Closers, before mirror.Stats) (mirror.Stats, bool, error) {
	cfg, log := &m.cfg, m.log
	admCl, err := cfg.Kafka.Connect(ctx, mirror.ConnectTimeout)
	if err != nil {
		return mirror.Stats{}, false, err
	}
	cl.Add("close the Kafka admin connection", admCl.Close)
	log.Debug("connected to kafka", "brokers", cfg.Kafka.String())
	r := &run{Mirror: m, rc: rc, admCl: admCl, adm: kadm.NewClient(admCl), plan: m.plan, streams: cfg.Streams}
	// The topics of the streams matched are added to the run's own map.
	r.plan.topicOf = maps.Clone(m.plan.topicOf)
	if len(cfg.StreamPatterns) > 0 {
		if err := r.takeMatches(ctx, matches); err != nil {
			return mirror.Stats{}, false, err
		}
		if cfg.Follow && len(r.streams) == 0 {
			// Nothing to set up yet: the producer, the read-back and
			// the source all need a stream.
			if err := r.awaitMatches(ctx, matches); err != nil {
				return mirror.Stats{}, true, err
			}
		}
	}
	if !cfg.Follow {
		// The streams before the topics: a missing stream is named as
		// such (or skipped), never its topic, and no topic is created
		// for a stream that is not there.
		streams, topics, err := r.presentStreams(ctx)
		if err != nil {
			return mirror.Stats{}, false, err
		}
		if len(topics) == 0 {
			log.Info("no stream to mirror exists; nothing to do", "streams", cfg.Streams, "stream_patterns", cfg.StreamPatterns)
			return mirror.Stats{}, true, nil
		}
		r.streams, r.plan.topics = streams, topics
	}
	sink, err := r.setUp(ctx, cl)
	if err != nil {
		return mirror.Stats{}, false, err
	}
	r.recordDescriptor(ctx)
	if obs := cfg.Observer; obs != nil && obs.Started != nil {
		obs.Started(m.started(ctx, r.src, r.ck))
	}
	log.Debug("mirroring", "streams", r.streams, "topics", r.plan.topics, "follow", cfg.Follow, "batch_size", cfg.BatchSize, "max_in_flight", cfg.MaxInFlight)
	// A follow run with patterns looks for new matches while it mirrors;
	// finding some, it stops the engine, which drains what is in flight,
	// and asks to be set up again (see watchMatches).
	engineCtx, stopEngine := context.WithCancelCause(ctx)
	var watching sync.WaitGroup
	if cfg.Follow && len(cfg.StreamPatterns) > 0 {
		watching.Go(func() { r.watchMatches(engineCtx, matches, stopEngine) })
	}
	stats, runErr := mirror.Run(engineCtx, r.src, sink, cfg.EngineOptions(before))
	stopEngine(nil)
	watching.Wait()
	if found := (*newMatchesError)(nil); errors.As(context.Cause(engineCtx), &found) && ctx.Err() == nil && (runErr == nil || errors.Is(runErr, context.Canceled)) {
		runErr = found
	}
	// Entries a gap took that no committed batch carried to the stats:
	// the run stopped before it read again, or before that batch's
	// commit.
	stats.Lost += r.src.gapSkipped.Load() - r.src.gapCommitted.Load()
	stats.Trimmed += r.src.trimmed.Load()
	// Nothing more is produced or committed by this producer, whatever
	// ended the run; a transaction still open is aborted.
	sink.Stop(context.WithoutCancel(ctx))
	if runErr == nil && !cfg.Follow && stats.Entries > 0 {
		// Return once the records are visible to read_committed readers.
		vctx, cancel := context.WithTimeout(ctx, visibleWait)
		if !WaitVisible(vctx, r.adm, r.plan.topics) {
			log.Debug("the records' transaction markers were not all written yet at exit (another producer's transaction open, or a slow broker)", "waited", visibleWait)
		}
		cancel()
	}
	if ee := (*EntryError)(nil); errors.As(runErr, &ee) {
		ee.CreateTopic = cfg.CreateTopic // for the hint of a topic deleted during the run
	}
	if n := stats.Present; n > 0 {
		log.Info("acknowledged entries already in Kafka without sending them again", "already_in_kafka", n)
	}
	if n := stats.Skipped; n > 0 {
		log.Warn("skipped entries Kafka refuses", "count", n, "on_error", cfg.OnError)
	}
	if n := stats.DeadLettered; n > 0 {
		log.Warn("copied entries Kafka refuses to the dead-letter stream", "count", n, "stream", cfg.DeadLetterStream)
	}
	return stats, true, runErr
}

// run is one set-up of the mirror, under its lease: the clients and what
// the steps of the set-up learn, in turn.
type run struct {
	*Mirror
	// plan is the mirror's, with only the topics of the streams a
	// one-shot run found.
	plan plan
	// streams are those the source reads: the Streams and those the
	// StreamPatterns matched (a one-shot run's found, every stream of a
	// follow run). matched are those of the patterns (stream -> the
	// pattern), fromFirst those a follow run found after its first
	// set-up, mirrored from their first entry whatever Start says.
	streams   []string
	matched   map[string]string
	fromFirst map[string]bool
	rc        rueidis.Client
	admCl     *kgo.Client
	adm       *kadm.Client

	ck     checkpoint.R2K
	found  bool             // the checkpoint exists
	counts map[string]int32 // partitions of each topic now
	src    *RedisSource
	limits kafkatopic.Limits // what the topics accept
	kept   map[string]int32  // partitions each topic's records are hashed over
	fresh  map[string]int32  // counts the checkpoint does not record yet
	prod   *kgo.Client       // the transactional producer
}

// presentStreams checks that the source streams exist, before any topic is
// checked or created: a missing one is refused, or skipped with
// AllowMissing (a stream a pattern matched and that is gone since is
// skipped too). It returns the streams found and their topics, sorted,
// each once; a stream created after this check is not read by this run.
// Only for a one-shot run (a follow run waits for its streams).
func (r *run) presentStreams(ctx context.Context) (streams, topics []string, err error) {
	cfg := &r.cfg
	if len(r.streams) == 0 {
		return nil, nil, nil
	}
	cmds := make(rueidis.Commands, 0, len(r.streams))
	for _, s := range r.streams {
		cmds = append(cmds, r.rc.B().Exists().Key(s).Build())
	}
	for i, res := range r.rc.DoMulti(ctx, cmds...) {
		s := r.streams[i]
		n, err := res.AsInt64()
		if err != nil {
			return nil, nil, mirror.ClassifyRedis(fmt.Errorf("check stream %q (EXISTS): %w", s, err))
		}
		if n > 0 {
			streams = append(streams, s)
			topics = append(topics, r.plan.topicOf[s])
			continue
		}
		if p, ok := r.matched[s]; ok {
			r.log.Info("stream matched a pattern but is gone; skipping it", "stream", s, "stream_pattern", p)
			continue
		}
		if !cfg.AllowMissing {
			return nil, nil, setting.Errorf("stream %q does not exist in Redis; check the name, or pass {AllowMissing} to skip missing streams", s)
		}
		r.log.Info("stream does not exist; skipping it and its topic, as missing streams are allowed", "stream", s, "topic", r.plan.topicOf[s])
	}
	slices.Sort(topics)
	return streams, slices.Compact(topics), nil
}

// setUp prepares the run, in an order each step depends on (a one-shot
// run has checked its streams before, see presentStreams): the topics,
// the checkpoint and the consumer group (the source), the producer (which
// fences every earlier run), the partitions' starting positions, and the
// read-back of what an interrupted run left in Kafka. It returns the sink.
func (r *run) setUp(ctx context.Context, cl *lease.Closers) (*KafkaSink, error) {
	cfg, log, name, kafkaEP := &r.cfg, r.log, r.cfg.Name, r.cfg.Kafka
	var err error
	r.counts, err = EnsureTopics(ctx, r.admCl, r.plan.topics, TopicSpec{Create: cfg.CreateTopic, Partitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor, Denied: kafkaEP.Denied})
	if err != nil {
		return nil, kafkaEP.Explain(err)
	}
	log.Debug("topics ready", "partitions", r.counts, "create_missing", cfg.CreateTopic)

	r.ck, r.found, err = checkpoint.LoadR2K(ctx, r.rc, name)
	if err != nil {
		return nil, err
	}
	if r.found {
		log.Debug("resuming", "checkpoint", checkpoint.R2KKey(name), "updated", r.ck.Updated)
	} else {
		log.Debug("no checkpoint yet: a new mirror", "checkpoint", checkpoint.R2KKey(name))
	}
	if err := r.setUpSource(ctx); err != nil {
		return nil, err
	}
	if err := r.setUpProducer(ctx, cl); err != nil {
		return nil, err
	}
	pending, err := r.storeStarts(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.setUpReadBack(ctx, pending); err != nil {
		return nil, err
	}
	timestamps, err := TimestampPolicies(ctx, r.adm, r.plan.topics)
	if err != nil {
		return nil, kafkaEP.Explain(describeDenied(kafkaEP, err))
	}
	sinkCfg := KafkaSinkConfig{
		Client: r.prod,
		Mirror: name,
		Denied: kafkaEP.Denied,

		TransactionalID: r.plan.txnID,
		// Half the batches in flight: the others are read, and wait to
		// be produced, while a transaction commits.
		TxnBatches: max(1, cfg.MaxInFlight/2),
		Topics:     r.plan.topicOf,
		Format:     cfg.Format,
		ValueField: cfg.ValueField,
		KeyField:   cfg.KeyField,
		// The producer's batch limit is each topic's limit; a record
		// beyond it fails on its own, before it is sent.
		Limits:     r.limits.Topics,
		WarnFields: cfg.MaxFields,

		Timestamp:         cfg.Timestamp,
		TimestampPolicies: timestamps,
		OnError:           cfg.OnError,
		Logger:            log,
	}
	if !cfg.Follow {
		sinkCfg.ConfirmTimeout = cfg.Timeout
	}
	return NewKafkaSink(sinkCfg), nil
}

// recordDescriptor records what the mirror is, for status and the
// checkpoint commands. It is a description, not a position: a Redis user
// not allowed to write it gets a warning, and the mirror runs on.
func (r *run) recordDescriptor(ctx context.Context) {
	cfg := &r.cfg
	host, _ := os.Hostname()
	d := checkpoint.Descriptor{Kind: checkpoint.KindRedisToKafka, Name: cfg.Name,
		Source: mapping.SourceText(cfg.Streams, cfg.StreamPatterns, false), Destination: cfg.Topic, Group: r.src.cfg.Group, Format: string(cfg.Format),
		Streams: r.streams, Topics: r.plan.topics,
		Redis: cfg.Redis.Redacted(), Brokers: cfg.Kafka.String(), Host: host, Recorded: time.Now()}
	if err := checkpoint.RecordDescriptor(ctx, r.rc, d); err != nil {
		r.log.Warn("cannot record what the mirror is for xmirror status; mirroring goes on", "key", checkpoint.DescriptorKey(d.Kind, d.Name), "err", err)
	}
}

// setUpSource chooses the consumer group and opens the source on it.
func (r *run) setUpSource(ctx context.Context) error {
	cfg, name := &r.cfg, r.cfg.Name
	group, err := r.consumerGroup(ctx, r.rc, r.streams, r.ck, r.found)
	if err != nil {
		return err
	}
	r.log.Debug("consumer group", "group", group, "consumer", name)
	r.src, err = NewRedisSource(ctx, RedisSourceConfig{
		Client:       r.rc,
		Streams:      r.streams,
		FromFirst:    r.fromFirst,
		Group:        group,
		Consumer:     name,
		Start:        r.plan.start.StreamID(),
		BatchSize:    cfg.BatchSize,
		BatchBytes:   cfg.BatchBytes,
		Follow:       cfg.Follow,
		AllowMissing: cfg.AllowMissing,
		ClaimIdle:    cfg.ClaimIdle,
		Mirror:       name,
		OnGap:        cfg.OnGap,
		Confirmed:    r.ck.Streams,
		TrimSource:   cfg.TrimSource,
		Logger:       r.log,

		DeadLetterStream: cfg.DeadLetterStream,
	})
	if err != nil {
		return err
	}
	// The group is recorded once the source accepted it (a group another
	// mirror reads is refused there), and before anything else is stored:
	// a checkpoint without it means a mirror from before groups were
	// recorded.
	return checkpoint.RecordR2KGroup(ctx, r.rc, name, group)
}

// setUpProducer sizes the transactional producer to what the topics
// accept and hashes records over the partition counts this mirror first
// wrote to, then initialises it, which fences every earlier run.
func (r *run) setUpProducer(ctx context.Context, cl *lease.Closers) error {
	cfg, log, name, kafkaEP := &r.cfg, r.log, r.cfg.Name, r.cfg.Kafka
	// Records are hashed over the partition count each topic had when
	// this mirror first wrote to it, stored before anything is produced.
	var err error
	r.kept, r.fresh, err = KeepPartitionCounts(r.ck.PartitionCounts, r.counts, checkpoint.R2KKey(name))
	if err != nil {
		return err
	}
	grown := newGrownTopics(log)
	for _, t := range r.plan.topics {
		if r.counts[t] > r.kept[t] {
			grown.warn(t, int(r.counts[t]), int(r.kept[t]))
		}
	}
	// What the topics accept sizes the producer, and the read-back must
	// be able to read records of that size.
	if r.limits, err = kafkatopic.ReadLimits(ctx, r.adm, r.plan.topics); err != nil {
		return kafkaEP.Explain(describeDenied(kafkaEP, err))
	}
	popts, err := ProducerOpts(ProducerTuning{
		Linger:      cfg.Linger,
		Compression: cfg.Compression,
		// A batch holds up to BatchSize entries per stream; room for
		// every batch in flight keeps Write from blocking on the buffer.
		MaxBufferedRecords: cfg.BatchSize * len(r.streams) * (cfg.MaxInFlight + 1),
		Limits:             r.limits,

		KeptPartitions:  r.kept,
		PartitionsAdded: grown.warn,
	})
	if err != nil {
		return err
	}
	popts = append(popts, kgo.TransactionalID(r.plan.txnID))
	if r.prod, err = kgo.NewClient(append(kafkaEP.ClientOpts(), popts...)...); err != nil {
		return kafkaEP.Explain(err)
	}
	cl.Add("close the Kafka producer", r.prod.Close)
	// The producer's InitProducerID fences every earlier run of this
	// mirror and aborts the transaction one left open, before anything
	// is read back or recorded: nothing of theirs can land after it.
	initCtx, cancelInit := context.WithTimeout(ctx, cfg.Timeout)
	err = kafkaEP.Denied(InitProducer(initCtx, r.prod, name), "Write", endpoint.KafkaTransactionalID, r.plan.txnID)
	// Read before the cancel, which would make it Canceled always.
	timedOut := errors.Is(initCtx.Err(), context.DeadlineExceeded)
	cancelInit()
	if err != nil {
		if timedOut && ctx.Err() == nil {
			return setting.Errorf("kafka %s: initialising the transactional producer %s took longer than {Timeout} %s; is the broker reachable, and does it allow transactions (transaction.state.log.* settings)?", kafkaEP, r.plan.txnID, cfg.Timeout)
		}
		return kafkaEP.Explain(err)
	}
	log.Debug("transactional producer ready; earlier runs are fenced", "transactional_id", r.plan.txnID)
	return nil
}

// describeDenied names the DescribeConfigs ACL a refused description of a
// topic's configs lacks.
func describeDenied(kafkaEP endpoint.Kafka, err error) error {
	var de *kafkatopic.DescribeError
	if errors.As(err, &de) {
		return kafkaEP.Denied(err, endpoint.KafkaDescribeConfigs, endpoint.KafkaTopic, de.Topic)
	}
	return err
}

// storeStarts records where each partition stands before anything is
// produced, so that a crash of this very run leaves the restart a bound
// to read back from, and then the partition counts; it returns how many
// entries an earlier run read but did not acknowledge (they may already
// be in Kafka).
func (r *run) storeStarts(ctx context.Context) (pending int64, err error) {
	name := r.cfg.Name
	ends, err := kafkatopic.EndOffsets(ctx, r.adm, r.plan.topics)
	if err != nil {
		return 0, err
	}
	if pending, err = r.src.Pending(ctx); err != nil {
		return 0, err
	}
	// The topics of streams that appeared during this run, which the
	// checkpoint has no partition count for, are new to the mirror:
	// nothing of its own can be there, and a topic that already holds
	// others' records is not read back from its start.
	newTopics := map[string]bool{}
	for s := range r.fromFirst {
		t := r.plan.topicOf[s]
		if _, ok := r.ck.PartitionCounts[t]; !ok {
			newTopics[t] = true
		}
	}
	initial, err := startingOffsets(ctx, r.adm, ends, r.ck, r.found, pending > 0, newTopics)
	if err != nil {
		return 0, r.cfg.Kafka.Explain(err)
	}
	if err := checkpoint.InitR2KPartitions(ctx, r.rc, name, initial); err != nil {
		return 0, err
	}
	// The partition counts are stored only now: a checkpoint holding
	// them is taken to have its partitions' positions too (see
	// startingOffsets), so a run that stops before its positions are
	// stored must not leave the counts.
	if err := checkpoint.InitR2KPartitionCounts(ctx, r.rc, name, r.fresh); err != nil {
		return 0, err
	}
	// From where the checkpoint stands now: its positions, and for
	// partitions it had none for, those just recorded.
	for tp, off := range initial {
		if _, ok := r.ck.Partitions[tp]; !ok {
			if r.ck.Partitions == nil {
				r.ck.Partitions = map[checkpoint.TopicPartition]int64{}
			}
			r.ck.Partitions[tp] = off
		}
	}
	return pending, nil
}

// setUpReadBack reads back what this mirror wrote after its checkpoint:
// it may be in Kafka while Redis no longer knows it was read (entries
// pending from an interrupted run, or delivered again because Redis
// restarted from an older copy of its data, or the group was moved back
// or made again). The read-back runs at every start, pending entries or
// not; after a clean stop it starts at the end of every partition and
// reads nothing. A follow run does the same again, from the checkpoint as
// it is then, when it sees Redis restart or its group go back or vanish.
func (r *run) setUpReadBack(ctx context.Context, pending int64) error {
	cfg, kafkaEP, topics := &r.cfg, r.cfg.Kafka, r.plan.topics
	streamSet := map[string]bool{}
	for _, s := range r.streams {
		streamSet[s] = true
	}
	scanOpts := append(kafkaEP.ClientOpts(), kgo.BrokerMaxReadBytes(kafkatopic.ConsumerReadBytes(r.limits.Largest())))
	readBack := func(ctx context.Context, from map[checkpoint.TopicPartition]int64) (map[string]struct{}, error) {
		// The read-back is bounded like any one-shot step, in both modes:
		// nothing may be produced before it completes.
		scanCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		written, err := ScanWritten(scanCtx, scanOpts, r.adm, topics, from, streamSet)
		if rerr := (*ReadBackError)(nil); errors.As(err, &rerr) {
			err = kafkaEP.Denied(err, endpoint.KafkaRead, endpoint.KafkaTopic, rerr.Topic)
		}
		if err != nil {
			if scanCtx.Err() != nil && ctx.Err() == nil {
				return nil, setting.Errorf("kafka %s: reading back topics %v to find what this mirror already wrote took longer than {Timeout} %s; is the broker reachable?", kafkaEP, topics, cfg.Timeout)
			}
			return nil, kafkaEP.Explain(err)
		}
		return written, nil
	}
	written, err := readBack(ctx, r.ck.Partitions)
	if err != nil {
		return err
	}
	if pending > 0 || len(written) > 0 {
		r.log.Info("resuming an interrupted run", "pending", pending, "already_in_kafka", len(written))
	} else {
		r.log.Debug("nothing pending from an earlier run, and nothing in Kafka after the checkpoint")
	}
	r.src.SkipWritten(written)
	r.src.OnReadBack(func(ctx context.Context) (map[string]string, map[string]struct{}, error) {
		ck, _, err := checkpoint.LoadR2K(ctx, r.rc, cfg.Name)
		if err != nil {
			return nil, nil, err
		}
		written, err := readBack(ctx, ck.Partitions)
		return ck.Streams, written, err
	})
	return nil
}

// started is what the observer learns at the start of a run: where the
// checkpoint stands and, for a one-shot run, how many entries its snapshot
// holds.
func (m *Mirror) started(ctx context.Context, src *RedisSource, ck checkpoint.R2K) mirror.Start {
	s := mirror.Start{Total: -1}
	streams := slices.Clone(src.cfg.Streams)
	for s := range ck.Streams {
		if !slices.Contains(streams, s) {
			streams = append(streams, s)
		}
	}
	slices.Sort(streams)
	var remaining map[string]int64 // per stream, one-shot
	if !m.cfg.Follow {
		remaining = src.remainingPerStream(ctx, streams)
	}
	for _, stream := range streams {
		p := mirror.Position{Stream: stream, ID: ck.Streams[stream], Source: true, Entries: -1}
		if n, ok := remaining[stream]; ok {
			p.Entries = n
		}
		s.Positions = append(s.Positions, p)
	}
	for _, tp := range slices.SortedFunc(maps.Keys(ck.Partitions), func(a, b checkpoint.TopicPartition) int {
		return strings.Compare(a.String(), b.String())
	}) {
		s.Positions = append(s.Positions, mirror.Position{Topic: tp.Topic, Partition: tp.Partition, Offset: ck.Partitions[tp]})
	}
	if !m.cfg.Follow {
		if n, err := src.Remaining(ctx); err == nil {
			s.Total = n
		} else {
			m.log.Debug("cannot count the entries to mirror", "err", err)
		}
	}
	return s
}

// startingOffsets is where the checkpoint starts each partition it has
// no position for yet, before anything is produced: the partition's end
// (ends), where this mirror cannot have written before. That holds for a
// new mirror, and for a topic whose partition count the checkpoint
// records: records are hashed over that count from the first write on,
// and the partitions it covers have positions from then. A checkpoint
// written before partition counts were kept adopts the topic's current
// count, and an earlier version may have written to any of its
// partitions, added ones included, without a position; so may a mirror
// whose checkpoint is gone but whose entries are pending (pending). Those
// partitions start at their log start, so that a run stopped during its
// read-back leaves the next one the whole partition to read back, not
// its end. newTopics are topics this mirror took on during the run, for
// streams that appeared in it: they start at their end.
func startingOffsets(ctx context.Context, adm *kadm.Client, ends map[checkpoint.TopicPartition]int64, ck checkpoint.R2K, found, pending bool, newTopics map[string]bool) (map[checkpoint.TopicPartition]int64, error) {
	if !found && !pending {
		return ends, nil
	}
	var old []string
	seen := map[string]bool{}
	for tp := range ends {
		if _, ok := ck.PartitionCounts[tp.Topic]; (!found || !ok) && !seen[tp.Topic] && !newTopics[tp.Topic] {
			seen[tp.Topic] = true
			old = append(old, tp.Topic)
		}
	}
	if len(old) == 0 {
		return ends, nil
	}
	starts, err := adm.ListStartOffsets(ctx, old...)
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("list start offsets of %v: %w", old, err))
	}
	out := make(map[checkpoint.TopicPartition]int64, len(ends))
	for tp, end := range ends {
		out[tp] = end
		if !seen[tp.Topic] {
			continue
		}
		out[tp] = 0
		if s, ok := starts.Lookup(tp.Topic, tp.Partition); ok && s.Err == nil {
			out[tp] = s.Offset
		}
	}
	return out, nil
}

// consumerGroup finds the group the mirror reads through; a mirror whose
// checkpoint is gone but whose consumer is in the old shared group (see
// chooseGroup) keeps that group.
func (m *Mirror) consumerGroup(ctx context.Context, rc rueidis.Client, streams []string, ck checkpoint.R2K, found bool) (string, error) {
	legacy := false
	if !found && m.cfg.Group == "" {
		var err error
		if legacy, err = ConsumerInGroup(ctx, rc, streams, checkpoint.LegacyGroup, m.cfg.Name); err != nil {
			return "", err
		}
	}
	return chooseGroup(m.cfg.Name, m.cfg.Group, ck.Group, found, legacy)
}

// chooseGroup picks the consumer group of mirror name, given Group (or
// ""), the group its checkpoint records (or ""), whether it has a
// checkpoint at all, and whether its consumer is in the old shared group:
//
//   - a recorded group is kept; a different Group is refused, since the
//     new group would read the streams again from Start;
//   - a checkpoint written before groups were recorded means the old
//     shared default, checkpoint.LegacyGroup, unless Group says which;
//   - so does a mirror with no checkpoint whose consumer is found in that
//     group (its checkpoint was deleted): it resumes, not starts over;
//   - a new mirror reads through Group, or else a group of its own,
//     xmirror:<name>.
func chooseGroup(name, given, recorded string, found, legacyConsumer bool) (string, error) {
	switch {
	case recorded != "" && given != "" && given != recorded:
		return "", setting.Errorf("mirror %q reads through consumer group %q (recorded in checkpoint %s), not {Group} %q; drop {Group}, or choose another {Name} for a new mirror", name, recorded, checkpoint.R2KKey(name), given)
	case recorded != "":
		return recorded, nil
	case given != "":
		return given, nil
	case found, legacyConsumer:
		return checkpoint.LegacyGroup, nil
	default:
		return DefaultGroupPrefix + name, nil
	}
}

// grownTopics warns, once per topic and partition count, that partitions
// added to a topic stay unused by this mirror.
type grownTopics struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[string]int
}

func newGrownTopics(log *slog.Logger) *grownTopics {
	return &grownTopics{log: log, seen: map[string]int{}}
}

func (g *grownTopics) warn(topic string, partitions, kept int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen[topic] == partitions {
		return
	}
	g.seen[topic] = partitions
	g.log.Warn("topic has more partitions than when this mirror first wrote to it; records are still hashed over the first count, so keys and streams keep their partition, and the new partitions stay unused by this mirror until it is reset under a new name",
		"topic", topic, "partitions", partitions, "used", kept)
}
