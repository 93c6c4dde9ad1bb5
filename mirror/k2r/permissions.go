package k2r

import (
	"strings"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
)

// permissionRun stands for the run part of an order key (K2ROrderKey),
// which each run draws anew: ACL rules match such keys by pattern.
const permissionRun = "check"

// RedisPermissions are the commands a run of cfg sends to Redis, each on
// the real key it touches (the commands its scripts call included), for a
// check of a user's ACL rules: the README's least-privilege rules are
// these. cfg needs its Name, Topics and Stream; a Stream with {partition}
// is checked for partition 0 of each topic, whose keys stand for the
// others'. XADD on the dead-letter stream is there with OnErrorDeadLetter.
func RedisPermissions(cfg Config) []endpoint.RedisCommand {
	out := endpoint.RedisConnectionCommands()
	out = append(out, checkpoint.LeaseCommands(checkpoint.KindKafkaToRedis, cfg.Name)...)
	out = append(out, checkpoint.DescriptorCommands(checkpoint.KindKafkaToRedis, cfg.Name)...)
	add := func(rule, what, key string, args ...string) {
		out = append(out, endpoint.RedisCommand{Rule: rule, Args: args, Key: key, What: what})
	}
	add("multi", "", "", "MULTI")
	add("exec", "", "", "EXEC")
	add("unwatch", "", "", "UNWATCH")
	for _, s := range DestinationStreams(cfg) {
		ck := checkpoint.K2RKey(cfg.Name, s)
		guard := checkpoint.K2RGuardKey(cfg.Name, s)
		add("xadd", "stream", s, "XADD", s, "*", "f", "v")
		add("xrange", "stream", s, "XRANGE", s, "-", "+", "COUNT", "1")
		add("xlen", "stream", s, "XLEN", s)
		add("xdel", "stream", s, "XDEL", s, "0-1")
		add("xsetid", "stream", s, "XSETID", s, "0-1")
		add("xinfo|stream", "stream", s, "XINFO", "STREAM", s)
		add("type", "stream", s, "TYPE", s)
		add("exists", "stream", s, "EXISTS", s)
		add("del", "stream", s, "DEL", s)
		add("watch", "stream", s, "WATCH", s)
		add("eval", "stream", s, "EVAL", "return 0", "1", s)
		add("type", "checkpoint", ck, "TYPE", ck)
		add("hgetall", "checkpoint", ck, "HGETALL", ck)
		add("hget", "checkpoint", ck, "HGET", ck, "version")
		add("hmget", "checkpoint", ck, "HMGET", ck, "version", "kind")
		add("hset", "checkpoint", ck, "HSET", ck, "version", "2")
		add("hsetnx", "checkpoint", ck, "HSETNX", ck, "partitions", "")
		add("hexists", "checkpoint", ck, "HEXISTS", ck, "version")
		add("hdel", "checkpoint", ck, "HDEL", ck, "f")
		add("hkeys", "checkpoint", ck, "HKEYS", ck)
		add("hincrby", "checkpoint", ck, "HINCRBY", ck, "entries", "0")
		add("watch", "checkpoint", ck, "WATCH", ck)
		add("eval", "checkpoint", ck, "EVAL", "return 0", "1", ck)
		add("set", "guard key", guard, "SET", guard, "1")
		add("get", "guard key", guard, "GET", guard)
		add("del", "guard key", guard, "DEL", guard)
		add("watch", "guard key", guard, "WATCH", guard)
		add("eval", "guard key", guard, "EVAL", "return 0", "1", guard)
	}
	// Order keys are named anew by each run: granted by the pattern of
	// every run of this mirror.
	order := checkpoint.K2ROrderKey(cfg.Name, permissionRun, 1)
	orders := endpoint.ACLPattern(strings.TrimSuffix(order, permissionRun+":1")) + "*"
	for _, c := range [][]string{{"blpop", "BLPOP", order, "1"}, {"lpush", "LPUSH", order, "1"}, {"pexpire", "PEXPIRE", order, "1000"}} {
		out = append(out, endpoint.RedisCommand{Rule: c[0], Args: c[1:], Key: order, What: "order key", KeyPattern: orders})
	}
	if cfg.OnError == mirror.OnErrorDeadLetter && cfg.DeadLetterStream != "" {
		d := cfg.DeadLetterStream
		add("type", "dead-letter stream", d, "TYPE", d)
		add("xadd", "dead-letter stream", d, "XADD", d, "*", "f", "v")
	}
	return out
}

// DestinationStreams are the streams cfg's topics map to, each once, in
// the order of the topics; with {partition} in Stream, those of partition
// 0. A Stream that is no template is none.
func DestinationStreams(cfg Config) []string {
	tmpl, err := ParseStreamTemplate(cfg.Stream)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, t := range cfg.Topics {
		s := tmpl.Stream(t, 0)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// KafkaPermissions are the operations a run of cfg needs of Kafka:
// Describe (metadata, offsets) and Read (the records) on each topic. It
// reads partitions directly: no consumer group, no transaction.
func KafkaPermissions(cfg Config) []endpoint.KafkaPermission {
	var out []endpoint.KafkaPermission
	for _, t := range cfg.Topics {
		out = append(out,
			endpoint.KafkaPermission{Resource: endpoint.KafkaTopic, Name: t, Operation: endpoint.KafkaDescribe},
			endpoint.KafkaPermission{Resource: endpoint.KafkaTopic, Name: t, Operation: endpoint.KafkaRead})
	}
	return out
}
