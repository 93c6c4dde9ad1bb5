package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
)

// What kafka-to-redis does with a record its format cannot decode.
const (
	OnErrorFail       = "fail"        // stop; nothing from that record on is checkpointed
	OnErrorSkip       = "skip"        // log it, count it, go on
	OnErrorDeadLetter = "dead-letter" // copy it into the dead-letter stream, go on
)

// What kafka-to-redis does when its checkpoint points below the log start.
const (
	OnGapFail = "fail" // refuse to start
	OnGapSkip = "skip" // warn and continue from the log start
)

// ErrConfig marks a kafka-to-redis request that is impossible for the
// topics as they are (a usage error, found only once Kafka answered).
var ErrConfig = errors.New("invalid request")

// K2RConfig is a kafka-to-redis mirror, as validated by the command.
type K2RConfig struct {
	Name   string
	Topics []string
	Stream StreamTemplate
	// Format is FormatJSON or FormatRaw; Headers (json) copies headers as
	// fields; ValueField and KeyField (raw) name the fields of the value
	// and key.
	Format               Format
	Headers              bool
	ValueField, KeyField string
	PreserveIDs          bool
	MaxLen               int64
	StartLatest          bool
	OnError, OnGap       string
	DeadLetterStream     string
	BatchSize            int
	Follow               bool
	RetryFor             time.Duration
	Logger               *slog.Logger
	KafkaOpts            []kgo.Opt // connection options; the consumer's are added
	KafkaName, RedisName string    // endpoints, for messages
}

