package mirror

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/checkpoint"
)

// TopicSpec says whether and how missing topics are created.
type TopicSpec struct {
	Create            bool
	Partitions        int32 // -1: the broker's default
	ReplicationFactor int16 // -1: the broker's default
}

// EnsureTopics checks that every topic exists, creating missing ones when
// spec.Create is set, and returns each topic's partition count.
func EnsureTopics(ctx context.Context, cl *kgo.Client, topics []string, spec TopicSpec) (map[string]int32, error) {
	// One client, one metadata cache: what the wait below learns about
	// new topics is what later calls on cl see.
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, Transient(fmt.Errorf("list topics: %w", err))
	}
	counts := map[string]int32{}
	var missing []string
	for _, t := range topics {
		d, ok := details[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
		case d.Err != nil:
			return nil, fmt.Errorf("topic %q: %w", t, d.Err)
		default:
			counts[t] = int32(len(d.Partitions))
		}
	}
	if len(missing) == 0 {
		return counts, nil
	}
	if !spec.Create {
		sort.Strings(missing)
		return nil, fmt.Errorf("topic %q does not exist; create it, or pass --create-topic [--partitions N] to let xmirror create it", missing[0])
	}
	resp, err := adm.CreateTopics(ctx, spec.Partitions, spec.ReplicationFactor, nil, missing...)
	if err != nil {
		return nil, Transient(fmt.Errorf("create topics %v: %w", missing, err))
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			msg := fmt.Sprintf("create topic %q: %v", r.Topic, r.Err)
			if r.ErrMessage != "" {
				msg += " (" + r.ErrMessage + ")"
			}
			return nil, errors.New(msg)
		}
	}
	// A new topic takes a moment to get leaders; wait until every partition
	// has one, and read the counts back (a topic created concurrently by
	// another process has its own). The metadata is asked for afresh each
	// time: the client's cache still holds these topics as missing from the
	// look above, for its metadata min age.
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range missing {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	deadline := time.Now().Add(topicReadyTimeout)
	for {
		resp, err := cl.RequestCachedMetadata(ctx, req, time.Nanosecond)
		ready := err == nil && len(resp.Topics) == len(missing)
		if ready {
			for _, t := range resp.Topics {
				if t.ErrorCode != 0 || len(t.Partitions) == 0 || t.Topic == nil {
					ready = false
					err = kerr.ErrorForCode(t.ErrorCode)
					break
				}
				for _, p := range t.Partitions {
					if p.ErrorCode != 0 || p.Leader < 0 {
						ready = false
						err = kerr.ErrorForCode(p.ErrorCode)
					}
				}
				counts[*t.Topic] = int32(len(t.Partitions))
			}
		}
		if ready {
			return counts, nil
		}
		if time.Now().After(deadline) {
			why := "no leader"
			if err != nil {
				why = err.Error()
			}
			return nil, fmt.Errorf("topics %v were created but are not ready after %s (%s); check the broker's log", missing, topicReadyTimeout, why)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// topicReadyTimeout bounds the wait for a new topic's partition leaders.
const topicReadyTimeout = 15 * time.Second

// EndOffsets lists the current end offset of every partition of topics.
func EndOffsets(ctx context.Context, adm *kadm.Client, topics []string) (map[checkpoint.TopicPartition]int64, error) {
	listed, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, Transient(fmt.Errorf("list end offsets of %v: %w", topics, err))
	}
	ends := map[checkpoint.TopicPartition]int64{}
	var firstErr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("end offset of %s/%d: %w", o.Topic, o.Partition, o.Err)
			}
			return
		}
		ends[checkpoint.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
	})
	return ends, firstErr
}

// Kafka's defaults, for a broker whose configuration cannot be read.
const (
	// defaultMessageMaxBytes is the broker's message.max.bytes default,
	// the max.message.bytes of a topic that sets none.
	defaultMessageMaxBytes = 1048588
	// defaultSocketRequestMaxBytes is the broker's
	// socket.request.max.bytes default: the largest request it reads.
	defaultSocketRequestMaxBytes = 100 << 20
	// produceRequestOverhead is what a produce request adds around one
	// record batch (request header, client ID, topic name, array
	// lengths), rounded up: a batch of the topic's limit is sent alone in
	// a request no larger than socket.request.max.bytes.
	produceRequestOverhead = 1024
	// maxKafkaBytes is the most franz-go lets a request, a response or a
	// record batch be.
	maxKafkaBytes = 1 << 30
)

// RecordLimit is the largest record batch a topic accepts, and which
// setting says so, for the message that refuses a record beyond it.
type RecordLimit struct {
	Topic string
	Bytes int32
	// Setting is the configuration the limit comes from: the topic's
	// max.message.bytes, the broker's message.max.bytes (the topic sets
	// none) or the broker's socket.request.max.bytes (the topic allows
	// more than a request may carry).
	Setting string
}

// Settings a RecordLimit comes from.
const (
	SettingTopic   = "max.message.bytes"
	SettingBroker  = "message.max.bytes"
	SettingRequest = "socket.request.max.bytes"
)

