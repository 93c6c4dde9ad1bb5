package cmd

import (
	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/mirror/r2k"
	"github.com/xmirror/xmirror/mirror/setting"
)

// redisToKafkaOptions are the flags of redis-to-kafka, bound into the
// mirror's Config.
type redisToKafkaOptions struct {
	conn    connFlags
	run     runFlags
	metrics metricsOptions
	cfg     r2k.Config
}

// redisToKafkaFlags names r2k.Config's fields as their flags, for the
// messages that name a setting.
var redisToKafkaFlags = map[string]string{
	"Streams":           "--stream",
	"StreamPatterns":    "--stream-pattern",
	"Rescan":            "--rescan",
	"Topic":             "--topic",
	"Group":             "--group",
	"Start":             "--start",
	"Format":            "--format",
	"ValueField":        "--value-field",
	"KeyField":          "--key-field",
	"CreateTopic":       "--create-topic",
	"Partitions":        "--partitions",
	"ReplicationFactor": "--replication-factor",
	"AllowMissing":      "--allow-missing",
	"Linger":            "--linger",
	"Compression":       "--compression",
	"ClaimIdle":         "--claim-idle",
	"MaxFields":         "--max-fields",
	"BatchBytes":        "--batch-bytes",
	"OnError":           "--on-error",
	"DeadLetterStream":  "--dead-letter-stream",
	"Timestamp":         "--timestamp",
	"OnGap":             "--on-gap",
	"TrimSource":        "--trim-source",
}

func newRedisToKafkaCmd(a *app) *cobra.Command {
	c, _ := newRedisToKafka(a)
	return c
}

