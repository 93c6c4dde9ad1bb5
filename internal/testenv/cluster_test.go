//go:build cluster

package testenv

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// nodeClient is a plain client of the one Redis server at addr, which
// follows no redirection and no sentinel: what it reads is on that server.
func nodeClient(t *testing.T, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		ForceSingleClient: true,
		DisableCache:      true,
		Dialer:            net.Dialer{Timeout: 3 * time.Second},
	})
	if err != nil {
		t.Fatalf("connect to %s alone: %v", addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

// slotRange is one range of CLUSTER SLOTS: its slots, its master and its
// replicas, as host:port.
type slotRange struct {
	start, end int64
	master     string
	replicas   []string
}

func clusterSlots(t *testing.T, c rueidis.Client) []slotRange {
	t.Helper()
	entries, err := c.Do(ctxFor(t, 5*time.Second), c.B().ClusterSlots().Build()).ToArray()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	addr := func(m rueidis.RedisMessage) string {
		n, err := m.ToArray()
		if err != nil || len(n) < 2 {
			t.Fatalf("CLUSTER SLOTS: a node is %v (%v)", m, err)
		}
		host, _ := n[0].ToString()
		port, _ := n[1].AsInt64()
		return net.JoinHostPort(host, strconv.FormatInt(port, 10))
	}
	var out []slotRange
	for _, e := range entries {
		f, err := e.ToArray()
		if err != nil || len(f) < 3 {
			t.Fatalf("CLUSTER SLOTS: an entry is %v (%v)", e, err)
		}
		r := slotRange{master: addr(f[2])}
		r.start, _ = f[0].AsInt64()
		r.end, _ = f[1].AsInt64()
		for _, rep := range f[3:] {
			r.replicas = append(r.replicas, addr(rep))
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b slotRange) int { return int(a.start - b.start) })
	return out
}

// TestClusterRedisKeysInEverySlotRange writes a key into each master's
// slot range through the cluster client and reads each back from its
// master alone and, once replicated, from that master's replica; the other
// masters redirect it.
func TestClusterRedisKeysInEverySlotRange(t *testing.T) {
	c := RedisCluster(t)
	ranges := clusterSlots(t, c)
	if len(ranges) != 3 || ranges[0].start != 0 || ranges[2].end != 16383 {
		t.Fatalf("want 3 slot ranges covering 0-16383, got %+v", ranges)
	}
	for i, r := range ranges {
		if i > 0 && r.start != ranges[i-1].end+1 {
			t.Fatalf("slot ranges leave a gap: %+v", ranges)
		}
		if len(r.replicas) != 1 {
			t.Fatalf("slots %d-%d: want a master with one replica, got %+v", r.start, r.end, r)
		}
	}

	ctx := ctxFor(t, time.Minute)
	keys := make([]string, len(ranges))
	base := Name(t, "k")
	for i, r := range ranges {
		// The server says where a key goes: no hashing of our own.
		for n := 0; keys[i] == ""; n++ {
			if n == 1000 {
				t.Fatalf("no key of 1000 falls in slots %d-%d", r.start, r.end)
			}
			k := fmt.Sprintf("%s-%d", base, n)
			slot, err := c.Do(ctx, c.B().ClusterKeyslot().Key(k).Build()).AsInt64()
			if err != nil {
				t.Fatalf("CLUSTER KEYSLOT %s: %v", k, err)
			}
			if slot >= r.start && slot <= r.end {
				keys[i] = k
			}
		}
		k := keys[i]
		t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(k).Build()) })
		if err := c.Do(ctx, c.B().Set().Key(k).Value("v"+strconv.Itoa(i)).Build()).Error(); err != nil {
			t.Fatalf("SET %s through the cluster client: %v", k, err)
		}
	}

	for i, r := range ranges {
		want := "v" + strconv.Itoa(i)
		got, err := nodeClient(t, r.master).Do(ctx, c.B().Get().Key(keys[i]).Build()).ToString()
		if err != nil || got != want {
			t.Fatalf("GET %s from its master %s: %q, %v; want %q", keys[i], r.master, got, err, want)
		}
		other := ranges[(i+1)%len(ranges)].master
		err = nodeClient(t, other).Do(ctx, c.B().Get().Key(keys[i]).Build()).Error()
		if err == nil || !strings.Contains(err.Error(), "MOVED") {
			t.Fatalf("GET %s from master %s, which does not own it: %v; want a MOVED redirection", keys[i], other, err)
		}
		replica := nodeClient(t, r.replicas[0])
		Wait(t, 10*time.Second, "key "+keys[i]+" on replica "+r.replicas[0], func() bool {
			// READONLY and GET on one connection: a replica serves reads only
			// to a connection that asked for it.
			res := replica.DoMulti(ctx, replica.B().Readonly().Build(), replica.B().Get().Key(keys[i]).Build())
			got, err := res[1].ToString()
			return res[0].Error() == nil && err == nil && got == want
		})
	}
}

