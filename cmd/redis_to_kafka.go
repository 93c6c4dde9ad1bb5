package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// Defaults of redis-to-kafka.
const (
	// defaultGroupPrefix makes the default consumer group of a mirror its
	// own, xmirror:<name>: mirrors that shared a group would split a
	// stream between them. (Mirrors whose checkpoint predates it keep the
	// group they read through, checkpoint.LegacyGroup.)
	defaultGroupPrefix = "xmirror:"
	defaultTopic       = "{stream}"
	defaultValueField  = "value"
	defaultConnectTime = 10 * time.Second
	// defaultLinger sends a partition's batch as soon as the producer can:
	// under load batches still fill while earlier requests are in flight,
	// and in follow mode no entry waits for company (latency).
	defaultLinger = 0
	// defaultBatchBytes keeps a batch of large entries about as large as
	// Kafka's own default fetch of a partition (max.partition.fetch.bytes):
	// batches of 2000 entries of 1 KiB made the collector run without
	// pause in the 48 MiB the mirror aims at.
	defaultBatchBytes = 1 << 20
	// visibleWait bounds how long a one-shot run waits, before it exits,
	// for its last transaction's markers: a few milliseconds normally.
	visibleWait = 2 * time.Second
)

type redisToKafkaOptions struct {
	conn connFlags
	run  runFlags

	streams      []string
	topic        string
	group        string
	groupSet     bool // --group was given
	start        string
	format       string
	valueField   string
	keyField     string
	createTopic  bool
	partitions   int32
	replication  int16
	allowMissing bool
	linger       time.Duration
	compression  string
	claimIdle    time.Duration
	batchBytes   int
	onError      string
	deadLetter   string
	timestamp    string
	maxFields    int
	onGap        string
}

