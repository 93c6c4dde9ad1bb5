package k2r

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// BadRecordError is a record its format cannot turn into an entry.
type BadRecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Format    mapping.Format
	Err       error
}

func (e *BadRecordError) Error() string { return e.RenderSettings(nil) }

// RenderSettings is the error's text with its settings named by names.
func (e *BadRecordError) RenderSettings(names setting.Names) string {
	return setting.Text(names, "topic %q partition %d offset %d: cannot decode the record as %s: %v; fix the producer, or use {OnError} skip or {OnError} dead-letter to go past it",
		e.Topic, e.Partition, e.Offset, e.Format, setting.Render(e.Err, names))
}
func (e *BadRecordError) Unwrap() error { return e.Err }

// IDBelowTopError is, under PreserveIDs, an entry whose ID is not in
// its stream (or, Taken, holds another entry there) but at or below the
// stream's last ID, which Redis refuses to add: it arrived out of order
// (taken over from another consumer, or from another stream sharing the
// partition), or another client writes to the stream.
type IDBelowTopError struct {
	Topic     string
	Partition int32
	Offset    int64
	ID        string
	Stream    string
	// Top is the stream's last ID when the entry was to be written.
	Top string
	// Taken: the stream holds another entry (other fields) under ID.
	Taken bool
}

func (e *IDBelowTopError) Error() string { return e.RenderSettings(nil) }

// RenderSettings is the error's text with its settings named by names.
func (e *IDBelowTopError) RenderSettings(names setting.Names) string {
	if e.Taken {
		return setting.Text(names, "topic %q partition %d offset %d: {PreserveIDs}: stream %q holds another entry (other fields) under entry ID %s, at or below its last ID %s, so this one cannot be added (another client writes to the stream); use {OnError} skip or {OnError} dead-letter to go past it",
			e.Topic, e.Partition, e.Offset, e.Stream, e.ID, e.Top)
	}
	return setting.Text(names, "topic %q partition %d offset %d: {PreserveIDs}: entry ID %s is not in stream %q but not above its last ID %s, so Redis cannot add it (it arrived out of order, or another client writes to the stream); use {OnError} skip or {OnError} dead-letter to go past it",
		e.Topic, e.Partition, e.Offset, e.ID, e.Stream, e.Top)
}

// partState is where one partition stands.
type partState struct {
	tp     checkpoint.TopicPartition
	stream int   // index of the destination stream
	next   int64 // next offset to read
	// stored is the position the checkpoint holds once every batch built
	// so far is applied (NoPosition: none yet); the next batch starts
	// from it.
	stored int64
	target int64 // one-shot: the snapshot's end
	done   bool  // one-shot: reached target
	halted bool  // a bad record stopped it (OnErrorFail)
	move   int   // index+1 of its move in the batch being built, 0 none
}

// KafkaSource reads the partitions of a kafka-to-redis mirror from the
// positions its checkpoints hold. Built by setUp.
type KafkaSource struct {
	cl        *kgo.Client
	parts     map[string]map[int32]*partState
	streams   []string
	mapping   recordMapping
	onError   string
	follow    bool
	batchSize int
	log       *slog.Logger
	remaining int // one-shot: partitions short of their target

	admin     *kgo.Client // metadata and probes; not owned
	kafkaName string
	retryFor  time.Duration   // one-shot: longest time without progress
	setup     *partitionSetup // follow: takes on partitions added to the topics
	// topicIDs are the IDs of the topics the positions are about (a topic
	// missing: its broker has none).
	topicIDs map[string]string
	// readBytes is the largest response the consumer reads, fixed when
	// it is made.
	readBytes int32
	// Timers (see the defaults); fields so tests can shorten them.
	pollWait, probeAfter, probeWait, stallWarn, partitionCheck time.Duration
	lastPartitionCheck, lastProbe, lastStallWarn               time.Time
	progressed                                                 bool // set by build and by probes

	fields  []mapping.Field // reused for every record
	touched []*partState
	failure error // a bad record under OnErrorFail, returned by the next Next

}

// Timer defaults of the source.
const (
	// defaultPollWait bounds one poll, so that a run that receives nothing
	// still checks its timers.
	defaultPollWait = time.Second
	// defaultProbeAfter is how long a one-shot run waits for records
	// before it looks for itself at partitions short of their snapshot
	// end: records the consumer skips without delivering them (aborted,
	// compacted away, markers) may be all that is left below the end.
	defaultProbeAfter = time.Second
	// defaultProbeWait bounds the probes of one look, so that a broker
	// that does not answer cannot hold a one-shot run past its limit.
	defaultProbeWait = 5 * time.Second
)

