package cmd_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/k2r"
	"github.com/xmirror/xmirror/mirror/r2k"
)

// TestMirrorsTellTheirLag: a mirror built from code tells its lag per
// stream (redis-to-kafka) and partition (kafka-to-redis) as status does,
// on connections of its own: what arrived after a one-shot run.
func TestMirrorsTellTheirLag(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	dest := testenv.Stream(t, rc)
	redisEP, err := endpoint.ParseRedisURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	kafkaEP, err := endpoint.ParseBrokers(testenv.Brokers())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"n", strconv.Itoa(i)} })

	rcfg := r2k.Defaults()
	rcfg.Redis, rcfg.Kafka, rcfg.Streams, rcfg.Topic, rcfg.Name = redisEP, kafkaEP, []string{stream}, topic, testenv.Name(t, "r2k")
	out, err := r2k.New(ctx, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := out.Run(ctx); err != nil {
		t.Fatal(err)
	}
	kcfg := k2r.Defaults()
	kcfg.Redis, kcfg.Kafka, kcfg.Topics, kcfg.Stream, kcfg.Name = redisEP, kafkaEP, []string{topic}, dest, testenv.Name(t, "k2r")
	in, err := k2r.New(ctx, kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.Run(ctx); err != nil {
		t.Fatal(err)
	}
	addEntries(t, rc, stream, 10, 4, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	produceN(t, kc, topic, 0, 3)

	lags, err := out.Lag(ctx)
	if want := []mirror.Lag{{Stream: stream, Entries: 4}}; err != nil || len(lags) != 1 || lags[0] != want[0] {
		t.Errorf("redis-to-kafka Lag = %+v, %v; want %+v", lags, err, want)
	}
	lags, err = in.Lag(ctx)
	if want := (mirror.Lag{Stream: dest, Topic: topic, Partition: 0, Entries: 3}); err != nil || len(lags) != 1 || lags[0] != want {
		t.Errorf("kafka-to-redis Lag = %+v, %v; want %+v", lags, err, want)
	}
}
