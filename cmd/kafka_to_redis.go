package cmd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
)

type kafkaToRedisOptions struct {
	conn connFlags
	run  runFlags

	topics      []string
	stream      string
	format      string
	headers     bool
	valueField  string
	keyField    string
	preserveIDs bool
	maxFields   int
	maxLen      int64
	start       string
	onError     string
	onGap       string
	onRecreated string
	deadLetter  string
	// partitionCheck is how often --follow looks for partitions added to
	// the topics; hidden, a knob for tests rather than for users.
	partitionCheck time.Duration
}

func newKafkaToRedisCmd(a *app) *cobra.Command {
	var o kafkaToRedisOptions
	c := &cobra.Command{
		Use:     "kafka-to-redis --topic T [--topic T2 ...] [--stream S]",
		Aliases: []string{"k2r"},
		Short:   "Mirror Kafka topics into Redis streams, exactly once",
		Long: `Reads Kafka partitions directly (no consumer group) and appends their
records to Redis streams. Each batch's entries and the positions they came
from are written in one checked Redis transaction per stream, so whatever
happens, every record is in its stream exactly once. Positions live in Redis, in
xmirror:k2r:{<stream's hash tag>}:<name>, one field <topic>:<partition> per
partition holding the next offset.

A partition without a checkpoint starts at --start (earliest or latest), and
that position is stored at once, so the next run resumes from it. The
checkpoint also records each topic's ID: a topic deleted and created again
(another ID) is refused, naming it, unless --on-topic-recreated restart
mirrors the new topic from its start. If Redis loses writes (restarted from
an older snapshot), the checkpoint and its stream go back together: the run
warns and mirrors again from the positions Redis kept.

One-shot (default): mirrors up to each partition's end (its last stable offset)
as of the start, prints a summary and exits; run again, it mirrors only what
was added since. If Kafka delivers nothing for --timeout, it exits 1 naming the
partitions not done. --follow keeps mirroring until SIGINT/SIGTERM, takes on
partitions added to the topics during the run (within 30s, from their first
record) and warns while it makes no progress.

--stream is a template: {topic} and {partition} are replaced ({{ and }} are
literal braces); default {topic}. With {partition} each partition gets its own
stream. Several topics into a name without {topic} merge into one stream.

Mapping (the inverse of redis-to-kafka):
  --format json  the value must be a JSON object of strings; its members
                 become the fields, in order (duplicates kept). Headers are
                 ignored unless --headers adds them as fields after those
                 (named as in raw).
  --format raw   fields: --value-field (the value, absent if null),
                 --key-field (the key, if any, but not for records with
                 xmirror lineage headers, whose key copies a field), then one
                 field per header, in order; a header named xmirror.xmirror.*
                 loses one xmirror. (redis-to-kafka's escape). Equal names
                 are kept as duplicate fields.
  The first xmirror.stream and xmirror.id headers (lineage) never become
  fields.
  Entry IDs are chosen by Redis, or with --preserve-ids taken from xmirror.id:
  an ID the stream holds with the same fields is already present and not
  written again; one not in it (or held by another entry) but at or below
  the stream's last ID cannot be added by Redis (it arrived out of order, or
  another client writes to the stream) and goes to --on-error.

A record that cannot become an entry (not a JSON object, a null value in json,
no fields at all, more fields than --max-fields (default 1000000), no
xmirror.id with --preserve-ids, an ID Redis cannot add with --preserve-ids)
is handled by --on-error:
fail (stop; what came before it is written), skip (log and count it) or
dead-letter (copy it to --dead-letter-stream, at least once).`,
		Example: `  # copy the topic "orders" into the stream "orders", once
  xmirror kafka-to-redis --topic orders

  # one stream per partition, continuously, trimmed to about a million entries
  xmirror k2r --topic orders --stream 'copy:{topic}:{partition}' --maxlen 1000000 -f

  # restore what redis-to-kafka wrote, with the original entry IDs
  xmirror k2r --topic orders --stream orders-restored --preserve-ids`,
		RunE: func(c *cobra.Command, _ []string) error { return o.execute(a, c) },
	}
	o.conn.bind(c, true, true)
	o.run.bind(c)
	fs := c.Flags()
	fs.StringArrayVarP(&o.topics, "topic", "t", nil, "topic to mirror (repeat for several); required")
	fs.StringVarP(&o.stream, "stream", "s", mirror.DefaultStreamTemplate, "destination stream; {topic} and {partition} are replaced, {{ }} are literal braces")
	fs.StringVar(&o.format, "format", string(mirror.FormatJSON), "record value format: json or raw")
	fs.BoolVar(&o.headers, "headers", false, "json format: also copy record headers (other than xmirror's lineage) as fields, after the value's")
	fs.StringVar(&o.valueField, "value-field", mirror.DefaultValueField, "raw format: the field that receives the record value")
	fs.StringVar(&o.keyField, "key-field", mirror.DefaultKeyField, "raw format: the field that receives the record key")
	fs.BoolVar(&o.preserveIDs, "preserve-ids", false, "take each entry's ID from its xmirror.id header instead of letting Redis choose (one partition per stream)")
	fs.IntVar(&o.maxFields, "max-fields", mirror.DefaultMaxFields, "the most fields one entry may have: a record that maps to more is handled by --on-error (redis-to-kafka warns of such entries)")
	fs.Int64Var(&o.maxLen, "maxlen", 0, "trim each stream to about this many entries (XADD MAXLEN ~); 0 keeps everything")
	fs.StringVar(&o.start, "start", "earliest", "where a partition without a checkpoint starts: earliest or latest")
	fs.StringVar(&o.onError, "on-error", mirror.OnErrorFail, "a record that cannot be decoded (or, with --preserve-ids, whose ID Redis cannot add): fail, skip or dead-letter")
	fs.StringVar(&o.onGap, "on-gap", mirror.OnGapFail, "a checkpoint below the log start (records deleted before they were mirrored): fail or skip")
	fs.StringVar(&o.onRecreated, "on-topic-recreated", mirror.OnTopicRecreatedFail, "a topic deleted and created again since the checkpoint was written (another topic ID): fail, or restart to mirror the new topic from its start")
	fs.StringVar(&o.deadLetter, "dead-letter-stream", "", "with --on-error dead-letter: the stream receiving undecodable records")
	fs.DurationVar(&o.partitionCheck, "partition-check", mirror.DefaultPartitionCheck, "follow: how often to look for partitions added to the topics")
	fs.MarkHidden("partition-check")
	return c
}

