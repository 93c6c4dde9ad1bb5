package k2r

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// What kafka-to-redis does with a topic deleted and created again since its
// checkpoint was written (a topic ID other than the one recorded).
const (
	OnTopicRecreatedFail    = "fail"    // refuse, naming the topic and both IDs
	OnTopicRecreatedRestart = "restart" // mirror the new topic from its start
)

// setupConfig is what setUp needs: the mirror's Config, validated, with
// the stream template validation parsed and how long a one-shot run
// retries a transient failure (and may go without Kafka delivering
// anything to partitions short of their snapshot end).
type setupConfig struct {
	*Config
	tmpl     StreamTemplate
	retryFor time.Duration
	// matches are what the TopicRegexes matched in the Run so far.
	matches *topicMatches
}

func (c setupConfig) startLatest() bool { return c.Start == mapping.StartLatest }
func (c setupConfig) kafkaName() string { return c.Kafka.String() }
func (c setupConfig) redisName() string { return c.Redis.Addr() }

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
	// defaultMetadataMinAge is franz-go's MetadataMinAge default.
	defaultMetadataMinAge = 5 * time.Second
)

// setUp checks the topics, destination streams and checkpoints, decides
// where each partition starts, stores that position at once for every
// partition that had none, and returns the source and sink to pass to Run.
// The caller closes both; admin must outlive the source.
func setUp(ctx context.Context, rc rueidis.Client, admin *kgo.Client, cfg setupConfig) (*KafkaSource, *RedisSink, error) {
	log := cfg.Log()
	adm := kadm.NewClient(admin)
	listTopics := func(topics ...string) (kadm.TopicDetails, error) {
		var details kadm.TopicDetails
		var err error
		if len(topics) > 0 {
			details, err = adm.ListTopics(ctx, topics...)
		} else {
			details, err = allTopics(ctx, admin)
		}
		if err != nil && endpoint.IsDenied(err) {
			return nil, fmt.Errorf("kafka %s: list topics: %w", cfg.kafkaName(), err)
		}
		if err != nil {
			return nil, mirror.Transient(fmt.Errorf("kafka %s: list topics: %w", cfg.kafkaName(), err))
		}
		return details, nil
	}
	details := kadm.TopicDetails{}
	if len(cfg.Topics) > 0 {
		var err error
		if details, err = listTopics(cfg.Topics...); err != nil {
			return nil, nil, err
		}
	}
	// The topics the patterns match: every topic of the cluster this
	// user may describe is looked at.
	topics := slices.Clone(cfg.Topics)
	check := cfg.PartitionCheck
	if cfg.matches != nil && cfg.matches.patterns.any() {
		// New topics are looked for with the partitions added.
		check = min(check, cfg.Rescan)
		all, err := listTopics()
		if err != nil {
			return nil, nil, err
		}
		matched := cfg.matches.find(all, cfg.Follow, log)
		for _, t := range matched {
			details[t] = all[t]
		}
		topics = append(topics, matched...)
		cfg.matches.record(topics)
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
		kafkaName:      cfg.kafkaName(),
		retryFor:       cfg.retryFor,
		pollWait:       defaultPollWait,
		probeAfter:     defaultProbeAfter,
		probeWait:      defaultProbeWait,
		stallWarn:      followStallWarn,
		partitionCheck: check,
		topicIDs:       map[string]string{},
		setup: &partitionSetup{rc: rc, adm: adm, cfg: cfg, log: log,
			streamIndex: map[string]int{}, feeds: map[string][]checkpoint.TopicPartition{}},
	}
	// The IDs are asked for apart, not from the cache ListTopics reads: a
	// run set up again after its topic was recreated must see the new one.
	ids, err := topicIDs(ctx, admin, topics)
	if err != nil && endpoint.IsDenied(err) {
		return nil, nil, fmt.Errorf("kafka %s: topic IDs: %w", cfg.kafkaName(), err)
	}
	if err != nil {
		return nil, nil, mirror.Transient(fmt.Errorf("kafka %s: topic IDs: %w", cfg.kafkaName(), err))
	}
	var tps []checkpoint.TopicPartition
	matchedTPs := map[string][]checkpoint.TopicPartition{}
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil {
			why := "it does not exist"
			if ok && d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
				why = d.Err.Error()
			}
			return nil, nil, setting.Errorf("kafka %s: topic %q: %s; check {Topics} (xmirror never creates source topics)", cfg.kafkaName(), t, why)
		}
		src.parts[t] = map[int32]*partState{}
		for _, p := range d.Partitions.Numbers() {
			tp := checkpoint.TopicPartition{Topic: t, Partition: p}
			if cfg.Follow && !slices.Contains(cfg.Topics, t) {
				// Taken on apart: a topic someone created must not
				// stop the others (see addMatched).
				matchedTPs[t] = append(matchedTPs[t], tp)
			} else {
				tps = append(tps, tp)
			}
		}
	}
	if cfg.OnError == mirror.OnErrorDeadLetter {
		if err := src.setup.checkStream(ctx, cfg.DeadLetterStream); err != nil {
			return nil, nil, err
		}
	}
	latest := cfg.matches.startLatest(cfg)
	consume := map[string]map[int32]kgo.Offset{}
	if len(tps) > 0 {
		if consume, err = src.setup.add(ctx, src, tps, latest, ids); err != nil {
			return nil, nil, err
		}
	}
	if len(matchedTPs) > 0 {
		c, err := src.setup.addMatched(ctx, src, matchedTPs, latest, ids)
		if err != nil {
			return nil, nil, err
		}
		maps.Copy(consume, c)
	}
	for t := range matchedTPs {
		if src.parts[t] != nil && len(src.parts[t]) == 0 {
			delete(src.parts, t) // left out: looked at again later
		}
	}
	src.lastPartitionCheck = time.Now()

	// A broker sends a batch larger than the fetch's byte limits whole when
	// it is the first of the response, so records as large as the topics
	// allow are read; the response must fit what the client reads. Without
	// the right to read the configs, the default fits records up to about
	// 50 MiB.
	readBytes := kafkatopic.ConsumerReadBytes(kafkatopic.DefaultMessageMaxBytes)
	if len(topics) == 0 {
		// Nothing to read yet: a follow run whose patterns match no
		// topic so far.
	} else if limits, err := kafkatopic.ReadLimits(ctx, adm, topics); err == nil {
		readBytes = kafkatopic.ConsumerReadBytes(limits.Largest())
	} else {
		log.Debug("cannot read the topics' record size limits; assuming Kafka's defaults", "err", err)
	}
	src.readBytes = readBytes
	opts := append([]kgo.Opt{}, cfg.Kafka.ClientOpts()...)
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
	if check < defaultMetadataMinAge {
		// The partitions taken on during the run are fetched once the
		// consumer's metadata has them, which it refreshes at most
		// this often: a short check would otherwise wait for it.
		opts = append(opts, kgo.MetadataMinAge(check))
	}
	if src.cl, err = kgo.NewClient(opts...); err != nil {
		return nil, nil, fmt.Errorf("kafka %s: %w", cfg.kafkaName(), err)
	}
	sink := &RedisSink{
		c:          rc,
		opt:        stepOptions{Name: cfg.Name, MaxLen: cfg.MaxLen, PreserveIDs: cfg.PreserveIDs},
		onError:    cfg.OnError,
		deadStream: cfg.DeadLetterStream,
		retryFor:   cfg.retryFor,
		observer:   cfg.Observer,
		log:        log,
		redisName:  cfg.redisName(),
	}
	switch err := checkOrderAccess(ctx, rc, cfg.Name); {
	case err == nil:
		sink.ordered = true
	case mirror.IsRefusal(err):
		log.Warn("keeping one write in flight at a time, which is slower: the server refuses the commands that keep several in flight in order; grant BLPOP, LPUSH and PEXPIRE on keys xmirror:*", "err", err)
	default:
		src.Close()
		return nil, nil, mirror.ClassifyRedis(fmt.Errorf("redis %s: %w", cfg.redisName(), err))
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
		return mirror.Transient(fmt.Errorf("redis %s: type of %q: %w", k.cfg.redisName(), s, err))
	}
	if typ != "none" && typ != "stream" {
		return setting.Errorf("redis %s: key %q holds a %s, not a stream; choose another {Stream} or delete it", k.cfg.redisName(), s, typ)
	}
	return nil
}

