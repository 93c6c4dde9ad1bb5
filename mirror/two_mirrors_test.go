package mirror_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/k2r"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/r2k"
	"github.com/xmirror/xmirror/mirror/setting"
)

// recorder is an Observer that keeps every event, for the test to read
// once the run returned.
type recorder struct {
	mu      sync.Mutex
	starts  []mirror.Start
	commits []mirror.Commit
	leases  []mirror.LeaseEvent
	retries []mirror.Retry
	started chan struct{} // closed at the first Started
}

func newRecorder() *recorder { return &recorder{started: make(chan struct{})} }

func (r *recorder) observer() *mirror.Observer {
	return &mirror.Observer{
		Started: func(s mirror.Start) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.starts = append(r.starts, s)
			if len(r.starts) == 1 {
				close(r.started)
			}
		},
		Committed: func(c mirror.Commit) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.commits = append(r.commits, c)
		},
		Retrying: func(rt mirror.Retry) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.retries = append(r.retries, rt)
		},
		Lease: func(e mirror.LeaseEvent) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.leases = append(r.leases, e)
		},
	}
}

// positions keys each position by its stream or partition: stream <s> is
// an entry ID, partition <topic>/<p> an offset.
func positions(ps []mirror.Position, into map[string]string) map[string]string {
	for _, p := range ps {
		if p.Stream != "" {
			into["stream "+p.Stream] = p.ID
		} else {
			into[fmt.Sprintf("partition %s/%d", p.Topic, p.Partition)] = strconv.FormatInt(p.Offset, 10)
		}
	}
	return into
}

// committed is the last position of each stream and partition the run's
// commits moved.
func (r *recorder) committed() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := map[string]string{}
	for _, c := range r.commits {
		positions(c.Positions(), all)
	}
	return all
}

// startedAt is where the run's Started said the checkpoint stood.
func (r *recorder) startedAt() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.starts) == 0 {
		return nil
	}
	return positions(r.starts[0].Positions, map[string]string{})
}

// check fails unless the run told r what its stats say: one Started with
// total (-1 for follow), commits whose entries add up to the stats and
// whose last running totals are the stats, and its lease, under leaseKey,
// taken then released.
func (r *recorder) check(t *testing.T, what string, stats mirror.Stats, total int64, leaseKey string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.starts) != 1 || r.starts[0].Total != total {
		t.Errorf("%s: Started events %+v; want one with Total %d", what, r.starts, total)
	}
	if len(r.commits) == 0 {
		t.Fatalf("%s: no Committed event for stats %+v", what, stats)
	}
	var sum int64
	for i, c := range r.commits {
		sum += c.Batch.Entries
		if i > 0 && c.Totals.Entries < r.commits[i-1].Totals.Entries {
			t.Errorf("%s: commit %d's totals went back: %d after %d", what, i, c.Totals.Entries, r.commits[i-1].Totals.Entries)
		}
		if c.Batch.Entries > 0 && len(c.Positions()) == 0 {
			t.Errorf("%s: commit %d of %d entries names no position", what, i, c.Batch.Entries)
		}
	}
	last := r.commits[len(r.commits)-1].Totals
	last.Elapsed, stats.Elapsed = 0, 0
	if last != stats {
		t.Errorf("%s: last commit's totals %+v; the run's stats %+v", what, last, stats)
	}
	if sum != stats.Entries {
		t.Errorf("%s: commits add up to %d entries; stats say %d", what, sum, stats.Entries)
	}
	var kinds []mirror.LeaseEventKind
	for _, e := range r.leases {
		kinds = append(kinds, e.Kind)
		if e.Key != leaseKey {
			t.Errorf("%s: lease event %v on key %q; want the mirror's own %q", what, e.Kind, e.Key, leaseKey)
		}
	}
	if fmt.Sprint(kinds) != fmt.Sprint([]mirror.LeaseEventKind{mirror.LeaseTaken, mirror.LeaseReleased}) {
		t.Errorf("%s: lease events %v; want [taken released]", what, kinds)
	}
	if len(r.retries) > 0 {
		t.Logf("%s: retried %d times, first: %+v", what, len(r.retries), r.retries[0])
	}
}

