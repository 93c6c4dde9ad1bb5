package k2r

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/kafkatopic"
	"github.com/xmirror/xmirror/mirror/setting"
)

// internalPrefix starts the names of Kafka's internal topics
// (__consumer_offsets, __transaction_state) and, by convention, of the
// topics other tools keep for themselves: a regex takes them only when
// it starts with "^" + internalPrefix.
const internalPrefix = "__"

// topicPatterns are a mirror's TopicRegexes, compiled.
type topicPatterns struct {
	exprs []string
	res   []*regexp.Regexp
}

// compileTopicPatterns compiles exprs, adding a problem of TopicRegexes
// for each that is empty, given twice or no regular expression.
func compileTopicPatterns(ps *setting.Problems, exprs []string) topicPatterns {
	p := topicPatterns{exprs: exprs}
	ps.Unique("TopicRegexes", "topic regex", exprs)
	for _, e := range exprs {
		if e == "" {
			ps.Addf("TopicRegexes", "{TopicRegexes} must not be empty")
			continue
		}
		re, err := regexp.Compile(e)
		if err != nil {
			ps.Addf("TopicRegexes", "{TopicRegexes} %q is not a regular expression: %s", e, err.Error())
			continue
		}
		p.res = append(p.res, re)
	}
	return p
}

// any says whether there are patterns at all.
func (p topicPatterns) any() bool { return len(p.exprs) > 0 }

// match is the first expression that matches topic, and whether one does.
func (p topicPatterns) match(topic string) (string, bool) {
	for i := range p.res {
		if p.matches(i, topic) {
			return p.exprs[i], true
		}
	}
	return "", false
}

// matches says whether expression i matches topic.
func (p topicPatterns) matches(i int, topic string) bool {
	re := p.res[i]
	if strings.HasPrefix(topic, internalPrefix) && !strings.HasPrefix(re.String(), "^"+internalPrefix) {
		return false
	}
	return re.MatchString(topic)
}

// topicMatches are what the TopicRegexes of a Run matched, kept across
// its set-ups (a follow run is set up again when Redis lost writes, when
// it lost its lease, or when a topic it takes on needs a larger
// consumer).
//
// Every set-up lists the cluster's topics and takes on those the
// patterns match; a follow run looks again every Rescan (with the look
// for partitions added to its topics, see KafkaSource.checkPartitions).
// The topics of the first set-up are started as the Topics are, at
// Start; one found later was created during the run, and is mirrored
// from its log start whatever Start says. Each topic taken on goes
// through partitionSetup.add, as the Topics and the partitions added to
// them do: its starting positions and topic ID are stored in its
// streams' checkpoints before anything is consumed, and its records are
// written with their positions in one atomic step per batch.
type topicMatches struct {
	patterns topicPatterns
	explicit map[string]bool // the Topics
	// atStart are the topics the first set-up found (nil before it).
	atStart map[string]bool
	// leftOut is the problem last warned about per matched topic that a
	// follow run could not take on.
	leftOut map[string]string
}

