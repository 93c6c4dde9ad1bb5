// Package testenv gives integration tests the real Redis and Kafka servers
// that scripts/services.sh starts (or external ones named by REDIS_URL and
// KAFKA_BROKERS). When a server is missing a test skips, except under
// CI=true, where it fails: CI must never pass by testing nothing.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// RedisURL is the Redis the tests use.
func RedisURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// Brokers is the Kafka the tests use.
func Brokers() string {
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return b
	}
	return "127.0.0.1:9092"
}

// missing skips the test, or fails it under CI=true.
func missing(tb testing.TB, what string, err error) {
	tb.Helper()
	missingStarted(tb, what, "scripts/services.sh up", err)
}

// missingStarted is missing for a server that start starts.
func missingStarted(tb testing.TB, what, start string, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is required under CI=true but unreachable: %v (start it with %s)", what, err, start)
	}
	tb.Skipf("%s unreachable (%v); start it with %s", what, err, start)
}

// Redis returns a plain client of the test Redis, independent of xmirror's
// own connection code, closed when the test ends.
func Redis(tb testing.TB) rueidis.Client {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped with -short")
	}
	opt, err := rueidis.ParseURL(RedisURL())
	if err != nil {
		tb.Fatalf("REDIS_URL: %v", err)
	}
	opt.DisableCache = true
	opt.Dialer.Timeout = 3 * time.Second
	c, err := rueidis.NewClient(opt)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err = c.Do(ctx, c.B().Ping().Build()).Error()
		cancel()
		if err != nil {
			c.Close()
		}
	}
	if err != nil {
		missing(tb, "Redis at "+RedisURL(), err)
	}
	tb.Cleanup(c.Close)
	return c
}

// Kafka returns a plain franz-go client of the test Kafka (extra options
// appended), closed when the test ends.
func Kafka(tb testing.TB, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped with -short")
	}
	all := append([]kgo.Opt{kgo.SeedBrokers(strings.Split(Brokers(), ",")...), kgo.DialTimeout(3 * time.Second)}, opts...)
	cl, err := kgo.NewClient(all...)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = cl.Ping(ctx)
		cancel()
		if err != nil {
			cl.Close()
		}
	}
	if err != nil {
		missing(tb, "Kafka at "+Brokers(), err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// Name is a unique name for a stream, topic or mirror of this test.
func Name(tb testing.TB, prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	name := unsafeChars.ReplaceAllString(tb.Name(), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	return prefix + "-" + name + "-" + hex.EncodeToString(b[:])
}

// Stream is a unique stream name, deleted when the test ends.
func Stream(tb testing.TB, c rueidis.Client) string {
	tb.Helper()
	s := Name(tb, "s")
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Do(ctx, c.B().Del().Key(s).Build())
	})
	return s
}

// Topic creates a unique topic with the given partitions, deleted when the
// test ends unless it failed (kept for inspection).
func Topic(tb testing.TB, cl *kgo.Client, partitions int32) string {
	tb.Helper()
	return createTopic(tb, cl, Name(tb, "t"), partitions)
}

// NamedTopic creates topic name (a Name of the test, or made of one) with
// the given partitions, for a test that needs topics whose names share a
// prefix; deleted when the test ends unless it failed.
func NamedTopic(tb testing.TB, cl *kgo.Client, name string, partitions int32) string {
	tb.Helper()
	return createTopic(tb, cl, name, partitions)
}

// createTopic creates topic t through cl and waits until the metadata
// lists it; deleted when the test ends unless it failed.
func createTopic(tb testing.TB, cl *kgo.Client, t string, partitions int32) string {
	tb.Helper()
	return createTopicWith(tb, cl, t, partitions, 1, nil)
}

// createTopicWith is createTopic with replicas copies of each partition
// and the topic configs.
func createTopicWith(tb testing.TB, cl *kgo.Client, t string, partitions int32, replicas int16, configs map[string]*string) string {
	tb.Helper()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, replicas, configs, t)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		tb.Fatalf("create topic %s: %v", t, err)
	}
	// CreateTopics returns before the broker's metadata lists the topic:
	// a mirror started at once could find it missing. Each partition is
	// waited for until it has a leader and every replica in sync.
	Wait(tb, 30*time.Second, "topic "+t+" in the metadata", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		details, err := adm.ListTopics(ctx, t)
		if err != nil {
			return false
		}
		d, ok := details[t]
		if !ok || d.Err != nil || len(d.Partitions) != int(partitions) {
			return false
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 || len(p.ISR) != int(replicas) {
				return false
			}
		}
		return true
	})
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("keeping topic %s of the failed test", t)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		adm.DeleteTopics(ctx, t)
	})
	return t
}

// Wait polls cond until it holds or d passes, instead of sleeping.
func Wait(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RedisUser creates the ACL user name on admin's server, allowed every key,
// channel and command and then what rules add or take away (e.g. "-multi"),
// and returns a client logged in as that user. The user is deleted and the
// client closed when the test ends.
func RedisUser(tb testing.TB, admin rueidis.Client, name string, rules ...string) rueidis.Client {
	tb.Helper()
	ctx := context.Background()
	all := append([]string{"on", ">pw", "~*", "&*", "+@all"}, rules...)
	if err := admin.Do(ctx, admin.B().AclSetuser().Username(name).Rule(all...).Build()).Error(); err != nil {
		tb.Fatalf("ACL SETUSER %s: %v", name, err)
	}
	tb.Cleanup(func() { admin.Do(context.Background(), admin.B().AclDeluser().Username(name).Build()) })
	opt, err := rueidis.ParseURL(RedisURL())
	if err != nil {
		tb.Fatal(err)
	}
	opt.Username, opt.Password, opt.DisableCache = name, "pw", true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("connect as %s: %v", name, err)
	}
	tb.Cleanup(c.Close)
	return c
}
