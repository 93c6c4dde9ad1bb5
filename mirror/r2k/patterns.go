package r2k

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/lease"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// scanTimeout bounds one look for the streams matching the patterns: a
// SCAN of the whole keyspace per pattern, a thousand keys per round trip.
const scanTimeout = 30 * time.Second

// streamMatches are the streams the StreamPatterns of a Run matched and
// took on, kept across its set-ups (a follow run sets itself up again
// when it finds more, or when it lost its lease), and what was warned
// about.
//
// Every set-up looks for matches (SCAN MATCH <pattern> TYPE stream on
// every node the client knows). Those of the first look are taken on as
// the Streams are (their group made at Start); any found later appeared
// during the run, and are mirrored from their first entry whatever Start
// says. A follow run also looks every Rescan while it mirrors, and sets
// itself up again once it found new ones (watchMatches): the run as it
// stands was set up for its streams and topics (the transactional
// producer's limits, the partition counts and starting offsets stored in
// the checkpoint, the read-back of what an interrupted run left in Kafka,
// the consumer groups), and setting it up again takes the new streams on
// through each of those steps exactly as a stream known at start, rather
// than through a second, partial path that would have to get every one
// of them right again. What was in flight is drained first, and whatever
// could not be is read back at the new set-up, as after a restart.
type streamMatches struct {
	looked bool              // a look of an earlier set-up was taken on
	taken  map[string]string // stream -> the first pattern it matched
	// fromFirst are the streams found after the first look.
	fromFirst map[string]bool
	// warned is the problem last warned about per stream left out.
	warned map[string]string
}

func newStreamMatches() *streamMatches {
	return &streamMatches{taken: map[string]string{}, fromFirst: map[string]bool{}, warned: map[string]string{}}
}

// scanStreams lists, for each pattern, the stream keys it matches, on
// every node c knows (SCAN MATCH <pattern> TYPE stream COUNT 1000), each
// once.
func scanStreams(ctx context.Context, c rueidis.Client, patterns []string) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, scanTimeout)
	defer cancel()
	out := make(map[string][]string, len(patterns))
	for _, pattern := range patterns {
		seen := map[string]bool{}
		for addr, node := range c.Nodes() {
			cursor := uint64(0)
			for {
				e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Type("stream").Build()).AsScanEntry()
				if err != nil {
					return nil, mirror.ClassifyRedis(fmt.Errorf("look for streams matching %q (SCAN MATCH … TYPE stream) on %s: %w", pattern, addr, err))
				}
				for _, k := range e.Elements {
					if !seen[k] {
						seen[k] = true
						out[pattern] = append(out[pattern], k)
					}
				}
				if cursor = e.Cursor; cursor == 0 {
					break
				}
			}
		}
		slices.Sort(out[pattern])
	}
	return out, nil
}

// lookForMatches scans for the streams the patterns match and returns
// those that are neither Streams, nor the dead-letter stream (its dead
// letters would be mirrored again), nor taken on already, each with the
// first pattern (in StreamPatterns' order) that matched it.
func (r *run) lookForMatches(ctx context.Context, ms *streamMatches) (map[string]string, error) {
	cfg := &r.cfg
	found, err := scanStreams(ctx, r.rc, cfg.StreamPatterns)
	if err != nil {
		return nil, err
	}
	if !ms.looked {
		for _, p := range cfg.StreamPatterns {
			if len(found[p]) > 0 {
				continue
			}
			if cfg.Follow {
				r.log.Info("no stream matches the pattern yet; mirroring those that appear", "stream_pattern", p, "rescan", cfg.Rescan)
			} else {
				r.log.Info("no stream matches the pattern; nothing to mirror for it", "stream_pattern", p)
			}
		}
	}
	fresh := map[string]string{}
	for _, p := range cfg.StreamPatterns {
		for _, s := range found[p] {
			_, dup := fresh[s]
			_, taken := ms.taken[s]
			if dup || taken || slices.Contains(cfg.Streams, s) {
				continue
			}
			if cfg.OnError == mirror.OnErrorDeadLetter && s == cfg.DeadLetterStream {
				r.log.Debug("the dead-letter stream matches a pattern; it is not mirrored", "stream", s, "stream_pattern", p)
				continue
			}
			fresh[s] = p
		}
	}
	return fresh, nil
}

