package testenv

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The clusters that scripts/services.sh up --cluster starts, or external
// ones named by REDIS_CLUSTER_URL and REDIS_CLUSTER_NODES,
// REDIS_SENTINEL_ADDRS and REDIS_SENTINEL_MASTER, and KAFKA_CLUSTER_BROKERS.
// Tests of them carry the build tag cluster and are named TestCluster...,
// so that neither `make test` (which does not start them) nor CI=true runs
// them; `make test-cluster` does.
const (
	clusterStart = "scripts/services.sh up --cluster"

	defaultRedisClusterURL = "redis://127.0.0.1:7000"
	defaultSentinelMaster  = "xmirror"
	defaultClusterBrokers  = "127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103"

	// ClusterReplicas is how many copies of a partition the Kafka cluster
	// keeps (its default.replication.factor), and ClusterMinISR how many of
	// them must have a record for an acks=all write to succeed.
	ClusterReplicas = 3
	ClusterMinISR   = 2
)

var (
	defaultRedisClusterNodes = []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004", "127.0.0.1:7005"}
	defaultSentinelAddrs     = []string{"127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"}
)

// RedisClusterURL is the URL of one node of the Redis Cluster.
func RedisClusterURL() string { return envOr("REDIS_CLUSTER_URL", defaultRedisClusterURL) }

// RedisClusterNodes are the host:port addresses of the Redis Cluster's
// nodes (REDIS_CLUSTER_NODES, comma-separated); with only
// REDIS_CLUSTER_URL set, that node alone.
func RedisClusterNodes() []string {
	if v := envOr("REDIS_CLUSTER_NODES", ""); v != "" {
		return splitList(v)
	}
	if u := envOr("REDIS_CLUSTER_URL", ""); u != "" {
		if opt, err := rueidis.ParseURL(u); err == nil {
			return opt.InitAddress
		}
	}
	return defaultRedisClusterNodes
}

// SentinelAddrs are the host:port addresses of the sentinels
// (REDIS_SENTINEL_ADDRS, comma-separated).
func SentinelAddrs() []string {
	if v := envOr("REDIS_SENTINEL_ADDRS", ""); v != "" {
		return splitList(v)
	}
	return defaultSentinelAddrs
}

// SentinelMaster is the master name the sentinels watch
// (REDIS_SENTINEL_MASTER).
func SentinelMaster() string { return envOr("REDIS_SENTINEL_MASTER", defaultSentinelMaster) }

// ClusterBrokers are the seed brokers of the Kafka cluster
// (KAFKA_CLUSTER_BROKERS, comma-separated).
func ClusterBrokers() string { return envOr("KAFKA_CLUSTER_BROKERS", defaultClusterBrokers) }

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// RedisCluster returns a plain rueidis client of the Redis Cluster, seeded
// with every node, independent of xmirror's own connection code, closed
// when the test ends. It checks that the server is a cluster whose state
// is ok; otherwise the test skips, or fails under CI=true.
func RedisCluster(tb testing.TB) rueidis.Client {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped with -short")
	}
	opt, err := rueidis.ParseURL(RedisClusterURL())
	if err != nil {
		tb.Fatalf("REDIS_CLUSTER_URL: %v", err)
	}
	opt.InitAddress = RedisClusterNodes()
	opt.DisableCache = true
	opt.Dialer.Timeout = 3 * time.Second
	what := "the Redis Cluster at " + strings.Join(opt.InitAddress, ",")
	c, err := rueidis.NewClient(opt)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var info string
		// On a server without cluster support this is an error.
		info, err = c.Do(ctx, c.B().ClusterInfo().Build()).ToString()
		cancel()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = fmt.Errorf("CLUSTER INFO does not say cluster_state:ok:\n%s", info)
		}
		if err != nil {
			c.Close()
		}
	}
	if err != nil {
		missingStarted(tb, what, clusterStart, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// Sentinel returns a plain rueidis client of the master that the sentinels
// name SentinelMaster(), found through them, closed when the test ends; a
// missing set-up skips the test, or fails it under CI=true.
func Sentinel(tb testing.TB) rueidis.Client {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped with -short")
	}
	opt := rueidis.ClientOption{
		InitAddress:  SentinelAddrs(),
		Sentinel:     rueidis.SentinelOption{MasterSet: SentinelMaster(), Dialer: net.Dialer{Timeout: 3 * time.Second}},
		Dialer:       net.Dialer{Timeout: 3 * time.Second},
		DisableCache: true,
	}
	what := fmt.Sprintf("master %s of the sentinels at %s", SentinelMaster(), strings.Join(opt.InitAddress, ","))
	c, err := rueidis.NewClient(opt)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = c.Do(ctx, c.B().Ping().Build()).Error()
		cancel()
		if err != nil {
			c.Close()
		}
	}
	if err != nil {
		missingStarted(tb, what, clusterStart, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// KafkaCluster returns a plain franz-go client of the Kafka cluster (extra
// options appended), closed when the test ends. It checks that the
// metadata lists at least ClusterReplicas brokers; otherwise the test
// skips, or fails under CI=true.
func KafkaCluster(tb testing.TB, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped with -short")
	}
	what := "the Kafka cluster at " + ClusterBrokers()
	all := append([]kgo.Opt{kgo.SeedBrokers(splitList(ClusterBrokers())...), kgo.DialTimeout(3 * time.Second)}, opts...)
	cl, err := kgo.NewClient(all...)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var meta kadm.Metadata
		meta, err = kadm.NewClient(cl).BrokerMetadata(ctx)
		cancel()
		if err == nil && len(meta.Brokers) < ClusterReplicas {
			err = fmt.Errorf("the metadata lists %d brokers, want at least %d", len(meta.Brokers), ClusterReplicas)
		}
		if err != nil {
			cl.Close()
		}
	}
	if err != nil {
		missingStarted(tb, what, clusterStart, err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// ClusterTopic creates a unique topic of the Kafka cluster with the given
// partitions, ClusterReplicas replicas each and min.insync.replicas
// ClusterMinISR, and waits until every replica is in sync; deleted when
// the test ends unless it failed.
func ClusterTopic(tb testing.TB, cl *kgo.Client, partitions int32) string {
	tb.Helper()
	minISR := fmt.Sprint(ClusterMinISR)
	return createTopicWith(tb, cl, Name(tb, "t"), partitions, ClusterReplicas,
		map[string]*string{"min.insync.replicas": &minISR})
}