// add sets up partitions tps, new to src: their destination streams, where
// each starts (its checkpoint, else its last stable offset when latest
// says so of its topic, else its log start), with that start stored at
// once where no checkpoint
// held one. ids are the topics' current IDs ("" unknown): a checkpoint
// written for another ID is refused, or with OnTopicRecreatedRestart
// its positions of that topic start over from the log start; a checkpoint
// without one records it. It changes src only when it succeeds, and
// returns the offsets to consume from. Failures worth retrying (I/O) are
// marked Transient.
func (k *partitionSetup) add(ctx context.Context, src *KafkaSource, tps []checkpoint.TopicPartition, latest func(topic string) bool, ids map[string]string) (map[string]map[int32]kgo.Offset, error) {
	cfg := k.cfg
	as := k.assign(src.streams, tps)
	if cfg.PreserveIDs {
		if err := as.checkOnePartitionPerStream(); err != nil {
			return nil, err
		}
	}
	for _, s := range as.newStreams {
		if err := k.checkStream(ctx, s); err != nil {
			return nil, err
		}
		if err := checkStepAccess(ctx, k.rc, cfg.Name, s); err != nil {
			return nil, mirror.ClassifyRedis(fmt.Errorf("redis %s: %w", cfg.redisName(), err))
		}
	}
	stored, recorded, err := k.loadPositions(ctx, as.touched)
	if err != nil {
		return nil, err
	}
	restart, err := k.recreatedTopics(as, recorded, ids)
	if err != nil {
		return nil, err
	}
	logs, err := k.logOffsets(ctx, as.topics)
	if err != nil {
		return nil, err
	}

	// Every partition taken on, with where it stands: InitK2RPartitions
	// stores the starts of the fresh ones and lists them all.
	positions := map[string]map[checkpoint.TopicPartition]int64{}
	for _, st := range as.states {
		s := as.streams[st.stream]
		restarted := restart[s][st.tp.Topic] != ""
		pos, ok := stored[st.tp]
		start, err := startAt(st.tp, checkpoint.K2RKey(cfg.Name, s), pos, ok && !restarted, logs[st.tp], latest(st.tp.Topic) && !restarted, cfg.OnGap)
		if err != nil {
			return nil, err
		}
		if start.lost > 0 {
			k.log.Warn("checkpoint is below the log start: records were deleted before they were mirrored; skipping them", "on_gap", mirror.OnGapSkip,
				"topic", st.tp.Topic, "partition", st.tp.Partition, "checkpoint", pos, "log_start", logs[st.tp].start, "lost", start.lost)
		}
		st.next, st.stored, st.target = start.next, start.stored, logs[st.tp].stable
		if positions[s] == nil {
			positions[s] = map[checkpoint.TopicPartition]int64{}
		}
		positions[s][st.tp] = st.stored
	}
	if err := k.storeStarts(ctx, positions, restart, ids); err != nil {
		return nil, err
	}

	// Only now does src learn of them.
	src.streams = as.streams
	for _, t := range as.topics {
		if id := ids[t]; id != "" {
			src.topicIDs[t] = id
		}
	}
	for s, i := range as.index {
		k.streamIndex[s] = i
		k.feeds[s] = as.feeds[s]
	}
	consume := map[string]map[int32]kgo.Offset{}
	for _, st := range as.states {
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
		k.log.Debug("partition", "topic", t, "partition", p, "stream", as.streams[st.stream], "from", st.next, "snapshot_end", st.target)
	}
	return consume, nil
}

