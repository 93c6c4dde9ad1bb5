package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// DescriptorVersion is the format version of mirror descriptors.
const DescriptorVersion = 1

// DescriptorKey is the key of the hash in which a mirror records what it
// is, for status and the checkpoint commands: what a checkpoint alone
// does not say (its source, its destination, its format) or says only in
// part (a kafka-to-redis checkpoint's key holds its stream's hash tag, not
// always the stream's name).
func DescriptorKey(kind, name string) string { return "xmirror:mirror:" + kind + ":" + name }

// A Descriptor is what a mirror records of itself each time a run is set
// up. Mirrors that last ran before descriptors were recorded have none:
// their checkpoints are still found, and say what they hold.
type Descriptor struct {
	Kind string
	Name string
	// Source and Destination are as the run was given them: streams, or
	// a topic, and the destination's template.
	Source      string
	Destination string
	// Group is a redis-to-kafka mirror's consumer group.
	Group  string
	Format string
	// Streams are the mirror's streams: its sources (redis-to-kafka) or
	// the destinations its partitions feed (kafka-to-redis), each keying
	// one checkpoint hash there.
	Streams []string
	// Topics are the mirror's topics: its destinations or its sources.
	Topics []string
	// Redis and Brokers are where the run connected, credentials masked.
	Redis   string
	Brokers string
	// Host is the host of the run that recorded the descriptor, Recorded
	// when.
	Host     string
	Recorded time.Time
}

// Descriptor fields.
const (
	descSource      = "source"
	descDestination = "destination"
	descGroup       = "group"
	descFormat      = "format"
	descStreams     = "streams"
	descTopics      = "topics"
	descRedis       = "redis"
	descBrokers     = "brokers"
	descHost        = "host"
	descRecorded    = "recorded_ms"
	descName        = "name"
)

// RecordDescriptor writes d, replacing what the mirror recorded before, in
// one round trip. Streams and topics a previous run recorded but d lacks
// are kept: their checkpoints still hold positions.
func RecordDescriptor(ctx context.Context, c rueidis.Client, d Descriptor) error {
	key := DescriptorKey(d.Kind, d.Name)
	old, err := LoadDescriptor(ctx, c, d.Kind, d.Name)
	if err != nil {
		return err
	}
	if old != nil {
		d.Streams = union(old.Streams, d.Streams)
		d.Topics = union(old.Topics, d.Topics)
	}
	streams, _ := json.Marshal(sorted(d.Streams))
	topics, _ := json.Marshal(sorted(d.Topics))
	cmd := c.B().Hset().Key(key).FieldValue().
		FieldValue(fieldVersion, strconv.Itoa(DescriptorVersion)).
		FieldValue(fieldKind, d.Kind).
		FieldValue(descName, d.Name).
		FieldValue(descSource, d.Source).
		FieldValue(descDestination, d.Destination).
		FieldValue(descGroup, d.Group).
		FieldValue(descFormat, d.Format).
		FieldValue(descStreams, string(streams)).
		FieldValue(descTopics, string(topics)).
		FieldValue(descRedis, d.Redis).
		FieldValue(descBrokers, d.Brokers).
		FieldValue(descHost, d.Host).
		FieldValue(descRecorded, strconv.FormatInt(d.Recorded.UnixMilli(), 10)).
		Build()
	if err := c.Do(ctx, cmd).Error(); err != nil {
		return fmt.Errorf("record mirror %q in %q: %w", d.Name, key, err)
	}
	return nil
}

// LoadDescriptor reads what mirror name of kind recorded of itself; nil
// when it recorded nothing.
func LoadDescriptor(ctx context.Context, c rueidis.Client, kind, name string) (*Descriptor, error) {
	key := DescriptorKey(kind, name)
	m, err := loadHash(ctx, c, key, kind, DescriptorVersion, DescriptorVersion)
	if err != nil || m == nil {
		return nil, err
	}
	d := &Descriptor{Kind: kind, Name: name,
		Source: m[descSource], Destination: m[descDestination], Group: m[descGroup], Format: m[descFormat],
		Redis: m[descRedis], Brokers: m[descBrokers], Host: m[descHost]}
	for field, list := range map[string]*[]string{descStreams: &d.Streams, descTopics: &d.Topics} {
		if v := m[field]; v != "" {
			if err := json.Unmarshal([]byte(v), list); err != nil {
				return nil, fmt.Errorf("mirror record %q field %q holds %q, not a list: %w", key, field, v, ErrCorrupt)
			}
		}
	}
	if v := m[descRecorded]; v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("mirror record %q field %q holds %q, not a time: %w", key, descRecorded, v, ErrCorrupt)
		}
		d.Recorded = time.UnixMilli(ms)
	}
	return d, nil
}

// A Found mirror is one whose keys List found in a Redis.
type Found struct {
	Kind, Name string
	// Descriptor is what the mirror recorded of itself; nil for one that
	// last ran before descriptors were recorded.
	Descriptor *Descriptor
	// Checkpoints are the keys of its checkpoint hashes: one for
	// redis-to-kafka, one per destination stream for kafka-to-redis.
	Checkpoints []string
}

// Key patterns of what List looks for: a mirror's descriptor, and the
// checkpoints of mirrors that have none.
var (
	descriptorPattern = "xmirror:mirror:*"
	r2kPattern        = R2KKey("*")
	k2rPattern        = "xmirror:k2r:{*"
)