// Hint says how to let a record batch of size bytes through.
func (l RecordLimit) Hint(size int) string {
	if l.Setting == SettingRequest {
		return "the topic allows larger records than the broker reads in one request: raise the broker's socket.request.max.bytes (server.properties, then a restart), or remove or trim the entry"
	}
	// Rounded up to a MiB, room for a little more than this one entry.
	want := (int64(size) + 1<<20) &^ (1<<20 - 1)
	own := "raise the topic's max.message.bytes"
	if l.Setting == SettingBroker {
		own = "the topic has no max.message.bytes of its own: set one"
	}
	return fmt.Sprintf("%s (kafka-configs --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config max.message.bytes=%d), or remove or trim the entry", own, l.Topic, want)
}

// TopicLimits are the record sizes some topics accept.
type TopicLimits struct {
	// Topics is each topic's record batch limit.
	Topics map[string]RecordLimit
	// RequestBytes is the largest request the brokers read
	// (socket.request.max.bytes, the smallest among them).
	RequestBytes int32
}

// Largest is the largest record batch limit among the topics.
func (l TopicLimits) Largest() int32 {
	var n int32
	for _, t := range l.Topics {
		n = max(n, t.Bytes)
	}
	return n
}

// ReadTopicLimits reads what the topics and brokers accept: each
// topic's max.message.bytes (which, when the topic sets none, is the
// broker's message.max.bytes), capped so that a batch of that size fits one
// request the brokers read (socket.request.max.bytes). Producing batches up
// to these limits is never refused for size, and a single record beyond
// its topic's limit can be refused on its own, before it is sent.
//
// A broker whose configuration this user may not read is taken to have
// Kafka's default request limit.
func ReadTopicLimits(ctx context.Context, adm *kadm.Client, topics []string) (TopicLimits, error) {
	limits := TopicLimits{Topics: map[string]RecordLimit{}, RequestBytes: defaultSocketRequestMaxBytes}
	brokerMessageMax := int32(0)
	if brokers, err := adm.ListBrokers(ctx); err == nil && len(brokers) > 0 {
		configs, err := adm.DescribeBrokerConfigs(ctx, brokers.NodeIDs()...)
		if err == nil {
			request := int32(0)
			for _, rc := range configs {
				if rc.Err != nil {
					continue
				}
				if v, ok := configBytes(rc.Configs, "socket.request.max.bytes"); ok && (request == 0 || v < request) {
					request = v
				}
				if v, ok := configBytes(rc.Configs, "message.max.bytes"); ok && (brokerMessageMax == 0 || v < brokerMessageMax) {
					brokerMessageMax = v
				}
			}
			if request > 0 {
				limits.RequestBytes = request
			}
		}
	}
	if brokerMessageMax == 0 {
		brokerMessageMax = defaultMessageMaxBytes
	}
	configs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return TopicLimits{}, Transient(fmt.Errorf("describe topic configs of %v: %w", topics, err))
	}
	for _, rc := range configs {
		if rc.Err != nil {
			return TopicLimits{}, fmt.Errorf("topic %q: describe configs: %w", rc.Name, rc.Err)
		}
		l := RecordLimit{Topic: rc.Name, Bytes: brokerMessageMax, Setting: SettingBroker}
		for _, c := range rc.Configs {
			if v, ok := configBytes([]kadm.Config{c}, "max.message.bytes"); ok {
				l.Bytes = v
				if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
					l.Setting = SettingTopic
				}
			}
		}
		if most := limits.RequestBytes - produceRequestOverhead; l.Bytes > most {
			l.Bytes, l.Setting = most, SettingRequest
		}
		limits.Topics[rc.Name] = l
	}
	for _, t := range topics {
		if _, ok := limits.Topics[t]; !ok {
			limits.Topics[t] = RecordLimit{Topic: t, Bytes: min(brokerMessageMax, limits.RequestBytes-produceRequestOverhead), Setting: SettingBroker}
		}
	}
	return limits, nil
}

// configBytes is the value of the config key as a positive byte count
// franz-go can use.
func configBytes(configs []kadm.Config, key string) (int32, bool) {
	for _, c := range configs {
		if c.Key != key || c.Value == nil {
			continue
		}
		v, err := strconv.ParseInt(*c.Value, 10, 64)
		if err != nil || v <= 0 {
			return 0, false
		}
		return int32(min(v, maxKafkaBytes)), true
	}
	return 0, false
}

// ConsumerReadBytes is the largest fetch response a consumer of records
// up to recordBytes must be able to read: a broker returns a partition's
// first batch whole even when it is larger than the fetch's byte limits,
// next to up to FetchMaxBytes (50 MiB by default) of other data. It is
// never below franz-go's default of 100 MiB.
func ConsumerReadBytes(recordBytes int32) int32 {
	const fetchMaxBytes, defaultRead = 50 << 20, 100 << 20
	return int32(min(max(int64(defaultRead), int64(recordBytes)+fetchMaxBytes+produceRequestOverhead), maxKafkaBytes))
}

