package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// env holds the plain clients of both servers (no xmirror code) and what
// this run created, so it can all be deleted whatever happens.
type env struct {
	cfg     *config
	redis   rueidis.Client
	kafka   *kgo.Client
	adm     *kadm.Client
	brokers []string
	runID   string
	// cpu are the server processes whose CPU each measurement reads.
	cpu cpuParties

	mu      sync.Mutex
	streams map[string]bool
	topics  map[string]bool
	names   map[string]bool
	seq     int
}

// connect reaches both servers or says which one is missing.
func connect(ctx context.Context, cfg *config) (*env, error) {
	var b [4]byte
	rand.Read(b[:])
	e := &env{
		cfg:     cfg,
		brokers: strings.Split(cfg.brokers, ","),
		runID:   "xmirror-bench-" + hex.EncodeToString(b[:]),
		streams: map[string]bool{},
		topics:  map[string]bool{},
		names:   map[string]bool{},
	}
	opt, err := rueidis.ParseURL(cfg.redisURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL %s: %w", redact(cfg.redisURL), err)
	}
	opt.DisableCache = true
	opt.Dialer.Timeout = 3 * time.Second
	if e.redis, err = rueidis.NewClient(opt); err == nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = e.redis.Do(pctx, e.redis.B().Ping().Build()).Error()
		cancel()
		if err != nil {
			e.redis.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("Redis at %s does not answer (%v); start the servers with scripts/services.sh up (or set REDIS_URL)", redact(cfg.redisURL), err)
	}
	e.kafka, err = kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DialTimeout(3*time.Second))
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = e.kafka.Ping(pctx)
		cancel()
		if err != nil {
			e.kafka.Close()
		}
	}
	if err != nil {
		e.redis.Close()
		return nil, fmt.Errorf("Kafka at %s does not answer (%v); start the servers with scripts/services.sh up (or set KAFKA_BROKERS)", cfg.brokers, err)
	}
	e.adm = kadm.NewClient(e.kafka)
	e.cpu = findParties(ctx, e.redis)
	return e, nil
}

func (e *env) close() {
	e.kafka.Close()
	e.redis.Close()
}

// newName is a unique name, also used as an xmirror --name so its
// checkpoint and lease keys can be found and deleted.
func (e *env) newName(what string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	n := fmt.Sprintf("%s-%s-%d", e.runID, what, e.seq)
	e.names[n] = true
	return n
}

func (e *env) newStream(what string) string {
	n := e.newName(what)
	e.mu.Lock()
	e.streams[n] = true
	e.mu.Unlock()
	return n
}

func (e *env) newTopic(what string) string {
	n := e.newName(what)
	e.mu.Lock()
	e.topics[n] = true
	e.mu.Unlock()
	return n
}

// createTopic creates a one-partition topic (the broker refuses to create
// topics on its own).
func (e *env) createTopic(ctx context.Context, topic string) error {
	return e.createTopicWith(ctx, topic, 1)
}

// createTopicWith creates a topic of partitions partitions.
func (e *env) createTopicWith(ctx context.Context, topic string, partitions int32) error {
	resp, err := e.adm.CreateTopics(ctx, partitions, 1, nil, topic)
	if err == nil {
		var r kadm.CreateTopicResponse
		if r, err = resp.On(topic, nil); err == nil {
			err = r.Err
		}
	}
	if err != nil {
		return fmt.Errorf("create topic %q: %w", topic, err)
	}
	return nil
}

// topicRecords is the number of committed records in a topic, counted by
// reading it read_committed to its end offsets: xmirror r2k writes in
// transactions, whose markers take offsets too, and are written just after
// the commit returned (read_committed waits for them).
func (e *env) topicRecords(ctx context.Context, topic string) (int64, error) {
	starts, err := e.adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list start offsets of topic %q: %w", topic, err)
	}
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list last stable offsets of topic %q: %w", topic, err)
	}
	assign := map[int32]kgo.Offset{}
	want := map[int32]int64{}
	var ferr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ferr = o.Err
			return
		}
		s, _ := starts.Lookup(o.Topic, o.Partition)
		if o.Offset > s.Offset {
			assign[o.Partition] = kgo.NewOffset().At(s.Offset)
			want[o.Partition] = o.Offset
		}
	})
	if ferr != nil {
		return 0, fmt.Errorf("offsets of topic %q: %w", topic, ferr)
	}
	if len(want) == 0 {
		return 0, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(), kgo.FetchMaxBytes(64<<20))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var n int64
	for len(want) > 0 {
		f := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("count the records of topic %q: %w", topic, err)
		}
		if errs := f.Errors(); len(errs) > 0 {
			return 0, fmt.Errorf("count the records of topic %q: %w", topic, errs[0].Err)
		}
		f.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				n++
			}
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return n, nil
}

func (e *env) streamLen(ctx context.Context, stream string) (int64, error) {
	n, err := e.redis.Do(ctx, e.redis.B().Xlen().Key(stream).Build()).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("XLEN %q: %w", stream, err)
	}
	return n, nil
}

// dropTopic deletes a topic now: big backlogs take the broker's disk and
// page cache from the next case.
func (e *env) dropTopic(ctx context.Context, topic string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	resp, err := e.adm.DeleteTopics(ctx, topic)
	if err == nil {
		if r, rerr := resp.On(topic, nil); rerr == nil {
			err = r.Err
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete topic %q: %v\n", topic, err)
		return
	}
	e.mu.Lock()
	delete(e.topics, topic)
	e.mu.Unlock()
}

func (e *env) dropStream(ctx context.Context, stream string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// UNLINK: a million-entry stream is freed in the background.
	if err := e.redis.Do(ctx, e.redis.B().Unlink().Key(stream).Build()).Error(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete stream %q: %v\n", stream, err)
		return
	}
	e.mu.Lock()
	delete(e.streams, stream)
	e.mu.Unlock()
}

// dropKeys deletes xmirror's checkpoint and lease keys of a mirror name.
func (e *env) dropKeys(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := e.deleteMatching(ctx, "xmirror:*"+name+"*"); err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete xmirror keys of %q: %v\n", name, err)
		return
	}
	e.mu.Lock()
	delete(e.names, name)
	e.mu.Unlock()
}

func (e *env) deleteMatching(ctx context.Context, pattern string) error {
	c := e.redis
	cursor := uint64(0)
	for {
		entry, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
		if err != nil {
			return err
		}
		if len(entry.Elements) > 0 {
			if err := c.Do(ctx, c.B().Unlink().Key(entry.Elements...).Build()).Error(); err != nil {
				return err
			}
		}
		if entry.Cursor == 0 {
			return nil
		}
		cursor = entry.Cursor
	}
}

// cleanupAll deletes whatever this run created and has not deleted yet
// (after a failure or an interrupt).
func (e *env) cleanupAll() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.mu.Lock()
	var topics, streams []string
	for t := range e.topics {
		topics = append(topics, t)
	}
	for s := range e.streams {
		streams = append(streams, s)
	}
	e.mu.Unlock()
	for _, t := range topics {
		e.dropTopic(ctx, t)
	}
	for _, s := range streams {
		e.dropStream(ctx, s)
	}
	// Every stream, topic and mirror name starts with the run ID.
	if err := e.deleteMatching(ctx, "*"+e.runID+"*"); err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete keys of %s: %v\n", e.runID, err)
	}
}

// redact hides the password of a Redis URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// errShort reports a run that ended before its backlog was through.
var errShort = errors.New("ended before the whole backlog was read")