func newRedisToKafkaCmd(a *app) *cobra.Command {
	var o redisToKafkaOptions
	c := &cobra.Command{
		Use:     "redis-to-kafka --stream S [--stream S2 ...] [--topic T]",
		Aliases: []string{"r2k"},
		Short:   "Mirror Redis streams into Kafka topics",
		Long: `Reads entries from Redis streams through a consumer group and produces them
to Kafka with a transactional producer (acks=all; transactional ID
xmirror-r2k:<name>). An entry is acknowledged (XACK) and checkpointed only
after the Kafka transaction holding it committed; a new run fences every
earlier run of the mirror. Read the topics read_committed.

One-shot (default): mirrors everything up to each stream's last entry as of
the start, prints a summary and exits; run again, it mirrors only what was
added since. --follow keeps mirroring until SIGINT/SIGTERM.

Mapping:
  --format json   value = JSON object of the entry's fields, in entry order
  --format raw    value = the bytes of --value-field; other fields = headers,
                  a name starting with xmirror. (reserved) prefixed with one
                  more xmirror. (xmirror.id -> xmirror.xmirror.id)
  key             the value of --key-field, else none
  timestamp       --timestamp id: the millisecond part of the entry ID (at
                  most 9223372036854, in 2262); now: the time it is produced
  partition       a hash of the key (murmur2), else of the stream's name,
                  over the partition count the topic had when this mirror
                  first wrote to it (partitions added later stay unused)
  headers         xmirror.stream and xmirror.id (lineage), always

--topic is a template: {stream} is replaced by the stream's name.

An entry Kafka refuses, or would refuse (larger than the topic's
max.message.bytes, a timestamp outside its message.timestamp.after.max.ms or
before.max.ms, checked a minute early for clock differences), is handled by
--on-error: fail (stop; the entries before it are mirrored), skip (log and
count it) or dead-letter (XADD it to --dead-letter-stream in the source Redis,
at least once, then acknowledge it).

Entries trimmed from a stream (XADD MAXLEN/MINID, XTRIM) before the mirror
read them are a gap, found at start and before each read: --on-gap fail
(default) stops naming the stream, the group's last delivered ID, the
stream's first entry and how many were lost; skip logs them, counts them as
lost in the summary and goes on. Pending entries of an interrupted run whose
bodies were trimmed are handled the same way.`,
		Example: `  # copy the stream "orders" into the topic "orders", once
  xmirror redis-to-kafka --stream orders --create-topic

  # several streams into one topic per stream, keyed by customer, continuously
  xmirror r2k --stream eu.orders --stream us.orders --topic 'mirror.{stream}' \
      --key-field customer --follow`,
		RunE: func(c *cobra.Command, _ []string) error { return o.execute(a, c) },
	}
	o.conn.bind(c, true, true)
	o.run.bind(c)
	fs := c.Flags()
	fs.StringArrayVarP(&o.streams, "stream", "s", nil, "stream to mirror (repeat for several); required")
	fs.StringVarP(&o.topic, "topic", "t", defaultTopic, "destination topic; {stream} is replaced by the stream's name")
	fs.StringVarP(&o.group, "group", "g", "", "consumer group that tracks what was read (default xmirror:<mirror name>); a mirror keeps the group its checkpoint records")
	fs.StringVar(&o.start, "start", "earliest", "where a new consumer group starts: earliest (whole history), latest (only new entries) or an entry ID")
	fs.StringVar(&o.format, "format", string(mirror.FormatJSON), "record value format: json or raw")
	fs.StringVar(&o.valueField, "value-field", defaultValueField, "raw format: the field whose bytes become the record value")
	fs.StringVar(&o.keyField, "key-field", "", "field whose value becomes the record key (so one key always lands in one partition)")
	fs.BoolVar(&o.createTopic, "create-topic", false, "create missing topics (otherwise a missing topic is an error)")
	fs.Int32Var(&o.partitions, "partitions", -1, "with --create-topic: partitions of a new topic (-1: the broker's default)")
	fs.Int16Var(&o.replication, "replication-factor", -1, "with --create-topic: replication factor of a new topic (-1: the broker's default)")
	fs.BoolVar(&o.allowMissing, "allow-missing", false, "one-shot: skip streams that do not exist instead of failing (follow always waits for them)")
	fs.DurationVar(&o.linger, "linger", defaultLinger, "how long the producer lets a batch fill before sending it")
	fs.StringVar(&o.compression, "compression", "none", "record batch compression: none, gzip, snappy, lz4 or zstd")
	fs.DurationVar(&o.claimIdle, "claim-idle", 0, "take over entries other consumers of the group left pending this long (XAUTOCLAIM); 0 never")
	fs.IntVar(&o.maxFields, "max-fields", mirror.DefaultMaxFields, "warn (once per stream) when an entry has more fields than this, which kafka-to-redis with the same --max-fields refuses; the entry is written all the same")
	fs.IntVar(&o.batchBytes, "batch-bytes", defaultBatchBytes, "about the most entry data (field names and values, in bytes) one read takes from a stream; --batch-size still bounds the entries; 0 no bound")
	fs.StringVar(&o.onError, "on-error", mirror.OnErrorFail, "an entry Kafka refuses (too large, timestamp out of range): fail, skip or dead-letter")
	fs.StringVar(&o.deadLetter, "dead-letter-stream", "", "with --on-error dead-letter: the stream (in the source Redis) receiving refused entries")
	fs.StringVar(&o.timestamp, "timestamp", string(mirror.TimestampID), "record timestamp: id (the entry ID's milliseconds) or now (the time it is produced)")
	fs.StringVar(&o.onGap, "on-gap", mirror.OnGapFail, "entries trimmed from a stream before they were mirrored: fail (needs XGROUP SETID on the streams, checked at start), or skip to count them as lost and go on")
	return c
}

// startID turns --start into the ID XGROUP CREATE takes.
func startID(s string) (string, error) {
	switch s {
	case "earliest":
		return "0", nil
	case "latest":
		return "$", nil
	}
	if ms, seq, ok := strings.Cut(s, "-"); ok && mapping.IsDigits(ms) && mapping.IsDigits(seq) {
		return s, nil
	}
	if mapping.IsDigits(s) {
		return s, nil
	}
	return "", fmt.Errorf("--start must be earliest, latest or an entry ID such as 1700000000000-0, got %q", s)
}

