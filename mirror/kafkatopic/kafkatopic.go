// Package kafkatopic reads what both directions need to know of Kafka topics:
// the record sizes they accept (which size the producer of redis-to-kafka
// and the fetches of either direction's consumers) and where their
// partitions end.
package kafkatopic

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
)

// Kafka's defaults, for a broker whose configuration cannot be read.
const (
	// DefaultMessageMaxBytes is the broker's message.max.bytes default,
	// the max.message.bytes of a topic that sets none.
	DefaultMessageMaxBytes = 1048588
	// DefaultSocketRequestMaxBytes is the broker's
	// socket.request.max.bytes default: the largest request it reads.
	DefaultSocketRequestMaxBytes = 100 << 20
	// ProduceRequestOverhead is what a produce request adds around one
	// record batch (request header, client ID, topic name, array
	// lengths), rounded up: a batch of the topic's limit is sent alone in
	// a request no larger than socket.request.max.bytes.
	ProduceRequestOverhead = 1024
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

// Limits are the record sizes some topics accept.
type Limits struct {
	// Topics is each topic's record batch limit.
	Topics map[string]RecordLimit
	// RequestBytes is the largest request the brokers read
	// (socket.request.max.bytes, the smallest among them).
	RequestBytes int32
}

// Largest is the largest record batch limit among the topics.
func (l Limits) Largest() int32 {
	var n int32
	for _, t := range l.Topics {
		n = max(n, t.Bytes)
	}
	return n
}

// ReadLimits reads what the topics and brokers accept: each
// topic's max.message.bytes (which, when the topic sets none, is the
// broker's message.max.bytes), capped so that a batch of that size fits one
// request the brokers read (socket.request.max.bytes). Producing batches up
// to these limits is never refused for size, and a single record beyond
// its topic's limit can be refused on its own, before it is sent.
//
// A broker whose configuration this user may not read is taken to have
// Kafka's default request limit.
func ReadLimits(ctx context.Context, adm *kadm.Client, topics []string) (Limits, error) {
	limits := Limits{Topics: map[string]RecordLimit{}, RequestBytes: DefaultSocketRequestMaxBytes}
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
		brokerMessageMax = DefaultMessageMaxBytes
	}
	configs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return Limits{}, DescribeFailed(topics, err)
	}
	for _, rc := range configs {
		if rc.Err != nil {
			return Limits{}, &DescribeError{Topic: rc.Name, Err: rc.Err}
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
		if most := limits.RequestBytes - ProduceRequestOverhead; l.Bytes > most {
			l.Bytes, l.Setting = most, SettingRequest
		}
		limits.Topics[rc.Name] = l
	}
	for _, t := range topics {
		if _, ok := limits.Topics[t]; !ok {
			limits.Topics[t] = RecordLimit{Topic: t, Bytes: min(brokerMessageMax, limits.RequestBytes-ProduceRequestOverhead), Setting: SettingBroker}
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
	return int32(min(max(int64(defaultRead), int64(recordBytes)+fetchMaxBytes+ProduceRequestOverhead), maxKafkaBytes))
}

// EndOffsets lists the current end offset of every partition of topics.
func EndOffsets(ctx context.Context, adm *kadm.Client, topics []string) (map[checkpoint.TopicPartition]int64, error) {
	listed, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("list end offsets of %v: %w", topics, err))
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

// DescribeError is a topic whose configs the brokers did not describe
// (for want of the DescribeConfigs ACL, say).
type DescribeError struct {
	Topic string
	Err   error
}

func (e *DescribeError) Error() string {
	return fmt.Sprintf("topic %q: describe configs: %v", e.Topic, e.Err)
}

func (e *DescribeError) Unwrap() error { return e.Err }

// DescribeFailed is the error of a DescribeConfigs request over topics
// that failed as a whole: transient, unless the authorizer refused it
// (then, for a topic's ACL, it is a DescribeError of the first topic; a
// rerun does not cure either).
func DescribeFailed(topics []string, err error) error {
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed) && len(topics) > 0:
		return &DescribeError{Topic: topics[0], Err: err}
	case endpoint.IsDenied(err):
		// Another ACL than the topics' (the cluster's): not transient,
		// and not to be named as DescribeConfigs on a topic.
		return fmt.Errorf("describe topic configs of %v: %w", topics, err)
	}
	return mirror.Transient(fmt.Errorf("describe topic configs of %v: %w", topics, err))
}