// Next returns the next batch: up to the batch size of records, decoded.
//
// One-shot, a partition is done once the consumer is past its snapshot
// end: it delivered a record at or past it, or, when nothing more comes,
// a fetch of its own finds nothing left to deliver below it. When no
// partition progressed for the retry limit, Next fails naming the
// partitions not done. In follow mode there is no such limit; a stalled
// run warns periodically, and partitions added to the topics are taken on.
func (s *KafkaSource) Next(ctx context.Context) (*Batch, error) {
	stallSince := time.Now() // the time waiting for the sink does not count
	for {
		if s.failure != nil {
			return nil, s.failure
		}
		if !s.follow && s.remaining == 0 {
			return nil, io.EOF
		}
		if s.follow && time.Since(s.lastPartitionCheck) >= s.partitionCheck {
			if err := s.checkPartitions(ctx); err != nil {
				return nil, err
			}
		}
		poll, cancel := context.WithTimeout(ctx, s.pollWait)
		fetches := s.cl.PollRecords(poll, s.batchSize)
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if fetches.IsClientClosed() {
			return nil, errors.New("kafka client closed")
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if t == "" && p == -1 && errors.Is(err, context.DeadlineExceeded) {
				return // the poll's own bound: nothing came
			}
			if ferr == nil {
				ferr = s.fetchError(ctx, t, p, err)
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		s.progressed = false
		b := s.build(fetches)
		if b.Len() > 0 {
			return b, nil
		}
		if !s.progressed {
			if s.follow {
				s.warnIfStalled(ctx, stallSince)
			} else {
				s.probeStalled(ctx, stallSince)
			}
		}
		if s.progressed {
			stallSince = time.Now()
			continue
		}
		if !s.follow && s.retryFor > 0 && time.Since(stallSince) >= s.retryFor {
			return nil, s.stallError(time.Since(stallSince))
		}
	}
}

// probeStalled, one-shot, looks at the partitions not done when nothing
// came for a while, and marks done those with nothing left to deliver
// below their snapshot end.
func (s *KafkaSource) probeStalled(ctx context.Context, stallSince time.Time) {
	if time.Since(stallSince) < s.probeAfter || time.Since(s.lastProbe) < s.probeAfter {
		return
	}
	s.lastProbe = time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.probeWait)
	defer cancel()
	var pause map[string][]int32
	for _, st := range s.waiting() {
		next, err := s.probe(ctx, st, st.target)
		if err != nil {
			s.log.Debug("probe", "topic", st.tp.Topic, "partition", st.tp.Partition, "err", err)
			continue
		}
		if next < st.target {
			continue // records to deliver: the consumer has them to come
		}
		s.log.Debug("partition past its snapshot end: nothing left below it to mirror", "topic", st.tp.Topic, "partition", st.tp.Partition, "at", st.next, "snapshot_end", st.target)
		st.done = true
		s.remaining--
		s.progressed = true
		if pause == nil {
			pause = map[string][]int32{}
		}
		pause[st.tp.Topic] = append(pause[st.tp.Topic], st.tp.Partition)
	}
	if pause != nil {
		s.cl.PauseFetchPartitions(pause)
	}
}

// waiting lists the one-shot partitions not done, in topic and partition
// order.
func (s *KafkaSource) waiting() []*partState {
	var out []*partState
	for _, ps := range s.parts {
		for _, st := range ps {
			if !st.done && !st.halted {
				out = append(out, st)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].tp, out[j].tp
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	return out
}

// stallError names the partitions a one-shot run is still waiting for.
func (s *KafkaSource) stallError(d time.Duration) error {
	const most = 5
	var b strings.Builder
	ws := s.waiting()
	for i, st := range ws {
		if i == most {
			fmt.Fprintf(&b, " and %d more", len(ws)-most)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (at offset %d, mirroring up to %d)", st.tp, st.next, st.target)
	}
	return fmt.Errorf("kafka %s: no progress for %s on %s; is the broker reachable?", s.kafkaName, d.Round(time.Second), b.String())
}

// warnIfStalled, in follow mode, warns every stallWarn while nothing
// progresses although records wait below a partition's last stable
// offset, or while the broker does not answer.
func (s *KafkaSource) warnIfStalled(ctx context.Context, stallSince time.Time) {
	if time.Since(stallSince) < s.stallWarn || time.Since(s.lastStallWarn) < s.stallWarn {
		return
	}
	s.lastStallWarn = time.Now()
	lookup, cancel := context.WithTimeout(ctx, s.probeWait)
	defer cancel()
	var topics []string
	for t := range s.parts {
		topics = append(topics, t)
	}
	stable, err := kadm.NewClient(s.admin).ListCommittedOffsets(lookup, topics...)
	if err == nil {
		err = stable.Error()
	}
	if err != nil {
		s.log.Warn("no progress; the broker does not answer (retrying)", "kafka", s.kafkaName, "for", time.Since(stallSince).Round(time.Second), "err", err)
		return
	}
	var behind []string
	for _, st := range s.waiting() {
		lso, _ := stable.Lookup(st.tp.Topic, st.tp.Partition)
		if st.next >= lso.Offset {
			continue
		}
		if next, err := s.probe(lookup, st, lso.Offset); err == nil && next >= lso.Offset {
			continue // only records it skips (aborted, markers, compacted)
		}
		behind = append(behind, fmt.Sprintf("%s (at offset %d, end %d)", st.tp, st.next, lso.Offset))
	}
	if len(behind) > 0 {
		s.log.Warn("no progress although records are waiting; is the broker reachable? (retrying)", "kafka", s.kafkaName,
			"for", time.Since(stallSince).Round(time.Second), "partitions", strings.Join(behind, ", "))
	}
}

// probeBytes bounds the response of one probe.
const probeBytes = 1 << 20

// probe fetches st's partition itself, read_committed, from st.next, and
// returns the offset of the first record the consumer would deliver as an
// entry, or, when there is none below end, an offset at or past end. It
// sees what the consumer passes silently: aborted records, transaction
// markers, records removed by compaction.
func (s *KafkaSource) probe(ctx context.Context, st *partState, end int64) (int64, error) {
	t, p := st.tp.Topic, st.tp.Partition
	details, err := kadm.NewClient(s.admin).ListTopics(ctx, t)
	if err != nil {
		return 0, err
	}
	d, ok := details[t]
	if !ok || d.Err != nil {
		return 0, fmt.Errorf("topic %q: %v", t, d.Err)
	}
	pd, ok := d.Partitions[p]
	if !ok || pd.Err != nil || pd.Leader < 0 {
		return 0, fmt.Errorf("%s: no leader (%v)", st.tp, pd.Err)
	}
	at := st.next
	for at < end {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxBytes = probeBytes
		req.IsolationLevel = 1
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = t, d.ID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, at, probeBytes
		rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := s.admin.Broker(int(pd.Leader)).Request(ctx, req)
		if err != nil {
			return 0, err
		}
		fr := resp.(*kmsg.FetchResponse)
		if err := kerr.ErrorForCode(fr.ErrorCode); err != nil {
			return 0, err
		}
		var part *kmsg.FetchResponseTopicPartition
		for i := range fr.Topics {
			if ft := &fr.Topics[i]; ft.Topic == t || ft.TopicID == d.ID {
				for j := range ft.Partitions {
					if ft.Partitions[j].Partition == p {
						part = &ft.Partitions[j]
					}
				}
			}
		}
		if part == nil {
			return 0, fmt.Errorf("%s: not in the fetch response", st.tp)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			Offset: at, IsolationLevel: kgo.ReadCommitted(), Topic: t, Partition: p,
		}, part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return 0, fp.Err
		}
		for _, r := range fp.Records {
			if r.Offset >= at {
				return r.Offset, nil
			}
		}
		if next <= at {
			return at, nil // nothing there (yet)
		}
		at = next
	}
	return at, nil
}

// checkPartitions, in follow mode, takes on the partitions added to the
// topics since the run started, and with TopicRegexes the topics created
// since that match: mirrored from their log start, their position stored
// at once. A failure to look is retried at the next check; a partition
// added to a topic that cannot be mirrored as configured stops the run,
// a new topic that cannot is left out with a warning (see addMatched).
func (s *KafkaSource) checkPartitions(ctx context.Context) error {
	s.lastPartitionCheck = time.Now()
	// Bounded by the check's own interval, and never shorter than a
	// probe: a short Rescan must not starve the set-up of a new topic.
	lookup, cancel := context.WithTimeout(ctx, max(s.partitionCheck, s.probeWait))
	defer cancel()
	var topics []string
	for t := range s.parts {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	matches := s.setup.cfg.matches
	patterns := matches != nil && matches.patterns.any()
	var details kadm.TopicDetails
	var err error
	if patterns {
		// Every topic, for those created since that match.
		details, err = allTopics(lookup, s.admin)
	} else {
		details, err = kadm.NewClient(s.admin).ListTopics(lookup, topics...)
	}
	if err != nil {
		s.log.Warn("cannot look for partitions added to the topics; trying again later", "kafka", s.kafkaName, "err", err)
		return nil
	}
	var added []checkpoint.TopicPartition
	ids := map[string]string{}
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil {
			continue
		}
		// Partitions of a topic created again under its name are not
		// more of the same: its offsets started over.
		if err := s.checkTopicID(t, formatTopicID(d.ID)); err != nil {
			return err
		}
		ids[t] = formatTopicID(d.ID)
		for _, p := range d.Partitions.Numbers() {
			if s.parts[t][p] == nil {
				added = append(added, checkpoint.TopicPartition{Topic: t, Partition: p})
			}
		}
	}
	if len(added) > 0 {
		consume, err := s.setup.add(lookup, s, added, fromLogStart, ids)
		if err != nil {
			if mirror.IsTransient(err) || ctx.Err() != nil {
				s.log.Warn("partitions were added to the topics but cannot be set up yet; trying again later", "partitions", len(added), "err", err)
				return nil
			}
			return fmt.Errorf("partitions added to the topics during the run: %w", err)
		}
		s.log.Info("mirroring partitions added to the topics during the run", "partitions", fmt.Sprint(added))
		s.cl.AddConsumePartitions(consume)
	}
	if patterns {
		return s.takeOnNewTopics(lookup, details)
	}
	return nil
}

// takeOnNewTopics takes on the topics of details that the patterns match
// and the source does not read yet: created during the run, or left out
// before. Each is mirrored from its log start.
func (s *KafkaSource) takeOnNewTopics(lookup context.Context, details kadm.TopicDetails) error {
	fresh := map[string][]checkpoint.TopicPartition{}
	ids := map[string]string{}
	for _, t := range s.setup.cfg.matches.find(details, true, s.log) {
		d := details[t]
		if s.parts[t] != nil || len(d.Partitions) == 0 {
			continue
		}
		for _, p := range d.Partitions.Numbers() {
			fresh[t] = append(fresh[t], checkpoint.TopicPartition{Topic: t, Partition: p})
		}
		ids[t] = formatTopicID(d.ID)
	}
	if len(fresh) == 0 {
		return nil
	}
	topics := slices.Sorted(maps.Keys(fresh))
	// The consumer reads responses of the size the topics known at set-up
	// need: a topic that accepts larger records needs a consumer of its
	// own, which setting the mirror up again makes.
	if err := s.checkReadSize(lookup, topics); err != nil {
		return err
	}
	consume, err := s.setup.addMatched(lookup, s, fresh, fromLogStart, ids)
	if err != nil {
		s.log.Warn("new topics match the regexes but cannot be set up yet; trying again later", "topics", topics, "err", err)
	}
	if len(consume) == 0 {
		return nil
	}
	var taken []string
	for t := range consume {
		taken = append(taken, t)
	}
	slices.Sort(taken)
	s.log.Info("mirroring new topics matching the regexes from their first record", "topics", taken)
	s.cl.AddConsumePartitions(consume)
	return nil
}

// checkTopicID wraps a *checkpoint.TopicRecreatedError when topic now has
// another ID than the one its positions are about ("" unknown).
func (s *KafkaSource) checkTopicID(topic, id string) error {
	old := s.topicIDs[topic]
	if old == "" || id == "" || old == id {
		return nil
	}
	key := ""
	for _, stream := range s.streams {
		for _, tp := range s.setup.feeds[stream] {
			if tp.Topic == topic && key == "" {
				key = checkpoint.K2RKey(s.setup.cfg.Name, stream)
			}
		}
	}
	return topicRecreated(&checkpoint.TopicRecreatedError{Key: key, Topic: topic, Recorded: old, Current: id})
}

// topicRecreated is err, which wraps a *checkpoint.TopicRecreatedError,
// with what to do about it.
func topicRecreated(err error) error {
	return setting.Errorf("%w; to mirror the new topic from its start, run with {OnTopicRecreated} restart; to keep the old checkpoint, give this mirror another {Name}", err)
}

// lookupTopicID asks the broker for topic's ID now (see topicIDs); found
// is false when the topic does not exist.
func (s *KafkaSource) lookupTopicID(ctx context.Context, topic string) (id string, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.probeWait)
	defer cancel()
	ids, err := topicIDs(ctx, s.admin, []string{topic})
	id, found = ids[topic]
	return id, found, err
}

// topicIDs asks the broker for the topics' IDs now ("" for a broker
// without IDs), bypassing the client's metadata cache, which may still
// hold a topic deleted and created again meanwhile. A topic that does not
// exist is left out.
func topicIDs(ctx context.Context, admin *kgo.Client, topics []string) (map[string]string, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, admin)
	if err != nil {
		return nil, err
	}
	ids := map[string]string{}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			continue
		case err != nil:
			return nil, fmt.Errorf("topic %q: %w", *t.Topic, err)
		}
		ids[*t.Topic] = formatTopicID(t.TopicID)
	}
	return ids, nil
}

