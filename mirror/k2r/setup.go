package k2r

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// What kafka-to-redis does with a topic deleted and created again since its
// checkpoint was written (a topic ID other than the one recorded).
const (
	OnTopicRecreatedFail    = "fail"    // refuse, naming the topic and both IDs
	OnTopicRecreatedRestart = "restart" // mirror the new topic from its start
)

// setupConfig is what setUp needs of a mirror, as Config.validate left it.
type setupConfig struct {
	Name   string
	Topics []string
	Stream StreamTemplate
	// Format is FormatJSON or FormatRaw; Headers (json) copies headers as
	// fields; ValueField and KeyField (raw) name the fields of the value
	// and key.
	Format               mapping.Format
	Headers              bool
	ValueField, KeyField string
	PreserveIDs          bool
	// MaxFields refuses, as undecodable, a record that maps to more
	// fields (DefaultMaxFields when zero).
	MaxFields      int
	MaxLen         int64
	StartLatest    bool
	OnError, OnGap string
	// OnTopicRecreated is OnTopicRecreatedFail (when empty) or
	// OnTopicRecreatedRestart.
	OnTopicRecreated string
	DeadLetterStream string
	BatchSize        int
	Follow           bool
	// RetryFor bounds, in one-shot, how long a transient failure is
	// retried and how long Kafka may go without delivering anything to
	// partitions short of their snapshot end.
	RetryFor time.Duration
	// PartitionCheck is how often a follow run looks for partitions added
	// to its topics (DefaultPartitionCheck when zero).
	PartitionCheck       time.Duration
	Logger               *slog.Logger
	KafkaOpts            []kgo.Opt // connection options; the consumer's are added
	KafkaName, RedisName string    // endpoints, for messages
}

// Defaults of the kafka-to-redis source's timers.
const (
	// DefaultPartitionCheck is how often a follow run looks for
	// partitions added to its topics: often enough that a new partition's
	// records are mirrored within about a minute, rarely enough that the
	// metadata requests cost nothing.
	DefaultPartitionCheck = 30 * time.Second
	// followStallWarn is how long a follow run goes without any progress
	// before it checks whether records are waiting (a broker it cannot
	// reach) and warns, and then how often it warns again.
	followStallWarn = 30 * time.Second
)