// pair is the two mirrors of one test and the data each one moves: r2k
// from three streams into one topic of three partitions, k2r from a topic
// of three partitions into a stream per partition.
type pair struct {
	rc    rueidis.Client
	kc    *kgo.Client
	redis endpoint.Redis
	kafka endpoint.Kafka

	r2kName    string
	r2kStreams []string
	r2kTopic   string
	r2kIDs     map[string][]string // stream -> the IDs XADD returned, in order

	k2rName    string
	k2rTopic   string
	k2rPrefix  string
	k2rStreams []string // the stream of partition p is k2rStreams[p], k2rPrefix-<p>
	k2rSent    []int    // records produced to each partition
}

const partitions = 3

func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{rc: testenv.Redis(t), kc: testenv.Kafka(t), r2kIDs: map[string][]string{}}
	var err error
	if p.redis, err = endpoint.ParseRedisURL(testenv.RedisURL()); err != nil {
		t.Fatal(err)
	}
	if p.kafka, err = endpoint.ParseBrokers(testenv.Brokers()); err != nil {
		t.Fatal(err)
	}
	p.r2kName, p.k2rName = testenv.Name(t, "r2k"), testenv.Name(t, "k2r")
	for range 3 {
		p.r2kStreams = append(p.r2kStreams, testenv.Stream(t, p.rc))
	}
	p.r2kTopic = testenv.Topic(t, p.kc, partitions)
	p.k2rTopic = testenv.Topic(t, p.kc, partitions)
	p.k2rPrefix = testenv.Name(t, "d")
	keys := []string{checkpoint.R2KKey(p.r2kName),
		checkpoint.LeaseKey(checkpoint.KindRedisToKafka, p.r2kName),
		checkpoint.LeaseKey(checkpoint.KindKafkaToRedis, p.k2rName)}
	for i := range partitions {
		s := p.k2rPrefix + "-" + strconv.Itoa(i)
		p.k2rStreams = append(p.k2rStreams, s)
		keys = append(keys, s, checkpoint.K2RKey(p.k2rName, s), checkpoint.K2RGuardKey(p.k2rName, s))
	}
	p.k2rSent = make([]int, partitions)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.rc.Do(ctx, p.rc.B().Del().Key(keys...).Build())
	})
	return p
}

func (p *pair) r2kConfig(follow bool, obs *mirror.Observer) r2k.Config {
	cfg := r2k.Defaults()
	cfg.Name = p.r2kName
	cfg.Redis, cfg.Kafka = p.redis, p.kafka
	cfg.Streams = p.r2kStreams
	cfg.Topic = p.r2kTopic // every stream into one topic
	cfg.BatchSize = 250
	cfg.Follow = follow
	cfg.Observer = obs
	return cfg
}

func (p *pair) k2rConfig(follow bool, obs *mirror.Observer) k2r.Config {
	cfg := k2r.Defaults()
	cfg.Name = p.k2rName
	cfg.Redis, cfg.Kafka = p.redis, p.kafka
	cfg.Topics = []string{p.k2rTopic}
	cfg.Stream = p.k2rPrefix + "-{partition}"
	cfg.BatchSize = 250
	cfg.Follow = follow
	cfg.Observer = obs
	return cfg
}

// addEntries XADDs n entries to each r2k stream, pipelined, with a plain
// client: fields n (per-stream sequence) and s (the stream).
func (p *pair) addEntries(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	for _, s := range p.r2kStreams {
		from := len(p.r2kIDs[s])
		cmds := make(rueidis.Commands, 0, n)
		for i := from; i < from+n; i++ {
			cmds = append(cmds, p.rc.B().Xadd().Key(s).Id("*").FieldValue().FieldValue("n", strconv.Itoa(i)).FieldValue("s", s).Build())
		}
		for _, r := range p.rc.DoMulti(ctx, cmds...) {
			id, err := r.ToString()
			if err != nil {
				t.Fatalf("XADD %s: %v", s, err)
			}
			p.r2kIDs[s] = append(p.r2kIDs[s], id)
		}
	}
}

