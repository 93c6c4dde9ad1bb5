package cmd

import (
	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/mirror/k2r"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// kafkaToRedisOptions are the flags of kafka-to-redis, bound into the
// mirror's Config.
type kafkaToRedisOptions struct {
	conn    connFlags
	run     runFlags
	metrics metricsOptions
	cfg     k2r.Config
}

// kafkaToRedisFlags names k2r.Config's fields as their flags, for the
// messages that name a setting.
var kafkaToRedisFlags = map[string]string{
	"Topics":           "--topic",
	"TopicRegexes":     "--topic-regex",
	"Rescan":           "--rescan",
	"Stream":           "--stream",
	"Format":           "--format",
	"Headers":          "--headers",
	"ValueField":       "--value-field",
	"KeyField":         "--key-field",
	"PreserveIDs":      "--preserve-ids",
	"MaxFields":        "--max-fields",
	"MaxLen":           "--maxlen",
	"Start":            "--start",
	"OnError":          "--on-error",
	"OnGap":            "--on-gap",
	"OnTopicRecreated": "--on-topic-recreated",
	"DeadLetterStream": "--dead-letter-stream",
	"PartitionCheck":   "--partition-check",
}

func newKafkaToRedisCmd(a *app) *cobra.Command {
	c, _ := newKafkaToRedis(a)
	return c
}

// newKafkaToRedis is the command with its options, which a mirrors file sets
// as its flags.
func newKafkaToRedis(a *app) (*cobra.Command, *kafkaToRedisOptions) {
	o := kafkaToRedisOptions{cfg: k2r.Defaults()}
	c := &cobra.Command{
		Use:     "kafka-to-redis --topic T [--topic T2 ...] [--topic-regex RE ...] [--stream S]",
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

--topic-regex mirrors every topic of the cluster a regular expression (Go's
syntax, RE2) matches, anywhere in its name unless anchored: '^orders\.'.
Topics starting with __ (Kafka's internal ones) are left out unless the
expression starts with ^__. --follow looks again every --rescan (default
30s) and mirrors a topic created during the run from its first record,
whatever --start says. A topic both a --topic and a regex (or two) name is
mirrored once; a regex that matches nothing is no error.

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
	cfg := &o.cfg
	o.conn.bind(c, true, true)
	o.run.bind(c, &cfg.RunConfig)
	o.metrics.bind(c)
	fs := c.Flags()
	fs.StringArrayVarP(&cfg.Topics, "topic", "t", nil, "topic to mirror (repeat for several); this or --topic-regex is required")
	fs.StringArrayVar(&cfg.TopicRegexes, "topic-regex", nil, "mirror every topic this regular expression (Go's syntax) matches, internal __ topics only if it starts with ^__ (repeat for several); --follow also takes on topics created later")
	fs.DurationVar(&cfg.Rescan, "rescan", cfg.Rescan, "follow: how often to look for new topics matching --topic-regex")
	fs.StringVarP(&cfg.Stream, "stream", "s", cfg.Stream, "destination stream; {topic} and {partition} are replaced, {{ }} are literal braces")
	fs.StringVar((*string)(&cfg.Format), "format", string(cfg.Format), "record value format: json or raw")
	fs.BoolVar(&cfg.Headers, "headers", false, "json format: also copy record headers (other than xmirror's lineage) as fields, after the value's members, named as in the raw format")
	fs.StringVar(&cfg.ValueField, "value-field", cfg.ValueField, "raw format: the field that receives the record value")
	fs.StringVar(&cfg.KeyField, "key-field", cfg.KeyField, "raw format: the field that receives the record key")
	fs.BoolVar(&cfg.PreserveIDs, "preserve-ids", false, "take each entry's ID from its xmirror.id header instead of letting Redis choose (one partition per stream)")
	fs.IntVar(&cfg.MaxFields, "max-fields", cfg.MaxFields, "the most fields one entry may have: a record that maps to more is handled by --on-error (redis-to-kafka warns of such entries)")
	fs.Int64Var(&cfg.MaxLen, "maxlen", 0, "trim each stream to about this many entries (XADD MAXLEN ~); 0 keeps everything")
	fs.StringVar(&cfg.Start, "start", cfg.Start, "where a partition without a checkpoint starts: earliest or latest")
	fs.StringVar(&cfg.OnError, "on-error", cfg.OnError, "a record that cannot be decoded (or, with --preserve-ids, whose ID Redis cannot add): fail, skip or dead-letter")
	fs.StringVar(&cfg.OnGap, "on-gap", cfg.OnGap, "a checkpoint below the log start (records deleted before they were mirrored): fail or skip")
	fs.StringVar(&cfg.OnTopicRecreated, "on-topic-recreated", cfg.OnTopicRecreated, "a topic deleted and created again since the checkpoint was written (another topic ID): fail, or restart to mirror the new topic from its start")
	fs.StringVar(&cfg.DeadLetterStream, "dead-letter-stream", "", "with --on-error dead-letter: the stream receiving undecodable records")
	// How often --follow looks for partitions added to the topics: a
	// knob for tests rather than for users.
	fs.DurationVar(&cfg.PartitionCheck, "partition-check", cfg.PartitionCheck, "follow: how often to look for partitions added to the topics")
	fs.MarkHidden("partition-check")
	completeEnums(c, "earliest", "latest")
	completeTopics(a, c, &o.conn, "topic")
	completeStreams(a, c, &o.conn, "stream")
	completeStreams(a, c, &o.conn, "dead-letter-stream")
	return c, &o
}

func (o *kafkaToRedisOptions) execute(a *app, c *cobra.Command) error {
	m, names, err := o.build(a, c)
	if err != nil {
		return err
	}
	return a.executeMirror(c, o.parts(), m, names)
}

func (o *kafkaToRedisOptions) parts() commandParts {
	return commandParts{direction: "kafka-to-redis", conn: &o.conn, run: &o.run, metrics: &o.metrics, redis: &o.cfg.Redis, kafka: &o.cfg.Kafka}
}

// build resolves the flags into the mirror they describe, connecting to
// nothing; its error is the command's.
func (o *kafkaToRedisOptions) build(a *app, c *cobra.Command) (runner, setting.Names, error) {
	names := o.run.settingNames(flagNames(kafkaToRedisFlags))
	o.run.defaultName(func() string { return k2r.DefaultName(o.cfg) })
	m, err := buildMirror(a, c, o.parts(), names, func() []string { return o.problems(c) },
		func() (*k2r.Mirror, error) { return k2r.New(c.Context(), o.cfg) })
	return m, names, err
}

func (o *kafkaToRedisOptions) runFlags() *runFlags { return &o.run }

// problems are those of the flags that k2r.Config cannot see: the raw
// format's field names given with another format, even at their default.
func (o *kafkaToRedisOptions) problems(c *cobra.Command) []string {
	problems := o.run.validate()
	fs := c.Flags()
	if o.cfg.Format != mapping.FormatRaw && (fs.Changed("value-field") || fs.Changed("key-field")) &&
		o.cfg.ValueField == mapping.DefaultValueField && o.cfg.KeyField == mapping.DefaultKeyField {
		problems = append(problems, "--value-field and --key-field are for --format raw")
	}
	return problems
}