// setUp checks the topics, destination streams and checkpoints, decides
// where each partition starts, stores that position at once for every
// partition that had none, and returns the source and sink to pass to Run.
// The caller closes both; admin must outlive the source.
func setUp(ctx context.Context, rc rueidis.Client, admin *kgo.Client, cfg setupConfig) (*KafkaSource, *RedisSink, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.PartitionCheck <= 0 {
		cfg.PartitionCheck = DefaultPartitionCheck
	}
	adm := kadm.NewClient(admin)
	details, err := adm.ListTopics(ctx, cfg.Topics...)
	if err != nil {
		return nil, nil, mirror.Transient(fmt.Errorf("kafka %s: list topics: %w", cfg.KafkaName, err))
	}
	src := &KafkaSource{
		mapping: recordMapping{format: cfg.Format, headers: cfg.Headers, valueField: cfg.ValueField,
			keyField: cfg.KeyField, preserveIDs: cfg.PreserveIDs, maxFields: cfg.MaxFields},
		onError:        cfg.OnError,
		follow:         cfg.Follow,
		batchSize:      cfg.BatchSize,
		log:            log,
		parts:          map[string]map[int32]*partState{},
		admin:          admin,
		kafkaName:      cfg.KafkaName,
		retryFor:       cfg.RetryFor,
		pollWait:       defaultPollWait,
		probeAfter:     defaultProbeAfter,
		probeWait:      defaultProbeWait,
		stallWarn:      followStallWarn,
		partitionCheck: cfg.PartitionCheck,
		topicIDs:       map[string]string{},
		setup: &partitionSetup{rc: rc, adm: adm, cfg: cfg, log: log,
			streamIndex: map[string]int{}, feeds: map[string][]checkpoint.TopicPartition{}},
	}
	// The IDs are asked for apart, not from the cache ListTopics reads: a
	// run set up again after its topic was recreated must see the new one.
	ids, err := topicIDs(ctx, admin, cfg.Topics)
	if err != nil {
		return nil, nil, mirror.Transient(fmt.Errorf("kafka %s: topic IDs: %w", cfg.KafkaName, err))
	}
	var tps []checkpoint.TopicPartition
	for _, t := range cfg.Topics {
		d, ok := details[t]
		if !ok || d.Err != nil {
			why := "it does not exist"
			if ok && d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
				why = d.Err.Error()
			}
			return nil, nil, mirror.Errorf("kafka %s: topic %q: %s; check {Topics} (xmirror never creates source topics)", cfg.KafkaName, t, why)
		}
		src.parts[t] = map[int32]*partState{}
		for _, p := range d.Partitions.Numbers() {
			tps = append(tps, checkpoint.TopicPartition{Topic: t, Partition: p})
		}
	}
	if cfg.OnError == mirror.OnErrorDeadLetter {
		if err := src.setup.checkStream(ctx, cfg.DeadLetterStream); err != nil {
			return nil, nil, err
		}
	}
	consume, err := src.setup.add(ctx, src, tps, cfg.StartLatest, ids)
	if err != nil {
		return nil, nil, err
	}
	src.lastPartitionCheck = time.Now()

	// A broker sends a batch larger than the fetch's byte limits whole when
	// it is the first of the response, so records as large as the topics
	// allow are read; the response must fit what the client reads. Without
	// the right to read the configs, the default fits records up to about
	// 50 MiB.
	readBytes := kafkatopic.ConsumerReadBytes(kafkatopic.DefaultMessageMaxBytes)
	if limits, err := kafkatopic.ReadLimits(ctx, adm, cfg.Topics); err == nil {
		readBytes = kafkatopic.ConsumerReadBytes(limits.Largest())
	} else {
		log.Debug("cannot read the topics' record size limits; assuming Kafka's defaults", "err", err)
	}
	opts := append([]kgo.Opt{}, cfg.KafkaOpts...)
	opts = append(opts,
		kgo.BrokerMaxReadBytes(readBytes),
		kgo.ConsumePartitions(consume),
		// Only committed transactional records; their markers are kept
		// so the position moves past them and a one-shot run sees it
		// reached its snapshot end.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		// Never skip silently past records deleted under us.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
	)
	if src.cl, err = kgo.NewClient(opts...); err != nil {
		return nil, nil, fmt.Errorf("kafka %s: %w", cfg.KafkaName, err)
	}
	sink := &RedisSink{
		c:          rc,
		opt:        stepOptions{Name: cfg.Name, MaxLen: cfg.MaxLen, PreserveIDs: cfg.PreserveIDs},
		onError:    cfg.OnError,
		deadStream: cfg.DeadLetterStream,
		retryFor:   cfg.RetryFor,
		log:        log,
		redisName:  cfg.RedisName,
	}
	switch err := checkOrderAccess(ctx, rc, cfg.Name); {
	case err == nil:
		sink.ordered = true
	case mirror.IsRefusal(err):
		log.Warn("keeping one write in flight at a time, which is slower: the server refuses the commands that keep several in flight in order; grant BLPOP, LPUSH and PEXPIRE on keys xmirror:*", "err", err)
	default:
		src.Close()
		return nil, nil, mirror.ClassifyRedis(fmt.Errorf("redis %s: %w", cfg.RedisName, err))
	}
	return src, sink, nil
}

// partitionSetup takes partitions on: at start, and in follow mode the ones
// added to the topics during the run.
type partitionSetup struct {
	rc          rueidis.Client
	adm         *kadm.Client
	cfg         setupConfig
	log         *slog.Logger
	streamIndex map[string]int                         // stream -> index in the source's streams
	feeds       map[string][]checkpoint.TopicPartition // stream -> partitions feeding it
}

// checkStream refuses a destination key that exists and is not a stream.
func (k *partitionSetup) checkStream(ctx context.Context, s string) error {
	typ, err := k.rc.Do(ctx, k.rc.B().Type().Key(s).Build()).ToString()
	if err != nil {
		return mirror.Transient(fmt.Errorf("redis %s: type of %q: %w", k.cfg.RedisName, s, err))
	}
	if typ != "none" && typ != "stream" {
		return mirror.Errorf("redis %s: key %q holds a %s, not a stream; choose another {Stream} or delete it", k.cfg.RedisName, s, typ)
	}
	return nil
}