// assignment is where the partitions taken on go: the destination
// streams (those known before first, then new ones), and per stream the
// partitions that feed it.
type assignment struct {
	streams []string
	// index is the place in streams of each stream touched; feeds are
	// the partitions of each, those taken on before included.
	index  map[string]int
	feeds  map[string][]checkpoint.TopicPartition
	states []*partState
	// newStreams are the streams no partition fed before; touched all
	// those the partitions taken on feed; topics theirs, each once.
	newStreams, touched, topics []string
}

// assign places tps in their destination streams, after known.
func (k *partitionSetup) assign(known []string, tps []checkpoint.TopicPartition) *assignment {
	as := &assignment{
		streams: append([]string(nil), known...),
		index:   map[string]int{},
		feeds:   map[string][]checkpoint.TopicPartition{},
		states:  make([]*partState, 0, len(tps)),
	}
	seenTopic := map[string]bool{}
	for _, tp := range tps {
		stream := k.cfg.tmpl.Stream(tp.Topic, tp.Partition)
		i, ok := k.streamIndex[stream]
		if !ok {
			if i, ok = as.index[stream]; !ok {
				i = len(as.streams)
				as.streams = append(as.streams, stream)
				as.newStreams = append(as.newStreams, stream)
			}
		}
		if _, ok := as.index[stream]; !ok {
			as.index[stream] = i
			as.touched = append(as.touched, stream)
			as.feeds[stream] = append([]checkpoint.TopicPartition(nil), k.feeds[stream]...)
		}
		as.feeds[stream] = append(as.feeds[stream], tp)
		as.states = append(as.states, &partState{tp: tp, stream: i, stored: checkpoint.NoPosition})
		if !seenTopic[tp.Topic] {
			seenTopic[tp.Topic] = true
			as.topics = append(as.topics, tp.Topic)
		}
	}
	return as
}