// ListTimeout bounds List's walk over the keyspace.
const ListTimeout = 30 * time.Second

// List finds every mirror with a descriptor or a checkpoint in the Redis
// of c, sorted by kind and name. It walks the keyspace with SCAN (on every
// node c knows), which never blocks the server, and reads only hashes.
func List(ctx context.Context, c rueidis.Client) ([]Found, error) {
	ctx, cancel := context.WithTimeout(ctx, ListTimeout)
	defer cancel()
	byID := map[[2]string]*Found{}
	get := func(kind, name string) *Found {
		id := [2]string{kind, name}
		f := byID[id]
		if f == nil {
			f = &Found{Kind: kind, Name: name}
			byID[id] = f
		}
		return f
	}
	for _, pattern := range []string{descriptorPattern, r2kPattern, k2rPattern} {
		keys, err := scanHashes(ctx, c, pattern)
		if err != nil {
			return nil, err
		}
		for _, key := range keys {
			kind, name, ok := parseMirrorKey(key)
			if !ok {
				continue
			}
			f := get(kind, name)
			if strings.HasPrefix(key, "xmirror:mirror:") {
				continue
			}
			f.Checkpoints = append(f.Checkpoints, key)
		}
	}
	var all []Found
	for _, f := range byID {
		d, err := LoadDescriptor(ctx, c, f.Kind, f.Name)
		if err != nil {
			return nil, err
		}
		f.Descriptor = d
		if d != nil && f.Kind == KindKafkaToRedis {
			// Streams the descriptor names whose checkpoint the scan
			// missed (written since) are still the mirror's.
			for _, s := range d.Streams {
				f.Checkpoints = union(f.Checkpoints, []string{K2RKey(f.Name, s)})
			}
		}
		sort.Strings(f.Checkpoints)
		all = append(all, *f)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Kind != all[j].Kind {
			return all[i].Kind > all[j].Kind // redis-to-kafka first
		}
		return all[i].Name < all[j].Name
	})
	return all, nil
}

// parseMirrorKey reads the kind and name of a mirror from the key of its
// descriptor or checkpoint. A kafka-to-redis checkpoint key is
// xmirror:k2r:{<tag>}:<name>; the tag holds no '}' (see K2RKey), except
// for a stream whose name has no tag and holds one, whose key with no
// descriptor beside it names the mirror with part of the stream name.
func parseMirrorKey(key string) (kind, name string, ok bool) {
	switch {
	case strings.HasPrefix(key, "xmirror:mirror:"):
		rest := strings.TrimPrefix(key, "xmirror:mirror:")
		for _, k := range []string{KindRedisToKafka, KindKafkaToRedis} {
			if strings.HasPrefix(rest, k+":") {
				return k, strings.TrimPrefix(rest, k+":"), true
			}
		}
	case strings.HasPrefix(key, "xmirror:r2k:"):
		return KindRedisToKafka, strings.TrimPrefix(key, "xmirror:r2k:"), true
	case strings.HasPrefix(key, "xmirror:k2r:{"):
		rest := strings.TrimPrefix(key, "xmirror:k2r:{")
		if i := strings.Index(rest, "}:"); i >= 0 {
			return KindKafkaToRedis, rest[i+2:], true
		}
	}
	return "", "", false
}

// scanHashes is every hash key matching pattern, on every node of c.
func scanHashes(ctx context.Context, c rueidis.Client, pattern string) ([]string, error) {
	seen := map[string]bool{}
	var keys []string
	for addr, node := range c.Nodes() {
		cursor := uint64(0)
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Type("hash").Build()).AsScanEntry()
			if err != nil {
				return nil, fmt.Errorf("list mirrors: SCAN MATCH %s on %s: %w", pattern, addr, err)
			}
			for _, k := range e.Elements {
				if !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return keys, nil
}

// Holder is who holds a mirror's lease: a run of the mirror.
type Holder struct {
	Host string
	PID  int
	// Expires is when the lease lapses unless its holder renews it.
	Expires time.Time
	// Value is the lease as stored, for what the fields do not say.
	Value string
}

// LeaseHolder reads who holds the lease of mirror name of kind; nil when
// nobody does (the mirror is not running).
func LeaseHolder(ctx context.Context, c rueidis.Client, kind, name string) (*Holder, error) {
	key := LeaseKey(kind, name)
	rs := c.DoMulti(ctx, c.B().Get().Key(key).Build(), c.B().Pttl().Key(key).Build())
	v, err := rs[0].ToString()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lease %q: %w", key, err)
	}
	ttl, err := rs[1].AsInt64()
	if err != nil {
		return nil, fmt.Errorf("read lease %q: %w", key, err)
	}
	p := parseHolder(v)
	h := &Holder{Host: p.host, PID: p.pid, Value: v}
	if ttl >= 0 {
		h.Expires = time.Now().Add(time.Duration(ttl) * time.Millisecond)
	}
	return h, nil
}

func (h *Holder) String() string {
	if h.PID == 0 {
		return h.Value
	}
	return fmt.Sprintf("pid %d on %s", h.PID, h.Host)
}

// union is a followed by what of b it lacks.
func union(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, s := range b {
		found := false
		for _, t := range out {
			if t == s {
				found = true
				break
			}
		}
		if !found {
			out = append(out, s)
		}
	}
	return out
}

func sorted(s []string) []string {
	s = append([]string{}, s...)
	sort.Strings(s)
	return s
}
