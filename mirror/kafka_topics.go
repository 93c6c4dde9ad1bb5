package mirror

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
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

// maxProducerBatchBytes is the largest record batch xmirror sends: Kafka's
// default max.message.bytes, about 1 MiB.
const maxProducerBatchBytes = 1 << 20

// BatchLimit is the record batch size the producer may use for topics: the
// smallest max.message.bytes among them, at most 1 MiB. Batches within the
// topic's limit are never refused whole, and a single record too large for
// it fails on its own, naming its entry.
func BatchLimit(ctx context.Context, adm *kadm.Client, topics []string) (int32, error) {
	configs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return 0, Transient(fmt.Errorf("describe topic configs of %v: %w", topics, err))
	}
	limit := int32(maxProducerBatchBytes)
	for _, rc := range configs {
		if rc.Err != nil {
			return 0, fmt.Errorf("topic %q: describe configs: %w", rc.Name, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key != "max.message.bytes" || c.Value == nil {
				continue
			}
			if v, err := strconv.ParseInt(*c.Value, 10, 32); err == nil && v > 0 && int32(v) < limit {
				limit = int32(v)
			}
		}
	}
	return limit, nil
}