// checkOnePartitionPerStream refuses, for PreserveIDs, a stream that
// several partitions feed: their entry IDs would interleave out of order.
func (as *assignment) checkOnePartitionPerStream() error {
	for _, stream := range as.touched {
		if tps := as.feeds[stream]; len(tps) > 1 {
			return setting.Problemf("PreserveIDs", "{PreserveIDs} needs one partition per stream, but %d partitions (%s, %s, ...) feed stream %q, whose IDs would interleave out of order; use {Stream} '{topic}-{partition}'",
				len(tps), tps[0], tps[1], stream)
		}
	}
	return nil
}

// loadPositions loads the checkpoints of streams: the stored position of
// each partition, and per stream the topic IDs recorded.
func (k *partitionSetup) loadPositions(ctx context.Context, streams []string) (stored map[checkpoint.TopicPartition]int64, recorded map[string]map[string]string, err error) {
	stored = map[checkpoint.TopicPartition]int64{}
	recorded = map[string]map[string]string{} // stream -> topic -> ID
	for _, s := range streams {
		ck, found, err := checkpoint.LoadK2R(ctx, k.rc, k.cfg.Name, s)
		if err != nil {
			if !errors.Is(err, checkpoint.ErrCorrupt) {
				err = mirror.Transient(err)
			}
			return nil, nil, err
		}
		if found {
			for tp, off := range ck.Partitions {
				stored[tp] = off
			}
			recorded[s] = ck.TopicIDs
		}
	}
	return stored, recorded, nil
}