// produce sends n records to each partition of the k2r topic with a plain
// producer: JSON {"p":"<partition>","seq":"<per-partition sequence>"}.
func (p *pair) produce(t *testing.T, n int) {
	t.Helper()
	cl := testenv.Kafka(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for part := range int32(partitions) {
		for i := p.k2rSent[part]; i < p.k2rSent[part]+n; i++ {
			v := fmt.Sprintf(`{"p":"%d","seq":"%d"}`, part, i)
			recs = append(recs, &kgo.Record{Topic: p.k2rTopic, Partition: part, Value: []byte(v)})
		}
		p.k2rSent[part] += n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", p.k2rTopic, err)
	}
}

func (p *pair) r2kTotal() (n int64) {
	for _, ids := range p.r2kIDs {
		n += int64(len(ids))
	}
	return n
}

func (p *pair) k2rTotal() (n int64) {
	for _, k := range p.k2rSent {
		n += int64(k)
	}
	return n
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// checkKafka fails unless the r2k topic holds every entry added exactly
// once, each stream's in its order and in one partition, and returns the
// offset after each partition's last record.
func (p *pair) checkKafka(t *testing.T) map[int32]int64 {
	t.Helper()
	recs := testenv.ReadTopicTo(t, p.r2kTopic, false)
	if int64(len(recs)) != p.r2kTotal() {
		t.Errorf("topic %s holds %d records; %d entries were added", p.r2kTopic, len(recs), p.r2kTotal())
	}
	got := map[string][]string{}
	partOf := map[string]int32{}
	next := map[int32]int64{}
	for _, r := range recs {
		s, id := header(r, mapping.HeaderStream), header(r, mapping.HeaderID)
		var v struct{ N, S string }
		if err := json.Unmarshal(r.Value, &v); err != nil || v.S != s || v.N != strconv.Itoa(len(got[s])) {
			t.Fatalf("record %d/%d (stream %q, id %s) holds %s; want entry %d of that stream", r.Partition, r.Offset, s, id, r.Value, len(got[s]))
		}
		if part, ok := partOf[s]; ok && part != r.Partition {
			t.Fatalf("stream %s is in partitions %d and %d", s, part, r.Partition)
		}
		partOf[s] = r.Partition
		got[s] = append(got[s], id)
		next[r.Partition] = r.Offset + 1
	}
	for _, s := range p.r2kStreams {
		if fmt.Sprint(got[s]) != fmt.Sprint(p.r2kIDs[s]) {
			t.Errorf("stream %s: topic holds %d records of its %d entries, or not once each in order", s, len(got[s]), len(p.r2kIDs[s]))
		}
	}
	return next
}

// r2kPositions is where r2k stands once it mirrored everything added: the
// last entry of each stream, the offset after the last record of each
// partition that has one (next).
func (p *pair) r2kPositions(next map[int32]int64) map[string]string {
	want := map[string]string{}
	for _, s := range p.r2kStreams {
		want["stream "+s] = p.r2kIDs[s][len(p.r2kIDs[s])-1]
	}
	for part, off := range next {
		want[fmt.Sprintf("partition %s/%d", p.r2kTopic, part)] = strconv.FormatInt(off, 10)
	}
	return want
}

// k2rPositions is where k2r stands once it mirrored everything produced:
// each partition at its end and, given the streams' last entries, each
// stream at its last.
func (p *pair) k2rPositions(last map[string]string) map[string]string {
	want := map[string]string{}
	for part, n := range p.k2rSent {
		want[fmt.Sprintf("partition %s/%d", p.k2rTopic, part)] = strconv.Itoa(n)
	}
	for s, id := range last {
		want["stream "+s] = id
	}
	return want
}

func samePositions(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// checkRedis fails unless each k2r stream holds its partition's records
// exactly once, in order, and returns each stream's last entry ID.
func (p *pair) checkRedis(t *testing.T) map[string]string {
	t.Helper()
	last := map[string]string{}
	for part, s := range p.k2rStreams {
		es, err := p.rc.Do(context.Background(), p.rc.B().Xrange().Key(s).Start("-").End("+").Build()).AsXRange()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", s, err)
		}
		if len(es) != p.k2rSent[part] {
			t.Errorf("stream %s holds %d entries; partition %d got %d records", s, len(es), part, p.k2rSent[part])
		}
		for i, e := range es {
			if e.FieldValues["p"] != strconv.Itoa(part) || e.FieldValues["seq"] != strconv.Itoa(i) {
				t.Fatalf("stream %s entry %d (%s) is %v; want p %d seq %d", s, i, e.ID, e.FieldValues, part, i)
			}
			last[s] = e.ID
		}
	}
	return last
}

// visible counts what the independent clients see arrived: committed
// records of the r2k topic (read_committed, to the last stable offsets,
// never waiting) and entries of the k2r streams.
func (p *pair) visible(t *testing.T, cons *kgo.Client, kafkaSeen *int64) (int64, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	f := cons.PollFetches(ctx)
	f.EachRecord(func(r *kgo.Record) {
		if !r.Attrs.IsControl() {
			*kafkaSeen++
		}
	})
	var inRedis int64
	for _, s := range p.k2rStreams {
		n, _ := p.rc.Do(context.Background(), p.rc.B().Xlen().Key(s).Build()).AsInt64()
		inRedis += n
	}
	return *kafkaSeen, inRedis
}

type result struct {
	stats mirror.Stats
	err   error
}

// runBoth builds both mirrors with New and runs them concurrently, each in
// a goroutine of its own; their results arrive on the channels.
func (p *pair) runBoth(t *testing.T, ctx context.Context, follow bool, r2kObs, k2rObs *recorder) (r2kDone, k2rDone chan result) {
	t.Helper()
	rm, err := r2k.New(ctx, p.r2kConfig(follow, r2kObs.observer()))
	if err != nil {
		t.Fatalf("r2k.New: %v", err)
	}
	km, err := k2r.New(ctx, p.k2rConfig(follow, k2rObs.observer()))
	if err != nil {
		t.Fatalf("k2r.New: %v", err)
	}
	if rm.Name() != p.r2kName || km.Name() != p.k2rName {
		t.Fatalf("names %q and %q; want %q and %q", rm.Name(), km.Name(), p.r2kName, p.k2rName)
	}
	r2kDone, k2rDone = make(chan result, 1), make(chan result, 1)
	go func() {
		st, err := rm.Run(ctx)
		r2kDone <- result{st, err}
	}()
	go func() {
		st, err := km.Run(ctx)
		k2rDone <- result{st, err}
	}()
	return r2kDone, k2rDone
}

func wait(t *testing.T, what string, done chan result, limit time.Duration) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(limit):
		t.Fatalf("%s did not return within %s", what, limit)
		return result{}
	}
}