// newRedisToKafka is the command with its options, which a mirrors file sets
// as its flags.
func newRedisToKafka(a *app) (*cobra.Command, *redisToKafkaOptions) {
	o := redisToKafkaOptions{cfg: r2k.Defaults()}
	c := &cobra.Command{
		Use:     "redis-to-kafka --stream S [--stream S2 ...] [--stream-pattern P ...] [--topic T]",
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

--stream-pattern mirrors every stream a Redis glob pattern matches (as SCAN
MATCH takes it: * ? [abc] \x), found with SCAN ... TYPE stream at start;
--follow looks again every --rescan (default 30s) and mirrors a stream that
appeared from its first entry, whatever --start says. A stream both a
--stream and a pattern (or two patterns) name is mirrored once. A pattern
that matches nothing is no error: a one-shot run says so and mirrors the
rest. A one-shot run refuses a matching stream whose topic is missing
(without --create-topic) or not a valid topic name; --follow leaves such a
stream out with a warning, mirrors the others and takes it on once its
topic exists.

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
bodies were trimmed are handled the same way.

--trim-source makes Redis a bounded buffer in front of Kafka: at start and
after each commit, each stream is trimmed (XTRIM MINID) up to the last entry
Kafka confirmed and the commit checkpointed, never past an entry another
consumer group of the stream has not yet delivered and acknowledged (read in
the same atomic step); that last entry stays. The user needs XTRIM on the
streams. The summary and xmirror status count what was trimmed.`,
		Example: `  # copy the stream "orders" into the topic "orders", once
  xmirror redis-to-kafka --stream orders --create-topic

  # several streams into one topic per stream, keyed by customer, continuously
  xmirror r2k --stream eu.orders --stream us.orders --topic 'mirror.{stream}' \
      --key-field customer --follow

  # every stream named orders.*, and those created later, one topic each
  xmirror r2k --stream-pattern 'orders.*' --create-topic --follow

  # Redis as a bounded buffer: what Kafka holds is trimmed from the stream
  xmirror r2k --stream events --follow --trim-source`,
		RunE: func(c *cobra.Command, _ []string) error { return o.execute(a, c) },
	}
	cfg := &o.cfg
	o.conn.bind(c, true, true)
	o.run.bind(c, &cfg.RunConfig)
	o.metrics.bind(c)
	fs := c.Flags()
	fs.StringArrayVarP(&cfg.Streams, "stream", "s", nil, "stream to mirror (repeat for several); this or --stream-pattern is required")
	fs.StringArrayVar(&cfg.StreamPatterns, "stream-pattern", nil, "mirror every stream this Redis glob pattern matches, as SCAN MATCH takes it (repeat for several); --follow also takes on streams that appear later")
	fs.DurationVar(&cfg.Rescan, "rescan", cfg.Rescan, "follow: how often to look for new streams matching --stream-pattern")
	fs.StringVarP(&cfg.Topic, "topic", "t", cfg.Topic, "destination topic; {stream} is replaced by the stream's name")
	fs.StringVarP(&cfg.Group, "group", "g", "", "consumer group that tracks what was read (default xmirror:<mirror name>); a mirror keeps the group its checkpoint records")
	fs.StringVar(&cfg.Start, "start", cfg.Start, "where a new consumer group starts: earliest (whole history), latest (only new entries) or an entry ID")
	fs.StringVar((*string)(&cfg.Format), "format", string(cfg.Format), "record value format: json or raw")
	fs.StringVar(&cfg.ValueField, "value-field", cfg.ValueField, "raw format: the field whose bytes become the record value")
	fs.StringVar(&cfg.KeyField, "key-field", "", "field whose value becomes the record key (so one key always lands in one partition)")
	fs.BoolVar(&cfg.CreateTopic, "create-topic", false, "create missing topics (otherwise a missing topic is an error)")
	fs.Int32Var(&cfg.Partitions, "partitions", cfg.Partitions, "with --create-topic: partitions of a new topic (-1: the broker's default)")
	fs.Int16Var(&cfg.ReplicationFactor, "replication-factor", cfg.ReplicationFactor, "with --create-topic: replication factor of a new topic (-1: the broker's default)")
	fs.BoolVar(&cfg.AllowMissing, "allow-missing", false, "one-shot: skip streams that do not exist instead of failing (follow always waits for them)")
	fs.DurationVar(&cfg.Linger, "linger", cfg.Linger, "how long the producer lets a batch fill before sending it")
	fs.StringVar(&cfg.Compression, "compression", cfg.Compression, "record batch compression: none, gzip, snappy, lz4 or zstd")
	fs.DurationVar(&cfg.ClaimIdle, "claim-idle", 0, "take over entries other consumers of the group left pending this long (XAUTOCLAIM); 0 never")
	fs.IntVar(&cfg.MaxFields, "max-fields", cfg.MaxFields, "warn (once per stream) when an entry has more fields than this, which kafka-to-redis with the same --max-fields refuses; the entry is written all the same")
	fs.IntVar(&cfg.BatchBytes, "batch-bytes", cfg.BatchBytes, "about the most entry data (field names and values, in bytes) one read takes from a stream; --batch-size still bounds the entries; 0 no bound")
	fs.StringVar(&cfg.OnError, "on-error", cfg.OnError, "an entry Kafka refuses (too large, timestamp out of range): fail, skip or dead-letter")
	fs.StringVar(&cfg.DeadLetterStream, "dead-letter-stream", "", "with --on-error dead-letter: the stream (in the source Redis) receiving refused entries")
	fs.StringVar((*string)(&cfg.Timestamp), "timestamp", string(cfg.Timestamp), "record timestamp: id (the entry ID's milliseconds) or now (the time it is produced)")
	fs.StringVar(&cfg.OnGap, "on-gap", cfg.OnGap, "entries trimmed from a stream before they were mirrored: fail (needs XGROUP SETID on the streams, checked at start), or skip to count them as lost and go on")
	fs.BoolVar(&cfg.TrimSource, "trim-source", false, "trim each stream, at start and after each commit, up to what Kafka confirmed and was checkpointed, never past an entry another consumer group has not delivered and acknowledged (needs XTRIM)")
	completeEnums(c, "earliest", "latest")
	completeStreams(a, c, &o.conn, "stream")
	completeStreams(a, c, &o.conn, "dead-letter-stream")
	completeTopics(a, c, &o.conn, "topic")
	return c, &o
}

func (o *redisToKafkaOptions) execute(a *app, c *cobra.Command) error {
	m, names, err := o.build(a, c)
	if err != nil {
		return err
	}
	return a.executeMirror(c, o.parts(), m, names)
}

func (o *redisToKafkaOptions) parts() commandParts {
	return commandParts{direction: "redis-to-kafka", conn: &o.conn, run: &o.run, metrics: &o.metrics, redis: &o.cfg.Redis, kafka: &o.cfg.Kafka}
}

// build resolves the flags into the mirror they describe, connecting to
// nothing; its error is the command's.
func (o *redisToKafkaOptions) build(a *app, c *cobra.Command) (runner, setting.Names, error) {
	names := o.run.settingNames(flagNames(redisToKafkaFlags))
	o.run.defaultName(func() string { return r2k.DefaultName(o.cfg) })
	m, err := buildMirror(a, c, o.parts(), names, func() []string { return o.problems(c) },
		func() (*r2k.Mirror, error) { return r2k.New(c.Context(), o.cfg) })
	return m, names, err
}

func (o *redisToKafkaOptions) runFlags() *runFlags { return &o.run }

// problems are those of the flags that r2k.Config cannot see.
func (o *redisToKafkaOptions) problems(c *cobra.Command) []string {
	return append(o.run.validate(), emptyFlags(c, "group")...)
}