// find lists the topics of details the patterns match that are not
// Topics, sorted. The first time, it logs each pattern that matches
// nothing.
func (tm *topicMatches) find(details kadm.TopicDetails, follow bool, log interface{ Info(string, ...any) }) []string {
	var out []string
	for t, d := range details {
		if _, ok := tm.patterns.match(t); ok && !tm.explicit[t] && d.Err == nil {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	if tm.atStart == nil {
		for i, e := range tm.patterns.exprs {
			hit := false
			for t := range details {
				if hit = tm.patterns.matches(i, t); hit {
					break
				}
			}
			switch {
			case hit:
			case follow:
				log.Info("no topic matches the regex yet; mirroring those that appear", "topic_regex", e)
			default:
				log.Info("no topic matches the regex; nothing to mirror for it", "topic_regex", e)
			}
		}
	}
	return out
}

// record notes the topics of a set-up: those of the first are its
// start.
func (tm *topicMatches) record(topics []string) {
	if tm.atStart != nil {
		return
	}
	tm.atStart = map[string]bool{}
	for _, t := range topics {
		tm.atStart[t] = true
	}
}

// startLatest says, per topic, whether a partition without a position
// starts at its last stable offset: with Start latest, for the Topics and
// the topics of the first set-up; a topic matched later is new, and all
// of it is mirrored.
func (tm *topicMatches) startLatest(cfg setupConfig) func(topic string) bool {
	latest := cfg.startLatest()
	return func(topic string) bool {
		return latest && (tm == nil || tm.explicit[topic] || tm.atStart[topic])
	}
}

// fromLogStart starts every partition without a position at its log
// start.
func fromLogStart(string) bool { return false }

// addMatched takes on the partitions of topics the patterns matched,
// byTopic, in a follow run: all at once and, when that fails other than
// for a moment (I/O), topic by topic, leaving out with a warning those
// that cannot be mirrored as configured (a key that is not a stream,
// PreserveIDs with several partitions feeding one stream, a checkpoint
// refused), so that a topic someone creates cannot stop the mirror; it
// is tried again at the next look. It returns the offsets to consume
// from, and the transient error of the first topic that had one.
func (k *partitionSetup) addMatched(ctx context.Context, src *KafkaSource, byTopic map[string][]checkpoint.TopicPartition, latest func(string) bool, ids map[string]string) (map[string]map[int32]kgo.Offset, error) {
	topics := slices.Sorted(maps.Keys(byTopic))
	var all []checkpoint.TopicPartition
	for _, t := range topics {
		all = append(all, byTopic[t]...)
	}
	consume, err := k.add(ctx, src, all, latest, ids)
	if err == nil {
		for _, t := range topics {
			delete(k.cfg.matches.leftOut, t)
		}
	}
	if err == nil || mirror.IsTransient(err) || ctx.Err() != nil {
		return consume, err
	}
	consume = map[string]map[int32]kgo.Offset{}
	var transient error
	for _, t := range topics {
		c, err := k.add(ctx, src, byTopic[t], latest, ids)
		switch {
		case err == nil:
			delete(k.cfg.matches.leftOut, t)
			for topic, ps := range c {
				consume[topic] = ps
			}
		case mirror.IsTransient(err) || ctx.Err() != nil:
			if transient == nil {
				transient = err
			}
		default:
			k.warnLeftOut(t, err)
		}
	}
	return consume, transient
}

// warnLeftOut warns, once per topic and problem, that a topic a pattern
// matched is left out.
func (k *partitionSetup) warnLeftOut(topic string, err error) {
	expr, _ := k.cfg.matches.patterns.match(topic)
	if k.cfg.matches.leftOut[topic] == err.Error() {
		k.log.Debug("topic matching a regex still left out", "topic", topic, "topic_regex", expr, "err", err)
		return
	}
	k.cfg.matches.leftOut[topic] = err.Error()
	k.log.Warn("topic matches a regex but cannot be mirrored as configured; it is left out, the other topics are mirrored, and it is tried again at every rescan", "topic", topic, "topic_regex", expr, "err", err)
}

// largerRecordsError stops a follow run that found a new topic whose
// records may be larger than its consumer reads (the read size is fixed
// when the consumer is made): the run is set up again, with a consumer
// for every topic it mirrors.
type largerRecordsError struct {
	topic        string
	limit, reads int32
}

func (e *largerRecordsError) Error() string {
	return fmt.Sprintf("topic %q accepts records of up to %d bytes, more than the consumer reads (%d)", e.topic, e.limit, e.reads)
}

// checkReadSize returns a *largerRecordsError when a topic of topics
// accepts records larger than the consumer reads. Limits it may not read
// are taken to be Kafka's defaults, as at set-up.
func (s *KafkaSource) checkReadSize(ctx context.Context, topics []string) error {
	limits, err := kafkatopic.ReadLimits(ctx, kadm.NewClient(s.admin), topics)
	if err != nil {
		s.log.Debug("cannot read the record size limits of new topics; assuming Kafka's defaults", "topics", topics, "err", err)
		return nil
	}
	for _, t := range topics {
		if l, ok := limits.Topics[t]; ok && kafkatopic.ConsumerReadBytes(l.Bytes) > s.readBytes {
			return &largerRecordsError{topic: t, limit: l.Bytes, reads: s.readBytes}
		}
	}
	return nil
}

// allTopics lists every topic of the cluster this user may describe,
// asked of the brokers rather than of the client's metadata cache, which
// keeps what it learnt for a few seconds: a topic created a moment ago is
// listed.
func allTopics(ctx context.Context, admin *kgo.Client) (kadm.TopicDetails, error) {
	req := kmsg.NewPtrMetadataRequest() // no topics named: every topic
	resp, err := req.RequestWith(ctx, admin)
	if err != nil {
		return nil, err
	}
	out := make(kadm.TopicDetails, len(resp.Topics))
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		d := kadm.TopicDetail{Topic: *t.Topic, ID: t.TopicID, IsInternal: t.IsInternal,
			Partitions: make(kadm.PartitionDetails, len(t.Partitions)), Err: kerr.ErrorForCode(t.ErrorCode)}
		for _, p := range t.Partitions {
			d.Partitions[p.Partition] = kadm.PartitionDetail{Topic: d.Topic, Partition: p.Partition, Leader: p.Leader,
				LeaderEpoch: p.LeaderEpoch, Replicas: p.Replicas, ISR: p.ISR, OfflineReplicas: p.OfflineReplicas, Err: kerr.ErrorForCode(p.ErrorCode)}
		}
		out[d.Topic] = d
	}
	return out, nil
}