// TestTwoMirrorsOfOppositeDirectionsInOneProcess runs a redis-to-kafka and a
// kafka-to-redis mirror side by side, from code: one-shot, then following
// until their context is cancelled. Each keeps its own name, lease,
// checkpoint, observer and stats, and every entry arrives exactly once.
func TestTwoMirrorsOfOppositeDirectionsInOneProcess(t *testing.T) {
	p := newPair(t)
	// A process-wide setting is the command's, never a mirror's.
	memLimit := debug.SetMemoryLimit(-1)
	r2kLease := checkpoint.LeaseKey(checkpoint.KindRedisToKafka, p.r2kName)
	k2rLease := checkpoint.LeaseKey(checkpoint.KindKafkaToRedis, p.k2rName)

	// One-shot: each mirrors what exists when it starts, and returns.
	p.addEntries(t, 1000)
	p.produce(t, 1000)
	ro, ko := newRecorder(), newRecorder()
	ctx := context.Background()
	begin := time.Now()
	r2kDone, k2rDone := p.runBoth(t, ctx, false, ro, ko)
	rr := wait(t, "one-shot r2k", r2kDone, time.Minute)
	kr := wait(t, "one-shot k2r", k2rDone, time.Minute)
	t.Logf("one-shot: both returned after %s (r2k %s, k2r %s)", time.Since(begin).Round(time.Millisecond), rr.stats.Elapsed.Round(time.Millisecond), kr.stats.Elapsed.Round(time.Millisecond))
	if rr.err != nil || kr.err != nil {
		t.Fatalf("one-shot runs: r2k %v, k2r %v", rr.err, kr.err)
	}
	for _, c := range []struct {
		what  string
		stats mirror.Stats
		want  int64
		rec   *recorder
		lease string
	}{
		{"one-shot r2k", rr.stats, p.r2kTotal(), ro, r2kLease},
		{"one-shot k2r", kr.stats, p.k2rTotal(), ko, k2rLease},
	} {
		if c.stats.Entries != c.want || c.stats.Unwritten != (mirror.Unwritten{}) {
			t.Errorf("%s: stats %+v; want %d entries, none unwritten", c.what, c.stats, c.want)
		}
		// A one-shot run's total is what its start snapshot holds: the
		// group's lag and pending entries (r2k), the partitions' end
		// minus start offsets (k2r).
		c.rec.check(t, c.what, c.stats, c.want, c.lease)
	}
	next := p.checkKafka(t)
	last := p.checkRedis(t)
	// The commits told each observer every position they stored.
	samePositions(t, "one-shot r2k commits", ro.committed(), p.r2kPositions(next))
	samePositions(t, "one-shot k2r commits", ko.committed(), p.k2rPositions(last))
	r2kAfterOneShot := p.r2kPositions(next)
	k2rAfterOneShot := p.k2rPositions(nil)

	// Follow: both resume from their checkpoints and mirror what is added
	// while they run, until the context is cancelled.
	cons := testenv.Kafka(t, kgo.ConsumeTopics(p.r2kTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	kafkaSeen := int64(0)
	oneShotR2K, oneShotK2R := p.r2kTotal(), p.k2rTotal()
	begin = time.Now()
	fctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ro, ko = newRecorder(), newRecorder()
	r2kDone, k2rDone = p.runBoth(t, fctx, true, ro, ko)
	for _, r := range []*recorder{ro, ko} {
		select {
		case <-r.started:
		case <-time.After(30 * time.Second):
			t.Fatal("a follow run was not set up within 30s")
		}
	}
	// Each lease is its mirror's own: a second run of either name in this
	// process is refused before it is set up, and the first runs go on.
	second := newRecorder()
	rm, err := r2k.New(ctx, p.r2kConfig(false, second.observer()))
	if err != nil {
		t.Fatal(err)
	}
	km, err := k2r.New(ctx, p.k2rConfig(false, second.observer()))
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []func(context.Context) (mirror.Stats, error){rm.Run, km.Run} {
		st, err := run(ctx)
		var su *mirror.SetUpError
		if !errors.As(err, &su) || !errors.Is(err, checkpoint.ErrLeaseHeld) || st.Entries != 0 {
			t.Fatalf("second run of a mirror that runs: %+v, %v; want a *mirror.SetUpError for checkpoint.ErrLeaseHeld", st, err)
		}
	}
	if len(second.starts) != 0 || len(second.commits) != 0 || len(second.leases) != 0 {
		t.Errorf("refused runs told their observer %d starts, %d commits, lease events %v", len(second.starts), len(second.commits), second.leases)
	}
	// Three rounds, each added once the one before arrived.
	for round := range 3 {
		p.addEntries(t, 100)
		p.produce(t, 100)
		testenv.Wait(t, 30*time.Second, fmt.Sprintf("round %d of the entries added during the follow runs to arrive", round), func() bool {
			inKafka, inRedis := p.visible(t, cons, &kafkaSeen)
			return inKafka >= p.r2kTotal() && inRedis >= p.k2rTotal()
		})
	}
	t.Logf("follow: everything arrived %s after the start", time.Since(begin).Round(time.Millisecond))
	begin = time.Now()
	cancel()
	rr = wait(t, "follow r2k", r2kDone, 15*time.Second)
	kr = wait(t, "follow k2r", k2rDone, 15*time.Second)
	t.Logf("follow: both returned %s after the cancel", time.Since(begin).Round(time.Millisecond))
	// A follow run returns its context's error, unwrapped, once it
	// drained what was in flight.
	if rr.err != context.Canceled || kr.err != context.Canceled {
		t.Fatalf("follow runs cancelled: r2k %v, k2r %v; want %v from both", rr.err, kr.err, context.Canceled)
	}
	for _, c := range []struct {
		what  string
		stats mirror.Stats
		want  int64
		rec   *recorder
		lease string
	}{
		{"follow r2k", rr.stats, p.r2kTotal() - oneShotR2K, ro, r2kLease},
		{"follow k2r", kr.stats, p.k2rTotal() - oneShotK2R, ko, k2rLease},
	} {
		if c.stats.Entries != c.want || c.stats.Unwritten != (mirror.Unwritten{}) {
			t.Errorf("%s: stats %+v; want %d entries, none unwritten", c.what, c.stats, c.want)
		}
		c.rec.check(t, c.what, c.stats, -1, c.lease)
	}
	// Each follow run started where the one-shot left its checkpoint (r2k's
	// also lists the partitions it has no record in yet).
	started := ro.startedAt()
	for k, v := range r2kAfterOneShot {
		if started[k] != v {
			t.Errorf("follow r2k started with %s at %q; the one-shot left it at %q", k, started[k], v)
		}
	}
	samePositions(t, "follow k2r started", ko.startedAt(), k2rAfterOneShot)
	next = p.checkKafka(t)
	last = p.checkRedis(t)
	samePositions(t, "follow r2k commits", ro.committed(), p.r2kPositions(next))
	samePositions(t, "follow k2r commits", ko.committed(), p.k2rPositions(last))

	// The checkpoints stand at the end: the last entry of every stream and
	// the offset after the last record of every partition, each mirror's
	// under its own name.
	rck, found, err := checkpoint.LoadR2K(ctx, p.rc, p.r2kName)
	if err != nil || !found {
		t.Fatalf("r2k checkpoint: found %v, %v", found, err)
	}
	for _, s := range p.r2kStreams {
		if ids := p.r2kIDs[s]; rck.Streams[s] != ids[len(ids)-1] {
			t.Errorf("r2k checkpoint of stream %s at %q; its last entry is %s", s, rck.Streams[s], ids[len(ids)-1])
		}
	}
	for part := range int32(partitions) {
		tp := checkpoint.TopicPartition{Topic: p.r2kTopic, Partition: part}
		if got, ok := rck.Partitions[tp]; !ok || got != next[part] {
			t.Errorf("r2k checkpoint of %s at %d (%v); the offset after its last record is %d", tp, got, ok, next[part])
		}
	}
	if rck.Entries != p.r2kTotal() || rck.Group != r2k.DefaultGroupPrefix+p.r2kName {
		t.Errorf("r2k checkpoint counts %d entries, group %q; want %d, %q", rck.Entries, rck.Group, p.r2kTotal(), r2k.DefaultGroupPrefix+p.r2kName)
	}
	for part, s := range p.k2rStreams {
		kck, found, err := checkpoint.LoadK2R(ctx, p.rc, p.k2rName, s)
		if err != nil || !found {
			t.Fatalf("k2r checkpoint of %s: found %v, %v", s, found, err)
		}
		tp := checkpoint.TopicPartition{Topic: p.k2rTopic, Partition: int32(part)}
		if len(kck.Partitions) != 1 || kck.Partitions[tp] != int64(p.k2rSent[part]) || kck.Entries != int64(p.k2rSent[part]) {
			t.Errorf("k2r checkpoint of %s: positions %v, %d entries; want %s at %d, %d entries", s, kck.Partitions, kck.Entries, tp, p.k2rSent[part], p.k2rSent[part])
		}
	}
	if got := debug.SetMemoryLimit(-1); got != memLimit {
		t.Errorf("the mirrors changed the process's memory limit from %d to %d", memLimit, got)
	}
	// Neither lease outlives its run.
	n, err := p.rc.Do(ctx, p.rc.B().Exists().Key(r2kLease, k2rLease).Build()).AsInt64()
	if err != nil || n != 0 {
		t.Errorf("leases left behind: %d, %v", n, err)
	}
}

// fields are the Field of each problem of err, which must be a
// *setting.ConfigError.
func fields(t *testing.T, err error) []string {
	t.Helper()
	var ce *setting.ConfigError
	if !errors.As(err, &ce) || !setting.IsConfig(err) {
		t.Fatalf("error %v (%T) is no *setting.ConfigError", err, err)
	}
	var fs []string
	for _, p := range ce.Problems {
		if p.Err == nil || p.Error() == "" {
			t.Errorf("problem of %s has no text", p.Field)
		}
		fs = append(fs, p.Field)
	}
	return fs
}

func TestTwoMirrorsConfigProblemsNameTheirFields(t *testing.T) {
	r2kTests := []struct {
		name string
		set  func(*r2k.Config)
		want []string // every problem's field, in the order found
	}{
		{"defaults need a name, the endpoints and streams", func(c *r2k.Config) { c.Redis, c.Kafka = endpoint.Redis{}, endpoint.Kafka{} },
			[]string{"Name", "Redis", "Kafka", "Streams"}},
		{"every field wrong", func(c *r2k.Config) {
			c.Name = ""
			c.BatchSize, c.MaxInFlight, c.Timeout, c.LeaseTTL = 0, mirror.MaxMaxInFlight+1, 0, time.Millisecond
			c.Streams = []string{"a", "a", ""}
			c.Topic = "{nope}"
			c.Format = "xml"
			c.Start = "soon"
			c.Partitions, c.ReplicationFactor = 0, -2
			c.ClaimIdle, c.Linger = -1, -1
			c.MaxFields, c.BatchBytes = 0, -1
			c.Compression = "brotli"
			c.OnError = "explode"
			c.Timestamp = "never"
			c.OnGap = "maybe"
		}, []string{"Name", "BatchSize", "MaxInFlight", "Timeout", "LeaseTTL", "Streams", "Streams", "Topic", "Format", "Start",
			"Partitions", "ReplicationFactor", "ClaimIdle", "Linger", "MaxFields", "BatchBytes", "Compression", "Timestamp", "OnError", "OnGap"}},
		{"raw without a value field, a dead-letter stream mirrored", func(c *r2k.Config) {
			c.Name, c.Streams = "m", []string{"a", "dead"}
			c.Format, c.ValueField = mapping.FormatRaw, ""
			c.OnError, c.DeadLetterStream = mirror.OnErrorDeadLetter, "dead"
		}, []string{"ValueField", "DeadLetterStream"}},
		{"a dead-letter stream without dead-letter", func(c *r2k.Config) {
			c.Name, c.Streams, c.DeadLetterStream = "m", []string{"a"}, "dead"
		}, []string{"DeadLetterStream"}},
		{"dead-letter without a stream", func(c *r2k.Config) {
			c.Name, c.Streams, c.OnError = "m", []string{"a"}, mirror.OnErrorDeadLetter
		}, []string{"DeadLetterStream"}},
	}
	for _, tt := range r2kTests {
		t.Run("r2k "+tt.name, func(t *testing.T) {
			cfg := r2k.Defaults()
			cfg.Redis, cfg.Kafka = testEndpoints(t)
			tt.set(&cfg)
			err := cfg.Validate()
			if got := fields(t, err); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("problems of %v\nnamed %v\nwant  %v", err, got, tt.want)
			}
			m, nerr := r2k.New(context.Background(), cfg)
			if m != nil || nerr == nil || nerr.Error() != err.Error() {
				t.Errorf("New: %v, %v; want no mirror and Validate's error %v", m, nerr, err)
			}
		})
	}

	k2rTests := []struct {
		name string
		set  func(*k2r.Config)
		want []string
	}{
		{"defaults need a name, the endpoints and topics", func(c *k2r.Config) { c.Redis, c.Kafka = endpoint.Redis{}, endpoint.Kafka{} },
			[]string{"Name", "Redis", "Kafka", "Topics"}},
		{"every field wrong", func(c *k2r.Config) {
			c.Name = ""
			c.BatchSize, c.MaxInFlight, c.Timeout, c.LeaseTTL = mirror.MaxBatchSize+1, 0, -time.Second, 0
			c.Topics = []string{"a topic", "t", "t"}
			c.Stream = "{nope}"
			c.ValueField = "v" // json takes no value field
			c.MaxFields, c.MaxLen = 0, -1
			c.Start = "soon"
			c.OnError = "explode"
			c.OnGap = "maybe"
			c.OnTopicRecreated = "shrug"
			c.PartitionCheck = 0
		}, []string{"Name", "BatchSize", "MaxInFlight", "Timeout", "LeaseTTL", "Topics", "Topics", "Stream", "ValueField",
			"MaxFields", "MaxLen", "Start", "OnError", "OnGap", "OnTopicRecreated", "PartitionCheck"}},
		{"raw with headers and no key field", func(c *k2r.Config) {
			c.Name, c.Topics = "m", []string{"t"}
			c.Format, c.Headers, c.KeyField = mapping.FormatRaw, true, ""
		}, []string{"ValueField", "Headers"}},
		{"an unknown format, dead-letter without a stream", func(c *k2r.Config) {
			c.Name, c.Topics = "m", []string{"t"}
			c.Format, c.OnError = "xml", mirror.OnErrorDeadLetter
		}, []string{"Format", "DeadLetterStream"}},
	}
	for _, tt := range k2rTests {
		t.Run("k2r "+tt.name, func(t *testing.T) {
			cfg := k2r.Defaults()
			cfg.Redis, cfg.Kafka = testEndpoints(t)
			tt.set(&cfg)
			err := cfg.Validate()
			if got := fields(t, err); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("problems of %v\nnamed %v\nwant  %v", err, got, tt.want)
			}
			m, nerr := k2r.New(context.Background(), cfg)
			if m != nil || nerr == nil || nerr.Error() != err.Error() {
				t.Errorf("New: %v, %v; want no mirror and Validate's error %v", m, nerr, err)
			}
		})
	}

	// The same settings, valid, make a mirror without a server.
	rc := r2k.Defaults()
	rc.Redis, rc.Kafka = testEndpoints(t)
	rc.Name, rc.Streams = "m", []string{"a"}
	if _, err := r2k.New(context.Background(), rc); err != nil {
		t.Errorf("r2k.New of a valid config: %v", err)
	}
	kc := k2r.Defaults()
	kc.Redis, kc.Kafka = testEndpoints(t)
	kc.Name, kc.Topics = "m", []string{"t"}
	if _, err := k2r.New(context.Background(), kc); err != nil {
		t.Errorf("k2r.New of a valid config: %v", err)
	}
}

// testEndpoints are endpoints that parse, for configurations that are
// validated but never run.
func testEndpoints(t *testing.T) (endpoint.Redis, endpoint.Kafka) {
	t.Helper()
	r, err := endpoint.ParseRedisURL(endpoint.DefaultRedisURL)
	if err != nil {
		t.Fatal(err)
	}
	k, err := endpoint.ParseBrokers(endpoint.DefaultBrokers)
	if err != nil {
		t.Fatal(err)
	}
	return r, k
}
