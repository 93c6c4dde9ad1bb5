package r2k

import (
	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
)

// RedisPermissions are the commands a run of cfg sends to Redis, each on
// the real key it touches (the commands its scripts call included), for a
// check of a user's ACL rules: the README's least-privilege rules are
// these. cfg needs its Name and Streams; a Group "" is the mirror's own
// default group (which group it is matters to no ACL). XAUTOCLAIM and
// XCLAIM are there with ClaimIdle, XADD on the dead-letter stream with
// OnErrorDeadLetter, SCAN with StreamPatterns, XTRIM (and TYPE, in the
// trim's script) on the streams with TrimSource.
func RedisPermissions(cfg Config) []endpoint.RedisCommand {
	group := cfg.Group
	if group == "" {
		group = DefaultGroupPrefix + cfg.Name
	}
	consumer := cfg.Name
	ck := checkpoint.R2KKey(cfg.Name)
	hold := checkpoint.R2KGapHoldKey(cfg.Name)
	out := endpoint.RedisConnectionCommands()
	out = append(out, checkpoint.LeaseCommands(checkpoint.KindRedisToKafka, cfg.Name)...)
	out = append(out, checkpoint.DescriptorCommands(checkpoint.KindRedisToKafka, cfg.Name)...)
	add := func(rule, what, key string, args ...string) {
		out = append(out, endpoint.RedisCommand{Rule: rule, Args: args, Key: key, What: what})
	}
	add("multi", "", "", "MULTI")
	add("exec", "", "", "EXEC")
	add("hgetall", "checkpoint", ck, "HGETALL", ck)
	add("hget", "checkpoint", ck, "HGET", ck, "version")
	add("hset", "checkpoint", ck, "HSET", ck, "version", "1")
	add("hsetnx", "checkpoint", ck, "HSETNX", ck, "version", "1")
	add("hexists", "checkpoint", ck, "HEXISTS", ck, "version")
	add("hincrby", "checkpoint", ck, "HINCRBY", ck, "entries", "0")
	add("eval", "checkpoint", ck, "EVAL", "return 0", "1", ck)
	for _, s := range cfg.Streams {
		add("xgroup|create", "stream", s, "XGROUP", "CREATE", s, group, "0", "MKSTREAM")
		add("xreadgroup", "stream", s, "XREADGROUP", "GROUP", group, consumer, "COUNT", "1", "STREAMS", s, ">")
		add("xread", "stream", s, "XREAD", "COUNT", "1", "STREAMS", s, "0-0")
		add("xack", "stream", s, "XACK", s, group, "0-1")
		add("xpending", "stream", s, "XPENDING", s, group)
		add("xinfo|stream", "stream", s, "XINFO", "STREAM", s)
		add("xinfo|groups", "stream", s, "XINFO", "GROUPS", s)
		add("xinfo|consumers", "stream", s, "XINFO", "CONSUMERS", s, group)
		add("xlen", "stream", s, "XLEN", s)
		add("xgroup|setid", "stream", s, "XGROUP", "SETID", s, group, "0-0")
		add("eval", "stream", s, "EVAL", "return 0", "1", s)
		if cfg.ClaimIdle > 0 {
			add("xautoclaim", "stream", s, "XAUTOCLAIM", s, group, consumer, "1000", "0-0", "COUNT", "1")
			add("xclaim", "stream", s, "XCLAIM", s, group, consumer, "1000", "0-1")
		}
		if cfg.TrimSource {
			add("xtrim", "stream", s, "XTRIM", s, "MINID", "0-0")
			add("type", "stream", s, "TYPE", s)
		}
	}
	// The streams StreamPatterns match are looked for with SCAN, which
	// names no key (the streams found are the keys above, once known).
	for _, p := range cfg.StreamPatterns {
		add("scan", "", "", "SCAN", "0", "MATCH", p, "TYPE", "stream", "COUNT", "1000")
	}
	// The gap check's hold key, which exists only inside its script.
	add("exists", "gap hold key", hold, "EXISTS", hold)
	add("hset", "gap hold key", hold, "HSET", hold, "f", "v")
	add("hgetall", "gap hold key", hold, "HGETALL", hold)
	add("del", "gap hold key", hold, "DEL", hold)
	add("eval", "gap hold key", hold, "EVAL", "return 0", "1", hold)
	if cfg.OnError == mirror.OnErrorDeadLetter && cfg.DeadLetterStream != "" {
		d := cfg.DeadLetterStream
		add("type", "dead-letter stream", d, "TYPE", d)
		add("xadd", "dead-letter stream", d, "XADD", d, "*", "f", "v")
	}
	return out
}

// KafkaPermissions are the operations a run of cfg needs of Kafka: on each
// destination topic Describe (metadata, offsets), Write (the records) and
// Read (the read_committed read-back of an interrupted run); Write on the
// transactional ID; with CreateTopic, Create on a topic that does not
// exist. cfg needs its Name, Streams and Topic.
func KafkaPermissions(cfg Config) []endpoint.KafkaPermission {
	var out []endpoint.KafkaPermission
	for _, t := range destinationTopics(cfg) {
		out = append(out,
			endpoint.KafkaPermission{Resource: endpoint.KafkaTopic, Name: t, Operation: endpoint.KafkaDescribe},
			endpoint.KafkaPermission{Resource: endpoint.KafkaTopic, Name: t, Operation: endpoint.KafkaWrite},
			endpoint.KafkaPermission{Resource: endpoint.KafkaTopic, Name: t, Operation: endpoint.KafkaRead},
			endpoint.KafkaPermission{Resource: endpoint.KafkaTopic, Name: t, Operation: endpoint.KafkaDescribeConfigs})
		if cfg.CreateTopic {
			out = append(out, endpoint.KafkaPermission{Resource: endpoint.KafkaTopic, Name: t, Operation: endpoint.KafkaCreate, IfMissing: true})
		}
	}
	if id, err := TransactionalID(cfg.Name); err == nil {
		out = append(out, endpoint.KafkaPermission{Resource: endpoint.KafkaTransactionalID, Name: id, Operation: endpoint.KafkaWrite})
	}
	return out
}

// destinationTopics are the topics cfg's streams map to, each once, in
// the order of the streams; a Topic that is no template is none.
func destinationTopics(cfg Config) []string {
	tmpl, err := mapping.ParseTemplate(cfg.Topic, "stream")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range cfg.Streams {
		t := tmpl.Expand(map[string]string{"stream": s})
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}