// validate checks every flag and returns the parsed pieces; it reports all
// problems at once.
func (o *redisToKafkaOptions) validate() (mapping.Template, map[string]string, mirror.Format, string, error) {
	problems := o.run.validate()
	if len(o.streams) == 0 {
		problems = append(problems, "--stream is required (repeat it for several streams)")
	}
	seen := map[string]bool{}
	for _, s := range o.streams {
		if s == "" {
			problems = append(problems, "--stream must not be empty")
		}
		if seen[s] {
			problems = append(problems, fmt.Sprintf("stream %q is given twice", s))
		}
		seen[s] = true
	}
	tmpl, err := mapping.ParseTemplate(o.topic, "stream")
	if err != nil {
		problems = append(problems, "--topic: "+err.Error())
	}
	topics := map[string]string{}
	if err == nil {
		for _, s := range o.streams {
			t := tmpl.Expand(map[string]string{"stream": s})
			if terr := mapping.ValidTopicName(t); terr != nil {
				problems = append(problems, fmt.Sprintf("stream %q maps to an invalid topic: %v; choose one with --topic", s, terr))
			}
			topics[s] = t
		}
	}
	format, err := mirror.ParseFormat(o.format)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if format == mirror.FormatRaw && o.valueField == "" {
		problems = append(problems, "--value-field must not be empty with --format raw")
	}
	start, err := startID(o.start)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if o.groupSet && o.group == "" {
		problems = append(problems, "--group must not be empty")
	}
	if o.partitions == 0 || o.partitions < -1 {
		problems = append(problems, fmt.Sprintf("--partitions must be positive or -1, got %d", o.partitions))
	}
	if o.replication == 0 || o.replication < -1 {
		problems = append(problems, fmt.Sprintf("--replication-factor must be positive or -1, got %d", o.replication))
	}
	if o.claimIdle < 0 {
		problems = append(problems, "--claim-idle must not be negative")
	}
	if o.linger < 0 {
		problems = append(problems, "--linger must not be negative")
	}
	if o.maxFields < 1 {
		problems = append(problems, fmt.Sprintf("--max-fields must be at least 1, got %d", o.maxFields))
	}
	if o.batchBytes < 0 {
		problems = append(problems, fmt.Sprintf("--batch-bytes must not be negative, got %d (0 turns the byte bound off)", o.batchBytes))
	}
	if _, err := mirror.ProducerOpts(mirror.ProducerTuning{Compression: o.compression}); err != nil {
		problems = append(problems, err.Error())
	}
	switch o.onError {
	case mirror.OnErrorFail, mirror.OnErrorSkip:
		if o.deadLetter != "" {
			problems = append(problems, "--dead-letter-stream needs --on-error dead-letter")
		}
	case mirror.OnErrorDeadLetter:
		if o.deadLetter == "" {
			problems = append(problems, "--on-error dead-letter needs --dead-letter-stream")
		}
		if seen[o.deadLetter] {
			problems = append(problems, fmt.Sprintf("--dead-letter-stream %q is also a --stream: its dead letters would be mirrored again", o.deadLetter))
		}
	default:
		problems = append(problems, fmt.Sprintf("--on-error must be fail, skip or dead-letter, got %q", o.onError))
	}
	if _, err := mirror.ParseTimestampSource(o.timestamp); err != nil {
		problems = append(problems, err.Error())
	}
	if o.onGap != mirror.OnGapFail && o.onGap != mirror.OnGapSkip {
		problems = append(problems, fmt.Sprintf("--on-gap must be fail or skip, got %q", o.onGap))
	}
	return tmpl, topics, format, start, problemsError(problems)
}

// mirrorName is --name, or one derived from the streams, topic and group:
// the same command line always resumes the same mirror.
func (o *redisToKafkaOptions) mirrorName() string {
	if o.run.name != "" {
		return o.run.name
	}
	streams := append([]string(nil), o.streams...)
	sort.Strings(streams)
	name := strings.Join(streams, ",") + ">" + o.topic
	if o.group != "" && o.group != checkpoint.LegacyGroup {
		name += "@" + o.group
	}
	return name
}