// awaitTopic waits, until ctx ends, for topic to exist again after it was
// deleted during a follow run, looking every second.
func (s *KafkaSource) awaitTopic(ctx context.Context, topic string) (id string, found bool, err error) {
	s.log.Warn("the topic was deleted during the run; waiting for it to be created again, then mirroring it from its start", "kafka", s.kafkaName, "topic", topic, "on_topic_recreated", OnTopicRecreatedRestart)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", false, ctx.Err()
		case <-tick.C:
		}
		id, found, err = s.lookupTopicID(ctx, topic)
		switch {
		case err != nil:
			s.log.Debug("looking for a deleted topic", "topic", topic, "err", err)
		case found:
			return id, true, nil
		}
	}
}

func (s *KafkaSource) fetchError(ctx context.Context, t string, p int32, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if s.admin != nil && (errors.Is(err, kerr.UnknownTopicID) || errors.Is(err, kerr.UnknownTopicOrPartition)) {
		// Deleted, or deleted and created again: the topic's ID now
		// tells which.
		id, found, lerr := s.lookupTopicID(ctx, t)
		if lerr == nil && !found && s.follow && s.setup.cfg.OnTopicRecreated == OnTopicRecreatedRestart {
			// Deleted, to be created again (or not yet): a follow run
			// that restarts recreated topics waits for it.
			id, found, lerr = s.awaitTopic(ctx, t)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if lerr == nil && found {
			if rerr := s.checkTopicID(t, id); rerr != nil {
				return rerr
			}
		}
	}
	if endpoint.IsDenied(err) {
		return s.setup.cfg.Kafka.Denied(fmt.Errorf("kafka: fetch topic %q partition %d: %w", t, p, err), "Read", endpoint.KafkaTopic, t)
	}
	st := s.parts[t][p]
	if errors.Is(err, kerr.OffsetOutOfRange) && st != nil {
		return setting.Errorf("topic %q partition %d: offset %d is no longer in the log: records were deleted (retention) before they were mirrored, or the topic was recreated; restart to see the gap ({OnGap} skip accepts it)", t, p, st.next)
	}
	switch {
	case errors.Is(err, kerr.UnknownTopicID):
		return fmt.Errorf("kafka: fetch topic %q partition %d: %w; the topic was deleted and created again during the run (its topic ID changed), so its offsets started over; run again: the checkpoint is checked against the new topic", t, p, err)
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return fmt.Errorf("kafka: fetch topic %q partition %d: %w; the topic existed when the run started, so it was deleted during the run; run again once it exists", t, p, err)
	}
	return fmt.Errorf("kafka: fetch topic %q partition %d: %w", t, p, err)
}

// build decodes polled records into a batch.
func (s *KafkaSource) build(fetches kgo.Fetches) *Batch {
	b := &Batch{}
	writes := make([]*Write, len(s.streams))
	var preserved []*preservedWrite
	if s.mapping.preserveIDs {
		preserved = make([]*preservedWrite, len(s.streams))
	}
	s.touched = s.touched[:0]
	var pause map[string][]int32
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		st := s.parts[fp.Topic][fp.Partition]
		if st == nil || st.halted || st.done {
			return
		}
		from := st.next
		past := false // one-shot: a record at or past the target came
		for _, r := range fp.Records {
			if r.Offset < st.next {
				continue
			}
			if !s.follow && r.Offset >= st.target {
				// Whatever lay between was skipped by the consumer
				// (aborted, compacted away): nothing more to mirror.
				past = true
				break
			}
			if r.Attrs.IsControl() {
				// A transaction marker: nothing to copy, but the
				// position moves past it (stored with the next move).
				st.next = r.Offset + 1
				continue
			}
			fields, id, err := s.mapping.decode(r, s.fields[:0])
			s.fields = fields[:0]
			if err != nil {
				bad := &BadRecordError{Topic: fp.Topic, Partition: fp.Partition, Offset: r.Offset, Format: s.mapping.format, Err: err}
				switch s.onError {
				case mirror.OnErrorSkip:
					s.log.Warn("skipping a record that cannot be decoded", "on_error", mirror.OnErrorSkip, "topic", fp.Topic, "partition", fp.Partition, "offset", r.Offset, "err", err)
					b.skipped++
				case mirror.OnErrorDeadLetter:
					s.log.Warn("dead-lettering a record that cannot be decoded", "topic", fp.Topic, "partition", fp.Partition, "offset", r.Offset, "err", err)
					b.dead = append(b.dead, deadLetter{rec: r, reason: err.Error()})
					b.deadLettered++
				default:
					// What came before it still goes; nothing after.
					if s.failure == nil {
						s.failure = bad
					}
					st.halted = true
					return
				}
				s.moveFor(b, writes, st)
				st.next = r.Offset + 1
				continue
			}
			w := s.moveFor(b, writes, st)
			if w.Entries() == 0 {
				w.Reserve(len(fp.Records), len(fields))
			}
			w.AddEntry(id)
			if preserved != nil {
				p := preserved[st.stream]
				if p == nil {
					p = &preservedWrite{}
					preserved[st.stream] = p
				}
				p.recs = append(p.recs, r)
			}
			n := 0
			for _, f := range fields {
				w.AddField(f.Name, f.Value)
				n += len(f.Name) + len(f.Value)
			}
			w.Bytes += int64(n)
			b.bytes += n
			b.entries++
			st.next = r.Offset + 1
		}
		if st.next != from {
			s.progressed = true
		}
		if !s.follow && (st.next >= st.target || past) {
			// The snapshot end, or records past it, were reached.
			st.done = true
			s.progressed = true
			s.remaining--
			if pause == nil {
				pause = map[string][]int32{}
			}
			pause[fp.Topic] = append(pause[fp.Topic], fp.Partition)
		}
	})
	if pause != nil {
		s.cl.PauseFetchPartitions(pause)
	}
	for _, st := range s.touched {
		w := writes[st.stream]
		w.Moves[st.move-1].To = st.next
		st.stored = st.next
		st.move = 0
	}
	for i, w := range writes {
		if w == nil {
			continue
		}
		b.writes = append(b.writes, w)
		if preserved != nil {
			p := preserved[i]
			if p == nil {
				p = &preservedWrite{} // only records skipped by OnError
			}
			b.preserved = append(b.preserved, p)
		}
	}
	return b
}