// add sets up partitions tps, new to src: their destination streams, where
// each starts (its checkpoint, else its last stable offset when latest,
// else its log start), with that start stored at once where no checkpoint
// held one. ids are the topics' current IDs ("" unknown): a checkpoint
// written for another ID is refused, or with --on-topic-recreated restart
// its positions of that topic start over from the log start; a checkpoint
// without one records it. It changes src only when it succeeds, and
// returns the offsets to consume from. Failures worth retrying (I/O) are
// marked Transient.
func (k *partitionSetup) add(ctx context.Context, src *KafkaSource, tps []checkpoint.TopicPartition, latest bool, ids map[string]string) (map[string]map[int32]kgo.Offset, error) {
	cfg := k.cfg
	streams := append([]string(nil), src.streams...)
	index := map[string]int{}
	feeds := map[string][]checkpoint.TopicPartition{}
	states := make([]*partState, 0, len(tps))
	var newStreams, touched []string
	var topics []string
	seenTopic := map[string]bool{}
	for _, tp := range tps {
		stream := cfg.Stream.Stream(tp.Topic, tp.Partition)
		i, ok := k.streamIndex[stream]
		if !ok {
			if i, ok = index[stream]; !ok {
				i = len(streams)
				streams = append(streams, stream)
				newStreams = append(newStreams, stream)
			}
		}
		if _, ok := index[stream]; !ok {
			index[stream] = i
			touched = append(touched, stream)
			feeds[stream] = append([]checkpoint.TopicPartition(nil), k.feeds[stream]...)
		}
		feeds[stream] = append(feeds[stream], tp)
		states = append(states, &partState{tp: tp, stream: i, stored: checkpoint.NoPosition})
		if !seenTopic[tp.Topic] {
			seenTopic[tp.Topic] = true
			topics = append(topics, tp.Topic)
		}
	}
	if cfg.PreserveIDs {
		for _, stream := range touched {
			if tps := feeds[stream]; len(tps) > 1 {
				return nil, mirror.Problemf("PreserveIDs", "{PreserveIDs} needs one partition per stream, but %d partitions (%s, %s, ...) feed stream %q, whose IDs would interleave out of order; use {Stream} '{topic}-{partition}'",
					len(tps), tps[0], tps[1], stream)
			}
		}
	}
	for _, s := range newStreams {
		if err := k.checkStream(ctx, s); err != nil {
			return nil, err
		}
		if err := checkStepAccess(ctx, k.rc, cfg.Name, s); err != nil {
			return nil, mirror.ClassifyRedis(fmt.Errorf("redis %s: %w", cfg.RedisName, err))
		}
	}
	stored := map[checkpoint.TopicPartition]int64{}
	recorded := map[string]map[string]string{} // stream -> topic -> ID
	for _, s := range touched {
		ck, found, err := checkpoint.LoadK2R(ctx, k.rc, cfg.Name, s)
		if err != nil {
			if !errors.Is(err, checkpoint.ErrCorrupt) {
				err = mirror.Transient(err)
			}
			return nil, err
		}
		if found {
			for tp, off := range ck.Partitions {
				stored[tp] = off
			}
			recorded[s] = ck.TopicIDs
		}
	}

	// A topic deleted and created again under its name starts its offsets
	// over: positions recorded for the old one say nothing about it.
	restart := map[string]map[string]string{} // stream -> topic -> ID recorded
	warned := map[string]bool{}
	for _, st := range states {
		s, t := streams[st.stream], st.tp.Topic
		old, id := recorded[s][t], ids[t]
		if old == "" || id == "" || old == id || restart[s][t] != "" {
			continue
		}
		key := checkpoint.K2RKey(cfg.Name, s)
		if cfg.OnTopicRecreated != OnTopicRecreatedRestart {
			return nil, topicRecreated(&checkpoint.TopicRecreatedError{Key: key, Topic: t, Recorded: old, Current: id})
		}
		if restart[s] == nil {
			restart[s] = map[string]string{}
		}
		restart[s][t] = old
		if !warned[t] {
			warned[t] = true
			k.log.Warn("topic was deleted and created again: mirroring the new topic from its start", "on_topic_recreated", OnTopicRecreatedRestart,
				"topic", t, "recorded_topic_id", old, "topic_id", id, "checkpoint", key)
		}
	}

	starts, err := k.adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("kafka %s: list start offsets: %w", cfg.KafkaName, err))
	}
	ends, err := k.adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("kafka %s: list end offsets: %w", cfg.KafkaName, err))
	}
	// The last stable offset: with transactions, records past it may
	// still be aborted, and read_committed consumption stops there.
	stable, err := k.adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = stable.Error()
	}
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("kafka %s: list stable offsets: %w", cfg.KafkaName, err))
	}

	// Every partition taken on, with where it stands: InitK2RPartitions
	// stores the starts of the fresh ones and lists them all.
	positions := map[string]map[checkpoint.TopicPartition]int64{}
	for _, st := range states {
		t, p := st.tp.Topic, st.tp.Partition
		logStart, _ := starts.Lookup(t, p)
		hwm, _ := ends.Lookup(t, p)
		lso, _ := stable.Lookup(t, p)
		restarted := restart[streams[st.stream]][t] != ""
		if pos, ok := stored[st.tp]; ok && !restarted {
			st.stored = pos
			st.next = pos
			switch {
			case pos < logStart.Offset && cfg.OnGap == mirror.OnGapSkip:
				k.log.Warn("checkpoint is below the log start: records were deleted before they were mirrored; skipping them", "on_gap", mirror.OnGapSkip,
					"topic", t, "partition", p, "checkpoint", pos, "log_start", logStart.Offset, "lost", logStart.Offset-pos)
				st.next = logStart.Offset
			case pos < logStart.Offset:
				return nil, mirror.Errorf("topic %q partition %d: the checkpoint is at offset %d but the log now starts at %d: %d records were deleted (retention) before they were mirrored; use {OnGap} skip to accept the loss and go on",
					t, p, pos, logStart.Offset, logStart.Offset-pos)
			case pos > hwm.Offset:
				return nil, mirror.Errorf("topic %q partition %d: the checkpoint is at offset %d but the partition ends at %d; was the topic deleted and recreated? delete the checkpoint %q or use another {Name}",
					t, p, pos, hwm.Offset, checkpoint.K2RKey(cfg.Name, streams[st.stream]))
			}
		} else {
			if latest && !restarted {
				st.next = lso.Offset
			} else {
				st.next = logStart.Offset
			}
			// Stored before anything is consumed: the first batch
			// compares against it, and a run that mirrors nothing still
			// leaves it, so the next run resumes there instead of
			// deciding afresh (--start latest would skip what came in
			// between; earliest would not see a moved log start as a gap).
			st.stored = st.next
		}
		s := streams[st.stream]
		if positions[s] == nil {
			positions[s] = map[checkpoint.TopicPartition]int64{}
		}
		positions[s][st.tp] = st.stored
		st.target = lso.Offset
	}
	inits := map[string]checkpoint.K2RInit{}
	for s, starts := range positions {
		in := checkpoint.K2RInit{Starts: starts, TopicIDs: map[string]string{}, Restart: restart[s]}
		for tp := range starts {
			if id := ids[tp.Topic]; id != "" {
				in.TopicIDs[tp.Topic] = id
			}
		}
		inits[s] = in
	}
	if err := checkpoint.InitK2RPartitions(ctx, k.rc, cfg.Name, inits); err != nil {
		var recreated *checkpoint.TopicRecreatedError
		if errors.As(err, &recreated) {
			return nil, topicRecreated(err)
		}
		if errors.Is(err, checkpoint.ErrCorrupt) {
			return nil, err
		}
		return nil, mirror.Transient(fmt.Errorf("redis %s: %w", cfg.RedisName, err))
	}

	// Only now does src learn of them.
	src.streams = streams
	for _, t := range topics {
		if id := ids[t]; id != "" {
			src.topicIDs[t] = id
		}
	}
	for s, i := range index {
		k.streamIndex[s] = i
		k.feeds[s] = feeds[s]
	}
	consume := map[string]map[int32]kgo.Offset{}
	for _, st := range states {
		t, p := st.tp.Topic, st.tp.Partition
		if src.parts[t] == nil {
			src.parts[t] = map[int32]*partState{}
		}
		src.parts[t][p] = st
		if !cfg.Follow && st.next >= st.target {
			st.done = true
			continue
		}
		src.remaining++
		if consume[t] == nil {
			consume[t] = map[int32]kgo.Offset{}
		}
		consume[t][p] = kgo.NewOffset().At(st.next)
		k.log.Debug("partition", "topic", t, "partition", p, "stream", streams[st.stream], "from", st.next, "snapshot_end", st.target)
	}
	return consume, nil
}