func (o *redisToKafkaOptions) execute(a *app, c *cobra.Command) (err error) {
	// A follow run stopped by a signal succeeded, even during start-up.
	defer func() { err = followStopped(c, &o.run, err) }()
	redisEP, kafkaEP, err := o.conn.resolve(a, c, true, true)
	if err != nil {
		return err
	}
	o.groupSet = c.Flags().Changed("group")
	_, topicOf, format, start, err := o.validate()
	if err != nil {
		return err
	}
	ctx := c.Context()
	log := a.logger()
	name := o.mirrorName()
	txnID, err := mirror.TransactionalID(name)
	if err != nil {
		return usageError(err)
	}

	rc, err := redisEP.Connect(ctx, defaultConnectTime)
	if err != nil {
		return err
	}
	// Every step on the way out is bounded (see shutdown).
	sd := newShutdown(log)
	defer sd.wait()
	defer sd.spawn("close the Redis connection", rc.Close)
	// Before the lease: a run that cannot work leaves nothing behind.
	if err := redisEP.RefuseCluster(ctx, rc, "redis-to-kafka"); err != nil {
		return err
	}
	log.Debug("connected to redis", "url", redisEP.Redacted())
	opt := o.run.engineOptions(a)
	res, runErr := runLeased(ctx, rc, log, checkpoint.KindRedisToKafka, name, &o.run, sd, func(ctx context.Context, cl *closers) (runResult, error) {
		return o.runOnce(ctx, rc, kafkaEP, opt, name, txnID, topicOf, format, start, cl)
	})
	if !res.ran {
		return runErr
	}
	s := summary{Mirror: name, Direction: "redis-to-kafka", Skipped: res.skipped, Lost: res.lost}
	return finish(a, c, &o.run, s, res.stats, runErr)
}

