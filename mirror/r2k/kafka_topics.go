package r2k

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

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/setting"
)

// TopicSpec says whether and how missing topics are created.
type TopicSpec struct {
	Create            bool
	Partitions        int32 // -1: the broker's default
	ReplicationFactor int16 // -1: the broker's default
	// Denied, when set, turns a refusal by Kafka's authorizer into an
	// error naming the ACL to grant (endpoint.Kafka.Denied).
	Denied func(err error, operation, resource, name string) error
}

// EnsureTopics checks that every topic exists, creating missing ones when
// spec.Create is set, and returns each topic's partition count.
func EnsureTopics(ctx context.Context, cl *kgo.Client, topics []string, spec TopicSpec) (map[string]int32, error) {
	denied := spec.Denied
	if denied == nil {
		denied = func(err error, _, _, _ string) error { return err }
	}
	// One client, one metadata cache: what the wait below learns about
	// new topics is what later calls on cl see.
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil && endpoint.IsDenied(err) {
		// The refusal covers the whole request: ask topic by topic to
		// name the one refused.
		for _, t := range topics {
			if _, terr := adm.ListTopics(ctx, t); terr != nil && endpoint.IsDenied(terr) {
				return nil, denied(fmt.Errorf("list topics: %w", terr), "Describe", endpoint.KafkaTopic, t)
			}
		}
		return nil, fmt.Errorf("list topics %v: %w", topics, err)
	}
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("list topics: %w", err))
	}
	counts := map[string]int32{}
	var missing []string
	for _, t := range topics {
		d, ok := details[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
		case d.Err != nil:
			return nil, denied(fmt.Errorf("topic %q: %w", t, d.Err), "Describe", endpoint.KafkaTopic, t)
		default:
			counts[t] = int32(len(d.Partitions))
		}
	}
	if len(missing) == 0 {
		return counts, nil
	}
	if !spec.Create {
		sort.Strings(missing)
		return nil, setting.Errorf("topic %q does not exist; create it, or pass {CreateTopic} [{Partitions} N] to let xmirror create it", missing[0])
	}
	resp, err := adm.CreateTopics(ctx, spec.Partitions, spec.ReplicationFactor, nil, missing...)
	if err != nil {
		return nil, mirror.Transient(fmt.Errorf("create topics %v: %w", missing, err))
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			if endpoint.IsDenied(r.Err) {
				return nil, denied(fmt.Errorf("create topic %q: %w", r.Topic, r.Err), "Create", endpoint.KafkaTopic, r.Topic)
			}
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
// of its own, next to kafkatopic.ReadLimits', so each can change without the other.
func TimestampPolicies(ctx context.Context, adm *kadm.Client, topics []string) (map[string]TimestampPolicy, error) {
	configs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, kafkatopic.DescribeFailed(topics, err)
	}
	policies := make(map[string]TimestampPolicy, len(configs))
	for _, rc := range configs {
		if rc.Err != nil {
			return nil, &kafkatopic.DescribeError{Topic: rc.Name, Err: rc.Err}
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