// validate checks every flag at once.
func (o *kafkaToRedisOptions) validate(c *cobra.Command) (mirror.StreamTemplate, mirror.Format, error) {
	problems := o.run.validate()
	if len(o.topics) == 0 {
		problems = append(problems, "--topic is required (repeat it for several topics)")
	}
	seen := map[string]bool{}
	for _, t := range o.topics {
		if err := mapping.ValidTopicName(t); err != nil {
			problems = append(problems, fmt.Sprintf("--topic %q: %v", t, err))
		}
		if seen[t] {
			problems = append(problems, fmt.Sprintf("topic %q is given twice", t))
		}
		seen[t] = true
	}
	tmpl, err := mirror.ParseStreamTemplate(o.stream)
	if err != nil {
		problems = append(problems, "--stream: "+err.Error())
	} else if err := tmpl.CheckTopics(o.topics); err != nil {
		problems = append(problems, "--stream: "+err.Error())
	}
	format, err := mirror.ParseFormat(o.format)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if format == mirror.FormatRaw {
		if o.valueField == "" || o.keyField == "" {
			problems = append(problems, "--value-field and --key-field must not be empty")
		}
		if o.headers {
			problems = append(problems, "--headers is for --format json; --format raw always copies headers")
		}
	} else if c.Flags().Changed("value-field") || c.Flags().Changed("key-field") {
		problems = append(problems, "--value-field and --key-field are for --format raw")
	}
	if o.maxFields < 1 {
		problems = append(problems, fmt.Sprintf("--max-fields must be at least 1, got %d", o.maxFields))
	}
	if o.maxLen < 0 {
		problems = append(problems, fmt.Sprintf("--maxlen must be 0 (no trimming) or positive, got %d", o.maxLen))
	}
	if o.start != "earliest" && o.start != "latest" {
		problems = append(problems, fmt.Sprintf("--start must be earliest or latest, got %q", o.start))
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
	default:
		problems = append(problems, fmt.Sprintf("--on-error must be fail, skip or dead-letter, got %q", o.onError))
	}
	if o.onGap != mirror.OnGapFail && o.onGap != mirror.OnGapSkip {
		problems = append(problems, fmt.Sprintf("--on-gap must be fail or skip, got %q", o.onGap))
	}
	if o.onRecreated != mirror.OnTopicRecreatedFail && o.onRecreated != mirror.OnTopicRecreatedRestart {
		problems = append(problems, fmt.Sprintf("--on-topic-recreated must be fail or restart, got %q", o.onRecreated))
	}
	if o.partitionCheck <= 0 {
		problems = append(problems, fmt.Sprintf("--partition-check must be positive, got %s", o.partitionCheck))
	}
	return tmpl, format, problemsError(problems)
}

// mirrorName is --name, or one derived from the topics and the stream
// template, "<topic>[,<topic>...]><stream>" with the topics sorted, so the
// same command line always resumes the same mirror.
func (o *kafkaToRedisOptions) mirrorName() string {
	if o.run.name != "" {
		return o.run.name
	}
	topics := append([]string(nil), o.topics...)
	sort.Strings(topics)
	return strings.Join(topics, ",") + ">" + o.stream
}