// formatTopicID writes a topic ID as Kafka's tools print it (URL-safe
// base64 without padding); "" for the zero ID of a broker without IDs.
func formatTopicID(id [16]byte) string {
	if id == ([16]byte{}) {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(id[:])
}

// session is a kafka-to-redis mirror's source and sink as setUp sets them up,
// set up again from the checkpoints when a run must start over — Redis lost
// writes (a *LostWritesError), or, with --on-topic-recreated
// restart, a topic was deleted and created again during the run.
type session struct {
	rc    rueidis.Client
	admin *kgo.Client
	cfg   setupConfig
	log   *slog.Logger
	src   *KafkaSource
	sink  *RedisSink
}

// openSession sets the mirror up (see setUp). The caller closes it with
// CloseSink and CloseSource; admin must outlive it.
func openSession(ctx context.Context, rc rueidis.Client, admin *kgo.Client, cfg setupConfig) (*session, error) {
	src, sink, err := setUp(ctx, rc, admin, cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &session{rc: rc, admin: admin, cfg: cfg, log: log, src: src, sink: sink}, nil
}

// Run mirrors as the engine's Run does, and when the run must start over,
// waits for its writes to end, sets the mirror up again from what the
// checkpoints hold (retrying a transient failure for opt.RetryFor, or for
// ever when zero) and goes on. The stats add up every run.
func (m *session) Run(ctx context.Context, opt mirror.Options) (mirror.Stats, error) {
	start := time.Now()
	var total mirror.Stats
	for {
		stats, err := mirror.Run(ctx, m.src, m.sink, opt)
		total.Add(stats)
		total.Elapsed = time.Since(start)
		if err == nil || ctx.Err() != nil || !m.startOver(err) {
			return total, err
		}
		// The writes of the run ended before anything is loaded: a
		// write still in flight could not move the positions after
		// they were read.
		m.sink.Close(ctx)
		m.src.Close()
		m.src, m.sink = nil, nil
		err = mirror.Retrier{For: opt.RetryFor, Logger: m.log, Observer: opt.Observer}.Do(ctx, "set up again", func() error {
			src, sink, err := setUp(ctx, m.rc, m.admin, m.cfg)
			if err == nil {
				m.src, m.sink = src, sink
			}
			return err
		})
		if err != nil {
			return total, err
		}
	}
}

// startOver tells whether err ends a run that must be set up again from
// the checkpoints, and says why.
func (m *session) startOver(err error) bool {
	var lost *LostWritesError
	var recreated *checkpoint.TopicRecreatedError
	switch {
	case errors.As(err, &lost) && lost.To == checkpoint.NoPosition && m.cfg.StartLatest:
		// Set up again, the partition would start at its end and skip
		// what Redis lost: stop, with the error saying where it was.
		return false
	case errors.As(err, &lost):
		m.log.Warn(lost.Error())
		return true
	case errors.As(err, &recreated) && m.cfg.OnTopicRecreated == OnTopicRecreatedRestart:
		m.log.Info("a topic was deleted and created again during the run; setting the mirror up again", "topic", recreated.Topic, "recorded_topic_id", recreated.Recorded, "topic_id", recreated.Current)
		return true
	}
	return false
}

// CloseSink waits for the writes still in flight, until ctx is done (see
// RedisSink.Close).
func (m *session) CloseSink(ctx context.Context) {
	if m.sink != nil {
		m.sink.Close(ctx)
	}
}

// CloseSource stops consuming.
func (m *session) CloseSource() {
	if m.src != nil {
		m.src.Close()
	}
}