// mirrorable keeps, of the streams found (stream -> pattern), those
// whose topics this run can write to. A one-shot run refuses a stream
// whose topic name Kafka would refuse (a missing topic is refused by the
// set-up, as for the Streams): its exit code is its report. A follow run
// leaves such a stream out, and one whose topic does not exist (without
// CreateTopic), with a warning, and the other streams go on; the stream
// is looked at again at every rescan, so it is taken on once its topic
// exists. A failure to look at the topics is returned.
func (r *run) mirrorable(ctx context.Context, ms *streamMatches, found map[string]string) ([]string, error) {
	cfg := &r.cfg
	var ok, unknown []string
	unknownTopics := map[string]bool{}
	known := map[string]bool{}
	for _, t := range r.plan.topicOf {
		known[t] = true
	}
	for _, s := range slices.Sorted(maps.Keys(found)) {
		t := r.plan.tmpl.Expand(map[string]string{"stream": s})
		if err := mapping.ValidTopicName(t); err != nil {
			if !cfg.Follow {
				return nil, setting.Errorf("stream %q (matching {StreamPatterns} %q) maps to an invalid topic: %s; choose one with {Topic}, or a pattern that leaves it out", s, found[s], err.Error())
			}
			r.warnLeftOut(ms, s, found[s], t, setting.Errorf("it maps to an invalid topic: %s; choose one with {Topic}, or a pattern that leaves it out", err.Error()))
			continue
		}
		if !cfg.Follow || cfg.CreateTopic || known[t] {
			ok = append(ok, s)
			continue
		}
		unknown = append(unknown, s)
		unknownTopics[t] = true
	}
	if len(unknown) == 0 {
		return ok, nil
	}
	details, err := r.adm.ListTopics(ctx, slices.Sorted(maps.Keys(unknownTopics))...)
	if err != nil {
		return nil, r.cfg.Kafka.Explain(mirror.Transient(fmt.Errorf("look for the topics of streams matching the patterns: %w", err)))
	}
	for _, s := range unknown {
		t := r.plan.tmpl.Expand(map[string]string{"stream": s})
		if d, exists := details[t]; exists && d.Err == nil {
			ok = append(ok, s)
			continue
		}
		r.warnLeftOut(ms, s, found[s], t, setting.Errorf("its topic does not exist; create it, or pass {CreateTopic} to let xmirror create it: the stream is mirrored, from its first entry, once the topic exists"))
	}
	slices.Sort(ok)
	return ok, nil
}

// warnLeftOut warns, once per stream and problem (why), that a stream a
// pattern matched is left out.
func (r *run) warnLeftOut(ms *streamMatches, stream, pattern, topic string, why error) {
	if ms.warned[stream] == why.Error() {
		r.log.Debug("stream matching a pattern still left out", "stream", stream, "stream_pattern", pattern, "topic", topic, "reason", why)
		return
	}
	ms.warned[stream] = why.Error()
	r.log.Warn("stream matches a pattern but is left out; the other streams are mirrored", "stream", stream, "stream_pattern", pattern, "topic", topic, "reason", why)
}

// take adds the streams found to what the Run took on.
func (ms *streamMatches) take(streams []string, found map[string]string) {
	for _, s := range streams {
		ms.taken[s] = found[s]
		if ms.looked {
			ms.fromFirst[s] = true
		}
		delete(ms.warned, s)
	}
	ms.looked = true
}

// takeMatches looks for the streams the patterns match, takes on those
// it can mirror (see mirrorable) and sets the run up to read the Streams
// and every stream taken on in this Run so far, with their topics.
func (r *run) takeMatches(ctx context.Context, ms *streamMatches) error {
	found, err := r.lookForMatches(ctx, ms)
	if err != nil {
		return err
	}
	ok, err := r.mirrorable(ctx, ms, found)
	if err != nil {
		return err
	}
	ms.take(ok, found)
	r.streams = slices.Clone(r.cfg.Streams)
	r.matched = maps.Clone(ms.taken)
	r.fromFirst = maps.Clone(ms.fromFirst)
	for _, s := range slices.Sorted(maps.Keys(ms.taken)) {
		r.streams = append(r.streams, s)
		r.plan.topicOf[s] = r.plan.tmpl.Expand(map[string]string{"stream": s})
	}
	r.plan.topics = slices.Sorted(maps.Values(r.plan.topicOf))
	r.plan.topics = slices.Compact(r.plan.topics)
	return nil
}

// awaitMatches waits, looking every Rescan, until the patterns of a follow
// run without Streams match a stream it can mirror, and takes it on. A
// failure to look is logged and looked past.
func (r *run) awaitMatches(ctx context.Context, ms *streamMatches) error {
	tick := time.NewTicker(r.cfg.Rescan)
	defer tick.Stop()
	for len(r.streams) == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := r.takeMatches(ctx, ms); err != nil && ctx.Err() == nil {
			r.log.Warn("cannot look for streams matching the patterns; trying again", "in", r.cfg.Rescan, "err", err)
		}
	}
	r.log.Info("streams match the patterns; mirroring them from their first entry", "streams", r.streams)
	return nil
}

// newMatchesError ends a follow run that found new streams matching its
// patterns: it is set up again to mirror them (see streamMatches).
type newMatchesError struct{ streams []string }

func (e *newMatchesError) Error() string {
	return fmt.Sprintf("new streams %q match the stream patterns", e.streams)
}

func (e *newMatchesError) Unwrap() error { return lease.ErrSetUpAgain }

// watchMatches looks, every Rescan until ctx ends, for new streams the
// patterns match; once it took some on, it stops the run with a
// *newMatchesError, so the run drains and is set up again with them. A
// failure to look is logged and looked past: the streams already mirrored
// go on.
func (r *run) watchMatches(ctx context.Context, ms *streamMatches, stop context.CancelCauseFunc) {
	tick := time.NewTicker(r.cfg.Rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		found, err := r.lookForMatches(ctx, ms)
		var ok []string
		if err == nil {
			ok, err = r.mirrorable(ctx, ms, found)
		}
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("cannot look for new streams matching the patterns; mirroring on, trying again", "in", r.cfg.Rescan, "err", err)
			}
			continue
		}
		if len(ok) == 0 {
			continue
		}
		ms.take(ok, found)
		r.log.Info("new streams match the patterns; setting the mirror up again to mirror them from their first entry", "streams", ok)
		stop(&newMatchesError{streams: ok})
		return
	}
}