// Topic configs that bound a record's CreateTime (Kafka 3.6+; the broker
// refuses a whole record batch with INVALID_TIMESTAMP for one record out
// of range) and the older one that bounded both sides.
const (
	configTimestampType       = "message.timestamp.type"
	configTimestampAfterMax   = "message.timestamp.after.max.ms"
	configTimestampBeforeMax  = "message.timestamp.before.max.ms"
	configTimestampDifference = "message.timestamp.difference.max.ms"
)

// TimestampPolicy is what a topic accepts as a record's timestamp.
type TimestampPolicy struct {
	// LogAppendTime: the broker stamps records itself and accepts any.
	LogAppendTime bool
	// AfterMaxMs and BeforeMaxMs bound how far a timestamp may be ahead
	// of or behind the broker's clock; math.MaxInt64 is no bound.
	AfterMaxMs, BeforeMaxMs int64
	// AfterKey and BeforeKey are the configs the bounds came from, for
	// messages.
	AfterKey, BeforeKey string
}

// Unbounded is a policy that accepts every timestamp.
func Unbounded() TimestampPolicy {
	return TimestampPolicy{AfterMaxMs: math.MaxInt64, BeforeMaxMs: math.MaxInt64}
}

// TimestampPolicies reads each topic's timestamp configs. It is a request
// of its own, next to ReadTopicLimits', so each can change without the other.
func TimestampPolicies(ctx context.Context, adm *kadm.Client, topics []string) (map[string]TimestampPolicy, error) {
	configs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, Transient(fmt.Errorf("describe topic configs of %v: %w", topics, err))
	}
	policies := make(map[string]TimestampPolicy, len(configs))
	for _, rc := range configs {
		if rc.Err != nil {
			return nil, fmt.Errorf("topic %q: describe configs: %w", rc.Name, rc.Err)
		}
		values := map[string]string{}
		for _, c := range rc.Configs {
			if c.Value != nil {
				values[c.Key] = *c.Value
			}
		}
		policies[rc.Name] = timestampPolicy(values)
	}
	return policies, nil
}

// timestampPolicy reads the configs of one topic; a bound that is missing
// or unreadable is no bound (the broker's reply still catches it).
func timestampPolicy(values map[string]string) TimestampPolicy {
	p := Unbounded()
	if strings.EqualFold(values[configTimestampType], "LogAppendTime") {
		p.LogAppendTime = true
		return p
	}
	bound := func(key string) (int64, bool) {
		v, err := strconv.ParseInt(values[key], 10, 64)
		return v, err == nil && v >= 0
	}
	if v, ok := bound(configTimestampAfterMax); ok {
		p.AfterMaxMs, p.AfterKey = v, configTimestampAfterMax
	} else if v, ok := bound(configTimestampDifference); ok {
		p.AfterMaxMs, p.AfterKey = v, configTimestampDifference
	}
	if v, ok := bound(configTimestampBeforeMax); ok {
		p.BeforeMaxMs, p.BeforeKey = v, configTimestampBeforeMax
	} else if v, ok := bound(configTimestampDifference); ok {
		p.BeforeMaxMs, p.BeforeKey = v, configTimestampDifference
	}
	return p
}

// clockSkewMargin is how much earlier than a topic's timestamp bound
// xmirror refuses a record itself (a tenth of the bound when that is
// less): the bound is checked against this host's clock, the broker
// checks against its own, and a record the broker refuses takes its whole
// record batch down with it.
const clockSkewMargin = time.Minute

func skewMargin(bound int64) int64 { return min(clockSkewMargin.Milliseconds(), bound/10) }

// check refuses a timestamp ts (Unix ms) the topic would refuse at now,
// with a margin for clock differences (see clockSkewMargin).
func (p TimestampPolicy) check(ts, now int64) error {
	if p.LogAppendTime {
		return nil
	}
	if p.AfterMaxMs != math.MaxInt64 {
		if margin := skewMargin(p.AfterMaxMs); ts-now > p.AfterMaxMs-margin {
			return fmt.Errorf("%w: the record's timestamp %d (%s) is %s ahead of this host's clock; the topic accepts at most %s (%s=%d), and xmirror refuses from %s on to leave %s for clock differences",
				kerr.InvalidTimestamp, ts, formatMs(ts), msDuration(ts-now), msDuration(p.AfterMaxMs), p.AfterKey, p.AfterMaxMs, msDuration(p.AfterMaxMs-margin), msDuration(margin))
		}
	}
	if p.BeforeMaxMs != math.MaxInt64 {
		if margin := skewMargin(p.BeforeMaxMs); now-ts > p.BeforeMaxMs-margin {
			return fmt.Errorf("%w: the record's timestamp %d (%s) is %s behind this host's clock; the topic accepts at most %s (%s=%d), and xmirror refuses from %s on to leave %s for clock differences",
				kerr.InvalidTimestamp, ts, formatMs(ts), msDuration(now-ts), msDuration(p.BeforeMaxMs), p.BeforeKey, p.BeforeMaxMs, msDuration(p.BeforeMaxMs-margin), msDuration(margin))
		}
	}
	return nil
}

func formatMs(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// msDuration is ms as a duration, saturated rather than overflowing.
func msDuration(ms int64) time.Duration {
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ms) * time.Millisecond
}