// moveFor returns the write of st's stream in b, with a move for st.
func (s *KafkaSource) moveFor(b *Batch, writes []*Write, st *partState) *Write {
	w := writes[st.stream]
	if w == nil {
		w = &Write{Stream: s.streams[st.stream]}
		writes[st.stream] = w
	}
	if st.move == 0 {
		w.Moves = append(w.Moves, Move{Partition: st.tp, From: st.stored})
		st.move = len(w.Moves)
		s.touched = append(s.touched, st)
	}
	return w
}

// topics are the topics the source reads, sorted.
func (s *KafkaSource) topics() []string {
	return slices.Sorted(maps.Keys(s.parts))
}

// partitionStates are the partitions the source reads, in topic and
// partition order.
func (s *KafkaSource) partitionStates() []*partState {
	var out []*partState
	for _, parts := range s.parts {
		for _, st := range parts {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b *partState) int {
		if c := strings.Compare(a.tp.Topic, b.tp.Topic); c != 0 {
			return c
		}
		return int(a.tp.Partition - b.tp.Partition)
	})
	return out
}

// Commit has nothing to do: the positions were already moved by the sink,
// in the same step as the entries.
func (s *KafkaSource) Commit(context.Context, *Batch) error {
	return nil
}

// Close stops consuming.
func (s *KafkaSource) Close() {
	if s.cl != nil {
		s.cl.Close()
	}
}