// TestClusterSentinelMasterAnswers writes through the sentinel client and
// finds the entry on the server every sentinel names as the master, which
// says it is a master with a replica.
func TestClusterSentinelMasterAnswers(t *testing.T) {
	s := Sentinel(t)
	ctx := ctxFor(t, 30*time.Second)
	key := Name(t, "k")
	t.Cleanup(func() { s.Do(context.Background(), s.B().Del().Key(key).Build()) })
	if err := s.Do(ctx, s.B().Set().Key(key).Value("via-sentinel").Build()).Error(); err != nil {
		t.Fatalf("SET %s through the sentinel client: %v", key, err)
	}
	if got, err := s.Do(ctx, s.B().Get().Key(key).Build()).ToString(); err != nil || got != "via-sentinel" {
		t.Fatalf("GET %s through the sentinel client: %q, %v", key, got, err)
	}

	var master string
	for _, addr := range SentinelAddrs() {
		sc := nodeClient(t, addr)
		hp, err := sc.Do(ctx, sc.B().SentinelGetMasterAddrByName().Master(SentinelMaster()).Build()).AsStrSlice()
		if err != nil || len(hp) != 2 {
			t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME %s at %s: %v, %v", SentinelMaster(), addr, hp, err)
		}
		got := net.JoinHostPort(hp[0], hp[1])
		if master != "" && got != master {
			t.Fatalf("the sentinels disagree on master %s: %s and %s", SentinelMaster(), master, got)
		}
		master = got
	}
	m := nodeClient(t, master)
	role, err := m.Do(ctx, m.B().Role().Build()).ToArray()
	if err != nil || len(role) < 3 {
		t.Fatalf("ROLE at %s: %v, %v", master, role, err)
	}
	if r, _ := role[0].ToString(); r != "master" {
		t.Fatalf("ROLE at %s, which the sentinels name master %s: %q", master, SentinelMaster(), r)
	}
	if replicas, _ := role[2].ToArray(); len(replicas) != 1 {
		t.Fatalf("master %s has %d replicas, want 1", master, len(replicas))
	}
	if got, err := m.Do(ctx, m.B().Get().Key(key).Build()).ToString(); err != nil || got != "via-sentinel" {
		t.Fatalf("GET %s from the master %s alone: %q, %v", key, master, got, err)
	}
}

// TestClusterKafkaReplicatedTopicTakesAcksAll creates a topic of three
// replicas, two of them required in sync, produces with acks=all and reads
// every record back with another client; the brokers' defaults are the
// script's.
func TestClusterKafkaReplicatedTopicTakesAcksAll(t *testing.T) {
	cl := KafkaCluster(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	adm := kadm.NewClient(cl)
	ctx := ctxFor(t, time.Minute)

	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(meta.Brokers) != ClusterReplicas {
		t.Fatalf("the cluster lists %d brokers, want %d", len(meta.Brokers), ClusterReplicas)
	}
	want := map[string]string{
		"default.replication.factor":               "3",
		"min.insync.replicas":                      "2",
		"offsets.topic.replication.factor":         "3",
		"transaction.state.log.replication.factor": "3",
		"transaction.state.log.min.isr":            "2",
	}
	for _, b := range meta.Brokers {
		rcs, err := adm.DescribeBrokerConfigs(ctx, b.NodeID)
		if err != nil {
			t.Fatalf("describe the configs of broker %d: %v", b.NodeID, err)
		}
		for _, rc := range rcs {
			for _, c := range rc.Configs {
				if w, ok := want[c.Key]; ok && c.MaybeValue() != w {
					t.Errorf("broker %d: %s=%s, want %s", b.NodeID, c.Key, c.MaybeValue(), w)
				}
			}
		}
	}

	const partitions = 3
	topic := ClusterTopic(t, cl, partitions)
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	leaders := map[int32]bool{}
	for _, p := range details[topic].Partitions {
		if len(p.Replicas) != ClusterReplicas || len(p.ISR) != ClusterReplicas {
			t.Fatalf("partition %d: replicas %v, in sync %v; want %d of each", p.Partition, p.Replicas, p.ISR, ClusterReplicas)
		}
		leaders[p.Leader] = true
	}
	t.Logf("topic %s: %d partitions, leaders on brokers %v", topic, partitions, slices.Sorted(maps.Keys(leaders)))
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	minISR := ""
	for _, c := range rc.Configs {
		if c.Key == "min.insync.replicas" {
			minISR = c.MaybeValue()
		}
	}
	if minISR != strconv.Itoa(ClusterMinISR) {
		t.Fatalf("topic %s: min.insync.replicas=%q, want %d", topic, minISR, ClusterMinISR)
	}

	const n = 30
	sent := map[string]bool{}
	var recs []*kgo.Record
	for i := range n {
		v := fmt.Sprintf("r%02d", i)
		sent[v] = true
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: []byte(v)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce %d records with acks=all: %v", n, err)
	}

	got := readTopic(t, func(opts ...kgo.Opt) *kgo.Client { return KafkaCluster(t, opts...) }, topic, false)
	if len(got) != n {
		t.Fatalf("read %d records back, want %d", len(got), n)
	}
	for _, r := range got {
		if !sent[string(r.Value)] {
			t.Fatalf("read back %q, which was not sent (or twice)", r.Value)
		}
		delete(sent, string(r.Value))
	}
}