// runOnce sets the mirror up from its checkpoint, under its lease (ctx
// ends when it is lost), and mirrors until the run ends. Every client it
// opens is added to cl.
func (o *redisToKafkaOptions) runOnce(ctx context.Context, rc rueidis.Client, kafkaEP endpoint.Kafka, opt mirror.Options, name, txnID string, topicOf map[string]string, format mirror.Format, start string, cl *closers) (runResult, error) {
	var none runResult
	log := opt.Logger
	admCl, err := kafkaEP.Connect(ctx, defaultConnectTime)
	if err != nil {
		return none, err
	}
	cl.add("close the Kafka admin connection", admCl.Close)
	log.Debug("connected to kafka", "brokers", kafkaEP.String())
	adm := kadm.NewClient(admCl)

	var topics []string
	for _, t := range topicOf {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	topics = compactSorted(topics)
	counts, err := mirror.EnsureTopics(ctx, admCl, topics, mirror.TopicSpec{Create: o.createTopic, Partitions: o.partitions, ReplicationFactor: o.replication})
	if err != nil {
		return none, kafkaEP.Explain(err)
	}
	log.Debug("topics ready", "partitions", counts, "create_missing", o.createTopic)

	ck, found, err := checkpoint.LoadR2K(ctx, rc, name)
	if err != nil {
		return none, err
	}
	if found {
		log.Debug("resuming", "mirror", name, "checkpoint", checkpoint.R2KKey(name), "updated", ck.Updated)
	} else {
		log.Debug("no checkpoint yet: a new mirror", "mirror", name, "checkpoint", checkpoint.R2KKey(name))
	}
	group, err := o.consumerGroup(ctx, rc, name, ck, found)
	if err != nil {
		return none, err
	}
	log.Debug("consumer group", "group", group, "consumer", name)
	src, err := mirror.NewRedisSource(ctx, mirror.RedisSourceConfig{
		Client:       rc,
		Streams:      o.streams,
		Group:        group,
		Consumer:     name,
		Start:        start,
		BatchSize:    o.run.batchSize,
		BatchBytes:   o.batchBytes,
		Follow:       o.run.follow,
		AllowMissing: o.allowMissing,
		ClaimIdle:    o.claimIdle,
		Mirror:       name,
		OnGap:        o.onGap,
		Confirmed:    ck.Streams,
		Logger:       log,

		DeadLetterStream: o.deadLetter,
	})
	if err != nil {
		return none, err
	}
	// The group is recorded once the source accepted it (a group another
	// mirror reads is refused there), and before anything else is stored:
	// a checkpoint without it means a mirror from before groups were
	// recorded.
	if err := checkpoint.RecordR2KGroup(ctx, rc, name, group); err != nil {
		return none, err
	}
	// Records are hashed over the partition count each topic had when
	// this mirror first wrote to it, stored before anything is produced.
	kept, freshCounts, err := mirror.KeepPartitionCounts(ck.PartitionCounts, counts, checkpoint.R2KKey(name))
	if err != nil {
		return none, err
	}
	grown := newGrownTopics(log, name)
	for _, t := range topics {
		if counts[t] > kept[t] {
			grown.warn(t, int(counts[t]), int(kept[t]))
		}
	}
	// What the topics accept sizes the producer, and the read-back below
	// must be able to read records of that size.
	limits, err := mirror.ReadTopicLimits(ctx, adm, topics)
	if err != nil {
		return none, kafkaEP.Explain(err)
	}

	tuning := mirror.ProducerTuning{
		Linger:      o.linger,
		Compression: o.compression,
		// A batch holds up to --batch-size entries per stream; room for
		// every batch in flight keeps Write from blocking on the buffer.
		MaxBufferedRecords: o.run.batchSize * len(o.streams) * (o.run.maxInFlight + 1),
		Limits:             limits,

		KeptPartitions:  kept,
		PartitionsAdded: grown.warn,
	}
	popts, err := mirror.ProducerOpts(tuning)
	if err != nil {
		return none, usageError(err)
	}
	popts = append(popts, kgo.TransactionalID(txnID))
	producer, err := kgo.NewClient(append(kafkaEP.ClientOpts(), popts...)...)
	if err != nil {
		return none, kafkaEP.Explain(err)
	}
	cl.add("close the Kafka producer", producer.Close)
	// The producer's InitProducerID fences every earlier run of this
	// mirror and aborts the transaction one left open, before anything
	// is read back or recorded: nothing of theirs can land after it.
	initCtx, cancelInit := context.WithTimeout(ctx, o.run.timeout)
	err = mirror.InitProducer(initCtx, producer, name)
	cancelInit()
	if err != nil {
		if initCtx.Err() != nil && ctx.Err() == nil {
			return none, fmt.Errorf("kafka %s: initialising the transactional producer %s took longer than --timeout %s; is the broker reachable, and does it allow transactions (transaction.state.log.* settings)?", kafkaEP, txnID, o.run.timeout)
		}
		return none, kafkaEP.Explain(err)
	}
	log.Debug("transactional producer ready; earlier runs are fenced", "transactional_id", txnID)

	// Record where each partition stands before producing anything, so a
	// crash of this very run leaves the restart a bound to read back from.
	ends, err := mirror.EndOffsets(ctx, adm, topics)
	if err != nil {
		return none, err
	}
	// Entries read but not acknowledged by an earlier run may already be
	// in Kafka.
	pending, err := src.Pending(ctx)
	if err != nil {
		return none, err
	}
	initial, err := startingOffsets(ctx, adm, ends, ck, found, pending > 0)
	if err != nil {
		return none, kafkaEP.Explain(err)
	}
	if err := checkpoint.InitR2KPartitions(ctx, rc, name, initial); err != nil {
		return none, err
	}
	// The partition counts are stored only now: a checkpoint holding
	// them is taken to have its partitions' positions too (see
	// startingOffsets), so a run that stops before its positions are
	// stored must not leave the counts.
	if err := checkpoint.InitR2KPartitionCounts(ctx, rc, name, freshCounts); err != nil {
		return none, err
	}

	// What this mirror wrote after its checkpoint may be in Kafka while
	// Redis no longer knows it was read: entries pending from an
	// interrupted run, or delivered again because Redis restarted from an
	// older copy of its data, or the group was moved back or made again.
	// The read-back runs at every start, pending entries or not; after a
	// clean stop it starts at the end of every partition and reads nothing.
	streamSet := map[string]bool{}
	for _, s := range o.streams {
		streamSet[s] = true
	}
	scanOpts := append(kafkaEP.ClientOpts(), kgo.BrokerMaxReadBytes(mirror.ConsumerReadBytes(limits.Largest())))
	readBack := func(ctx context.Context, from map[checkpoint.TopicPartition]int64) (map[string]struct{}, error) {
		// The read-back is bounded like any one-shot step, in both modes:
		// nothing may be produced before it completes.
		scanCtx, cancel := context.WithTimeout(ctx, o.run.timeout)
		defer cancel()
		written, err := mirror.ScanWritten(scanCtx, scanOpts, adm, topics, from, streamSet)
		if err != nil {
			if scanCtx.Err() != nil && ctx.Err() == nil {
				return nil, fmt.Errorf("kafka %s: reading back topics %v to find what this mirror already wrote took longer than --timeout %s; is the broker reachable?", kafkaEP, topics, o.run.timeout)
			}
			return nil, kafkaEP.Explain(err)
		}
		return written, nil
	}
	// From where the checkpoint stands now: its positions, and for
	// partitions it had none for, those just recorded.
	from := make(map[checkpoint.TopicPartition]int64, len(initial))
	maps.Copy(from, initial)
	maps.Copy(from, ck.Partitions)
	written, err := readBack(ctx, from)
	if err != nil {
		return none, err
	}
	if pending > 0 || len(written) > 0 {
		log.Info("resuming an interrupted run", "pending", pending, "already_in_kafka", len(written))
	} else {
		log.Debug("nothing pending from an earlier run, and nothing in Kafka after the checkpoint")
	}
	src.SkipWritten(written)
	// A follow run that sees Redis restart, or its group go back or
	// vanish, does the same again from the checkpoint as it is then.
	src.OnReadBack(func(ctx context.Context) (map[string]string, map[string]struct{}, error) {
		ck, _, err := checkpoint.LoadR2K(ctx, rc, name)
		if err != nil {
			return nil, nil, err
		}
		written, err := readBack(ctx, ck.Partitions)
		return ck.Streams, written, err
	})

	timestamps, err := mirror.TimestampPolicies(ctx, adm, topics)
	if err != nil {
		return none, kafkaEP.Explain(err)
	}
	sinkCfg := mirror.KafkaSinkConfig{
		Client: producer,
		Mirror: name,
		// Half the batches in flight: the others are read, and wait to
		// be produced, while a transaction commits.
		TxnBatches: max(1, o.run.maxInFlight/2),
		Topics:     topicOf,
		Format:     format,
		ValueField: o.valueField,
		KeyField:   o.keyField,
		// The producer's batch limit is each topic's limit; a record
		// beyond it fails on its own, before it is sent.
		Limits:     limits.Topics,
		WarnFields: o.maxFields,

		Timestamp:         mirror.TimestampSource(o.timestamp),
		TimestampPolicies: timestamps,
		OnError:           o.onError,
		Logger:            log,
	}
	if !o.run.follow {
		sinkCfg.ConfirmTimeout = o.run.timeout
	}
	sink := mirror.NewKafkaSink(sinkCfg)

	log.Debug("mirroring", "streams", o.streams, "topics", topics, "follow", o.run.follow, "batch_size", o.run.batchSize, "max_in_flight", o.run.maxInFlight)
	stats, runErr := mirror.Run(ctx, src, sink, opt)
	// Nothing more is produced or committed by this producer, whatever
	// ended the run; a transaction still open is aborted.
	sink.Stop(context.WithoutCancel(ctx))
	if runErr == nil && !o.run.follow && stats.Entries > 0 {
		// Exit once the records are visible to read_committed readers.
		vctx, cancel := context.WithTimeout(ctx, visibleWait)
		if !mirror.WaitVisible(vctx, adm, topics) {
			log.Debug("the records' transaction markers were not all written yet at exit (another producer's transaction open, or a slow broker)", "waited", visibleWait)
		}
		cancel()
	}
	if ee := (*mirror.EntryError)(nil); errors.As(runErr, &ee) {
		ee.CreateTopic = o.createTopic // for the hint of a topic deleted during the run
	}
	if n := src.Skipped(); n > 0 {
		log.Info("acknowledged entries already in Kafka without sending them again", "already_in_kafka", n)
	}
	refusedSkipped, deadLettered := src.Refused()
	// Entries trimmed before they were mirrored are lost, not skipped:
	// Kafka never had them.
	res := runResult{stats: stats, skipped: src.Skipped() + refusedSkipped + deadLettered, lost: src.Lost(), ran: true}
	if refusedSkipped > 0 {
		log.Warn("skipped entries Kafka refuses (--on-error skip)", "count", refusedSkipped)
	}
	if deadLettered > 0 {
		log.Warn("copied entries Kafka refuses to the dead-letter stream (--on-error dead-letter)", "count", deadLettered, "stream", o.deadLetter)
	}
	return res, runErr
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
// its end.
func startingOffsets(ctx context.Context, adm *kadm.Client, ends map[checkpoint.TopicPartition]int64, ck checkpoint.R2K, found, pending bool) (map[checkpoint.TopicPartition]int64, error) {
	if !found && !pending {
		return ends, nil
	}
	var old []string
	seen := map[string]bool{}
	for tp := range ends {
		if _, ok := ck.PartitionCounts[tp.Topic]; (!found || !ok) && !seen[tp.Topic] {
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

// consumerGroup finds the group mirror name reads through; a mirror whose
// checkpoint is gone but whose consumer is in the old shared group (see
// chooseGroup) keeps that group.
func (o *redisToKafkaOptions) consumerGroup(ctx context.Context, rc rueidis.Client, name string, ck checkpoint.R2K, found bool) (string, error) {
	legacy := false
	if !found && o.group == "" {
		var err error
		if legacy, err = mirror.ConsumerInGroup(ctx, rc, o.streams, checkpoint.LegacyGroup, name); err != nil {
			return "", err
		}
	}
	return chooseGroup(name, o.group, ck.Group, found, legacy)
}

// chooseGroup picks the consumer group of mirror name, given --group (or
// ""), the group its checkpoint records (or ""), whether it has a
// checkpoint at all, and whether its consumer is in the old shared group:
//
//   - a recorded group is kept; a different --group is refused, since the
//     new group would read the streams again from --start;
//   - a checkpoint written before groups were recorded means the old
//     shared default, checkpoint.LegacyGroup, unless --group says which;
//   - so does a mirror with no checkpoint whose consumer is found in that
//     group (its checkpoint was deleted): it resumes, not starts over;
//   - a new mirror reads through --group, or else a group of its own,
//     xmirror:<name>.
func chooseGroup(name, given, recorded string, found, legacyConsumer bool) (string, error) {
	switch {
	case recorded != "" && given != "" && given != recorded:
		return "", fmt.Errorf("mirror %q reads through consumer group %q (recorded in checkpoint %s), not --group %q; drop --group, or choose another --name for a new mirror", name, recorded, checkpoint.R2KKey(name), given)
	case recorded != "":
		return recorded, nil
	case given != "":
		return given, nil
	case found, legacyConsumer:
		return checkpoint.LegacyGroup, nil
	default:
		return defaultGroupPrefix + name, nil
	}
}

// compactSorted removes adjacent duplicates.
func compactSorted(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// grownTopics warns, once per topic and partition count, that partitions
// added to a topic stay unused by this mirror.
type grownTopics struct {
	log  *slog.Logger
	name string
	mu   sync.Mutex
	seen map[string]int
}

func newGrownTopics(log *slog.Logger, name string) *grownTopics {
	return &grownTopics{log: log, name: name, seen: map[string]int{}}
}

func (g *grownTopics) warn(topic string, partitions, kept int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen[topic] == partitions {
		return
	}
	g.seen[topic] = partitions
	g.log.Warn("topic has more partitions than when this mirror first wrote to it; records are still hashed over the first count, so keys and streams keep their partition, and the new partitions stay unused by this mirror until it is reset under a new --name",
		"topic", topic, "partitions", partitions, "used", kept, "mirror", g.name)
}