// NewK2R checks the topics, destination streams and checkpoints, decides
// where each partition starts, and returns the source and sink to pass to
// Run. The caller closes both.
func NewK2R(ctx context.Context, rc rueidis.Client, admin *kgo.Client, cfg K2RConfig) (*KafkaSource, *RedisSink, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	adm := kadm.NewClient(admin)
	details, err := adm.ListTopics(ctx, cfg.Topics...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka %s: list topics: %w", cfg.KafkaName, err)
	}
	src := &KafkaSource{
		mapping: recordMapping{format: cfg.Format, headers: cfg.Headers, valueField: cfg.ValueField,
			keyField: cfg.KeyField, preserveIDs: cfg.PreserveIDs},
		onError:   cfg.OnError,
		follow:    cfg.Follow,
		batchSize: cfg.BatchSize,
		log:       log,
		parts:     map[string]map[int32]*partState{},
	}
	streamIndex := map[string]int{}
	feeds := map[string][]checkpoint.TopicPartition{} // stream -> partitions
	var all []*partState
	for _, t := range cfg.Topics {
		d, ok := details[t]
		if !ok || d.Err != nil {
			why := "it does not exist"
			if ok && d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
				why = d.Err.Error()
			}
			return nil, nil, fmt.Errorf("kafka %s: topic %q: %s; check --topic (xmirror never creates source topics)", cfg.KafkaName, t, why)
		}
		src.parts[t] = map[int32]*partState{}
		for _, p := range d.Partitions.Numbers() {
			stream := cfg.Stream.Stream(t, p)
			i, ok := streamIndex[stream]
			if !ok {
				i = len(src.streams)
				streamIndex[stream] = i
				src.streams = append(src.streams, stream)
			}
			tp := checkpoint.TopicPartition{Topic: t, Partition: p}
			feeds[stream] = append(feeds[stream], tp)
			st := &partState{tp: tp, stream: i, stored: checkpoint.NoPosition}
			src.parts[t][p] = st
			all = append(all, st)
		}
	}
	if cfg.PreserveIDs {
		for stream, tps := range feeds {
			if len(tps) > 1 {
				return nil, nil, fmt.Errorf("--preserve-ids needs one partition per stream, but %d partitions (%s, %s, ...) feed stream %q, whose IDs would interleave out of order; use --stream '{topic}-{partition}': %w",
					len(tps), tps[0], tps[1], stream, ErrConfig)
			}
		}
	}
	check := append([]string(nil), src.streams...)
	if cfg.OnError == OnErrorDeadLetter {
		check = append(check, cfg.DeadLetterStream)
	}
	for _, s := range check {
		typ, err := rc.Do(ctx, rc.B().Type().Key(s).Build()).ToString()
		if err != nil {
			return nil, nil, fmt.Errorf("redis %s: type of %q: %w", cfg.RedisName, s, err)
		}
		if typ != "none" && typ != "stream" {
			return nil, nil, fmt.Errorf("redis %s: key %q holds a %s, not a stream; choose another --stream or delete it", cfg.RedisName, s, typ)
		}
	}
	stored := map[checkpoint.TopicPartition]int64{}
	for _, s := range src.streams {
		ck, found, err := checkpoint.LoadK2R(ctx, rc, cfg.Name, s)
		if err != nil {
			return nil, nil, err
		}
		if found {
			for tp, off := range ck.Partitions {
				stored[tp] = off
			}
		}
	}

	starts, err := adm.ListStartOffsets(ctx, cfg.Topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kafka %s: list start offsets: %w", cfg.KafkaName, err)
	}
	ends, err := adm.ListEndOffsets(ctx, cfg.Topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kafka %s: list end offsets: %w", cfg.KafkaName, err)
	}
	// The last stable offset: with transactions, records past it may
	// still be aborted, and read_committed consumption stops there.
	stable, err := adm.ListCommittedOffsets(ctx, cfg.Topics...)
	if err == nil {
		err = stable.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kafka %s: list stable offsets: %w", cfg.KafkaName, err)
	}

	consume := map[string]map[int32]kgo.Offset{}
	for _, st := range all {
		t, p := st.tp.Topic, st.tp.Partition
		logStart, _ := starts.Lookup(t, p)
		hwm, _ := ends.Lookup(t, p)
		lso, _ := stable.Lookup(t, p)
		if pos, ok := stored[st.tp]; ok {
			st.stored = pos
			st.next = pos
			switch {
			case pos < logStart.Offset && cfg.OnGap == OnGapSkip:
				log.Warn("checkpoint is below the log start: records were deleted before they were mirrored; skipping them (--on-gap skip)",
					"topic", t, "partition", p, "checkpoint", pos, "log_start", logStart.Offset, "lost", logStart.Offset-pos)
				st.next = logStart.Offset
			case pos < logStart.Offset:
				return nil, nil, fmt.Errorf("topic %q partition %d: the checkpoint is at offset %d but the log now starts at %d: %d records were deleted (retention) before they were mirrored; use --on-gap skip to accept the loss and go on",
					t, p, pos, logStart.Offset, logStart.Offset-pos)
			case pos > hwm.Offset:
				return nil, nil, fmt.Errorf("topic %q partition %d: the checkpoint is at offset %d but the partition ends at %d; was the topic deleted and recreated? delete the checkpoint %q or use another --name",
					t, p, pos, hwm.Offset, checkpoint.K2RKey(cfg.Name, src.streams[st.stream]))
			}
		} else if cfg.StartLatest {
			st.next = lso.Offset
		} else {
			st.next = logStart.Offset
		}
		st.target = lso.Offset
		if !cfg.Follow && st.next >= st.target {
			st.done = true
			continue
		}
		src.remaining++
		if consume[t] == nil {
			consume[t] = map[int32]kgo.Offset{}
		}
		consume[t][p] = kgo.NewOffset().At(st.next)
		log.Debug("partition", "topic", t, "partition", p, "stream", src.streams[st.stream], "from", st.next, "snapshot_end", st.target)
	}

	opts := append([]kgo.Opt{}, cfg.KafkaOpts...)
	opts = append(opts,
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
		opt:        checkpoint.K2ROptions{Name: cfg.Name, MaxLen: cfg.MaxLen, PreserveIDs: cfg.PreserveIDs},
		deadStream: cfg.DeadLetterStream,
		retryFor:   cfg.RetryFor,
		log:        log,
		redisName:  cfg.RedisName,
	}
	return src, sink, nil
}