// recreatedTopics finds, per stream, the topics deleted and created again
// under their name since the checkpoint recorded their ID (ids are their
// IDs now): their offsets started over, so positions recorded for the old
// topic say nothing about it. They are refused, or with
// OnTopicRecreatedRestart returned (stream -> topic -> ID recorded) to
// start from the new topic's beginning.
func (k *partitionSetup) recreatedTopics(as *assignment, recorded map[string]map[string]string, ids map[string]string) (map[string]map[string]string, error) {
	restart := map[string]map[string]string{}
	warned := map[string]bool{}
	for _, st := range as.states {
		s, t := as.streams[st.stream], st.tp.Topic
		old, id := recorded[s][t], ids[t]
		if old == "" || id == "" || old == id || restart[s][t] != "" {
			continue
		}
		key := checkpoint.K2RKey(k.cfg.Name, s)
		if k.cfg.OnTopicRecreated != OnTopicRecreatedRestart {
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
	return restart, nil
}

// partitionLog is what the log of a partition holds now: its start, its
// end (high watermark) and its last stable offset (with transactions,
// records past it may still be aborted, and read_committed consumption
// stops there).
type partitionLog struct{ start, end, stable int64 }

// logOffsets lists where the partitions of topics stand.
func (k *partitionSetup) logOffsets(ctx context.Context, topics []string) (map[checkpoint.TopicPartition]partitionLog, error) {
	list := func(what string, fn func(context.Context, ...string) (kadm.ListedOffsets, error)) (kadm.ListedOffsets, error) {
		offsets, err := fn(ctx, topics...)
		if err == nil {
			err = offsets.Error()
		}
		if err != nil {
			return nil, mirror.Transient(fmt.Errorf("kafka %s: list %s offsets: %w", k.cfg.kafkaName(), what, err))
		}
		return offsets, nil
	}
	starts, err := list("start", k.adm.ListStartOffsets)
	if err != nil {
		return nil, err
	}
	ends, err := list("end", k.adm.ListEndOffsets)
	if err != nil {
		return nil, err
	}
	stable, err := list("stable", k.adm.ListCommittedOffsets)
	if err != nil {
		return nil, err
	}
	logs := map[checkpoint.TopicPartition]partitionLog{}
	starts.Each(func(o kadm.ListedOffset) {
		tp := checkpoint.TopicPartition{Topic: o.Topic, Partition: o.Partition}
		l := logs[tp]
		l.start = o.Offset
		logs[tp] = l
	})
	ends.Each(func(o kadm.ListedOffset) {
		tp := checkpoint.TopicPartition{Topic: o.Topic, Partition: o.Partition}
		l := logs[tp]
		l.end = o.Offset
		logs[tp] = l
	})
	stable.Each(func(o kadm.ListedOffset) {
		tp := checkpoint.TopicPartition{Topic: o.Topic, Partition: o.Partition}
		l := logs[tp]
		l.stable = o.Offset
		logs[tp] = l
	})
	return logs, nil
}

// partitionStart is where a partition taken on starts: the next offset to
// read, the position its checkpoint holds (or is to hold) before the first
// batch, and how many records the checkpoint lost to the log start and
// the run goes past (OnGapSkip).
type partitionStart struct{ next, stored, lost int64 }

// startAt decides where partition tp, whose checkpoint is key, starts. A
// position the checkpoint holds (hasStored; not for a topic created again)
// is resumed, unless it is below the log start (records deleted by
// retention: a gap, refused or, with onGap skip, gone past) or above the
// log's end (the topic was recreated without a new ID known). A partition
// without one starts at its log start, or with latest at its last stable
// offset, and that position is stored before anything is consumed: the
// first batch compares against it, and a run that mirrors nothing still
// leaves it, so the next run resumes there instead of deciding afresh
// (latest would skip what came in between; earliest would not see a moved
// log start as a gap).
func startAt(tp checkpoint.TopicPartition, key string, stored int64, hasStored bool, log partitionLog, latest bool, onGap string) (partitionStart, error) {
	if !hasStored {
		next := log.start
		if latest {
			next = log.stable
		}
		return partitionStart{next: next, stored: next}, nil
	}
	switch {
	case stored < log.start && onGap == mirror.OnGapSkip:
		return partitionStart{next: log.start, stored: stored, lost: log.start - stored}, nil
	case stored < log.start:
		return partitionStart{}, setting.Errorf("topic %q partition %d: the checkpoint is at offset %d but the log now starts at %d: %d records were deleted (retention) before they were mirrored; use {OnGap} skip to accept the loss and go on",
			tp.Topic, tp.Partition, stored, log.start, log.start-stored)
	case stored > log.end:
		return partitionStart{}, setting.Errorf("topic %q partition %d: the checkpoint is at offset %d but the partition ends at %d; was the topic deleted and recreated? delete the checkpoint %q or use another {Name}",
			tp.Topic, tp.Partition, stored, log.end, key)
	}
	return partitionStart{next: stored, stored: stored}, nil
}

// storeStarts records, per stream, the starts of the partitions that had
// no position, the topics' IDs, and the topics started over.
func (k *partitionSetup) storeStarts(ctx context.Context, positions map[string]map[checkpoint.TopicPartition]int64, restart map[string]map[string]string, ids map[string]string) error {
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
	err := checkpoint.InitK2RPartitions(ctx, k.rc, k.cfg.Name, inits)
	var recreated *checkpoint.TopicRecreatedError
	switch {
	case err == nil:
		k.recordDescriptor(ctx, positions)
		return nil
	case errors.As(err, &recreated):
		return topicRecreated(err)
	case errors.Is(err, checkpoint.ErrCorrupt):
		return err
	}
	return mirror.Transient(fmt.Errorf("redis %s: %w", k.cfg.redisName(), err))
}

// recordDescriptor records what the mirror is, for status and the
// checkpoint commands: above all the streams it writes to, whose
// checkpoint keys hold only their hash tags. It is a description, not a
// position: a Redis user not allowed to write it gets a warning, and the
// mirror runs on.
func (k *partitionSetup) recordDescriptor(ctx context.Context, positions map[string]map[checkpoint.TopicPartition]int64) {
	cfg := k.cfg
	host, _ := os.Hostname()
	d := checkpoint.Descriptor{Kind: checkpoint.KindKafkaToRedis, Name: cfg.Name,
		Source: mapping.SourceText(cfg.Topics, cfg.TopicRegexes, false), Destination: cfg.Stream, Format: string(cfg.Format),
		Redis: cfg.Redis.Redacted(), Brokers: cfg.Kafka.String(), Host: host, Recorded: time.Now()}
	topics := map[string]bool{}
	for s, starts := range positions {
		d.Streams = append(d.Streams, s)
		for tp := range starts {
			topics[tp.Topic] = true
		}
	}
	d.Topics = slices.Sorted(maps.Keys(topics))
	if err := checkpoint.RecordDescriptor(ctx, k.rc, d); err != nil {
		k.log.Warn("cannot record what the mirror is for xmirror status; mirroring goes on", "key", checkpoint.DescriptorKey(d.Kind, d.Name), "err", err)
	}
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
// writes (a *LostWritesError), with OnTopicRecreated restart a topic was
// deleted and created again during the run, or a new topic matching the
// TopicRegexes needs a consumer that reads larger responses.
type session struct {
	rc    rueidis.Client
	admin *kgo.Client
	cfg   setupConfig
	log   *slog.Logger
	src   *KafkaSource
	sink  *RedisSink
}

// deniedDescribe names the topic a refusal met while setting up is about
// (every request of the set-up needs DESCRIBE on the topics): Kafka
// refuses a request over several topics as a whole, so each is asked
// about alone. Any other error is returned as it is.
func deniedDescribe(ctx context.Context, admin *kgo.Client, cfg setupConfig, err error) error {
	if !endpoint.IsDenied(err) || errors.As(err, new(*endpoint.DeniedError)) {
		return err
	}
	adm := kadm.NewClient(admin)
	for _, t := range cfg.Topics {
		if _, terr := adm.ListTopics(ctx, t); endpoint.IsDenied(terr) {
			return cfg.Kafka.Denied(err, "Describe", endpoint.KafkaTopic, t)
		}
	}
	return err
}

// openSession sets the mirror up (see setUp). The caller closes it with
// CloseSink and CloseSource; admin must outlive it.
func openSession(ctx context.Context, rc rueidis.Client, admin *kgo.Client, cfg setupConfig) (*session, error) {
	src, sink, err := setUp(ctx, rc, admin, cfg)
	if err != nil {
		return nil, deniedDescribe(ctx, admin, cfg, err)
	}
	return &session{rc: rc, admin: admin, cfg: cfg, log: cfg.Log(), src: src, sink: sink}, nil
}

// Run mirrors as the engine's Run does, and when the run must start over,
// waits for its writes to end, sets the mirror up again from what the
// checkpoints hold (retrying a transient failure for opt.RetryFor, or for
// ever when zero) and goes on. The stats add up every run.
func (m *session) Run(ctx context.Context, opt mirror.Options) (mirror.Stats, error) {
	start, before := time.Now(), opt.Before
	var total mirror.Stats
	for {
		if obs := opt.Observer; obs != nil && obs.Started != nil {
			obs.Started(m.started())
		}
		stats, err := mirror.Run(ctx, m.src, m.sink, opt)
		total.Add(stats)
		total.Elapsed = time.Since(start)
		opt.Before = before
		opt.Before.Add(total)
		opt.Before.Elapsed = before.Elapsed + total.Elapsed
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
			return deniedDescribe(ctx, m.admin, m.cfg, err)
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
	var larger *largerRecordsError
	switch {
	case errors.As(err, &larger):
		m.log.Info("a new topic matching the regexes accepts larger records than the consumer reads; setting the mirror up again", "topic", larger.topic, "max_message_bytes", larger.limit)
		return true
	case errors.As(err, &lost) && lost.To == checkpoint.NoPosition && m.cfg.startLatest():
		// Set up again, the partition would start at its end and skip
		// what Redis lost: stop, with the error saying where it was.
		return false
	case errors.As(err, &lost):
		m.log.Warn("Redis lost writes: setting the mirror up again from the positions it kept", "err", lost)
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