func (o *kafkaToRedisOptions) execute(a *app, c *cobra.Command) (err error) {
	// A follow run stopped by a signal succeeded, even during start-up.
	defer func() { err = followStopped(c, &o.run, err) }()
	redisEP, kafkaEP, err := o.conn.resolve(a, c, true, true)
	if err != nil {
		return err
	}
	tmpl, format, err := o.validate(c)
	if err != nil {
		return err
	}
	ctx := c.Context()
	name := o.mirrorName()

	rc, err := redisEP.Connect(ctx, defaultConnectTime)
	if err != nil {
		return err
	}
	// Every step on the way out is bounded (see shutdown).
	sd := newShutdown(a.logger())
	defer sd.wait()
	defer sd.spawn("close the Redis connection", rc.Close)
	// Before the lease: a run that cannot work leaves nothing behind.
	if err := redisEP.RefuseCluster(ctx, rc, "kafka-to-redis"); err != nil {
		return err
	}
	opt := o.run.engineOptions(a)
	log := opt.Logger
	log.Debug("connected to redis", "url", redisEP.Redacted())
	res, runErr := runLeased(ctx, rc, log, checkpoint.KindKafkaToRedis, name, &o.run, sd, func(ctx context.Context, cl *closers) (runResult, error) {
		return o.runOnce(ctx, rc, redisEP, kafkaEP, opt, name, tmpl, format, cl)
	})
	if !res.ran {
		return runErr
	}
	s := summary{Mirror: name, Direction: "kafka-to-redis", Skipped: res.skipped}
	return finish(a, c, &o.run, s, res.stats, runErr)
}

// runOnce sets the mirror up from its checkpoints, under its lease (ctx
// ends when it is lost), and mirrors until the run ends. Every client it
// opens is added to cl.
func (o *kafkaToRedisOptions) runOnce(ctx context.Context, rc rueidis.Client, redisEP endpoint.Redis, kafkaEP endpoint.Kafka, opt mirror.Options, name string, tmpl mirror.StreamTemplate, format mirror.Format, cl *closers) (runResult, error) {
	var none runResult
	log := opt.Logger
	admin, err := kafkaEP.Connect(ctx, defaultConnectTime)
	if err != nil {
		return none, err
	}
	cl.add("close the Kafka admin connection", admin.Close)
	log.Debug("connected to kafka", "brokers", kafkaEP.String())
	m, err := mirror.OpenK2R(ctx, rc, admin, mirror.K2RConfig{
		Name:             name,
		Topics:           o.topics,
		Stream:           tmpl,
		Format:           format,
		Headers:          o.headers,
		ValueField:       o.valueField,
		KeyField:         o.keyField,
		PreserveIDs:      o.preserveIDs,
		MaxFields:        o.maxFields,
		MaxLen:           o.maxLen,
		StartLatest:      o.start == "latest",
		OnError:          o.onError,
		OnGap:            o.onGap,
		OnTopicRecreated: o.onRecreated,
		DeadLetterStream: o.deadLetter,
		BatchSize:        o.run.batchSize,
		Follow:           o.run.follow,
		RetryFor:         opt.RetryFor,
		PartitionCheck:   o.partitionCheck,
		Logger:           opt.Logger,
		KafkaOpts:        kafkaEP.ClientOpts(),
		KafkaName:        kafkaEP.String(),
		RedisName:        redisEP.Addr(),
	})
	if err != nil {
		if errors.Is(err, mirror.ErrConfig) {
			return none, usageError(err)
		}
		return none, err
	}
	cl.add("close the Kafka consumer", m.CloseSource)

	log.Debug("mirroring", "topics", o.topics, "stream", o.stream, "follow", o.run.follow, "batch_size", o.run.batchSize, "max_in_flight", o.run.maxInFlight)
	// The writes still in flight end before anything else is closed, or
	// the lease released.
	cl.addStep("finish the writes to Redis", m.CloseSink)
	stats, runErr := m.Run(ctx, opt)
	// The engine counts every record a batch accounts for; the summary
	// shows entries written and, apart, the records skipped.
	skipped, dead, present := m.Skipped(), m.DeadLettered(), m.Present()
	stats.Entries -= skipped + dead + present
	if present > 0 {
		opt.Logger.Info("entries already present in their streams (--preserve-ids) were not written again", "count", present)
	}
	if dead > 0 {
		opt.Logger.Warn("records that could not be decoded were copied to the dead-letter stream", "count", dead, "stream", o.deadLetter)
	}
	return runResult{stats: stats, skipped: skipped + dead + present, ran: true}, runErr
}
