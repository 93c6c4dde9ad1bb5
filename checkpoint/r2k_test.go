package checkpoint

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xmirror/xmirror/internal/testenv"
)

func TestLoadR2KRefusesWhatXmirrorDidNotWrite(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	cases := []struct {
		name   string
		fields []string // nil: a string key instead of a hash
		want   string
	}{
		{"not a hash", nil, "not a hash"},
		{"no version", []string{"stream:s", "1-0"}, "no version"},
		{"unknown version", []string{"version", "9", "kind", KindRedisToKafka}, "version 9"},
		{"other kind", []string{"version", "1", "kind", KindKafkaToRedis}, "belongs to a kafka-to-redis mirror"},
		{"bad entry ID", []string{"version", "1", "kind", KindRedisToKafka, "stream:s", "yesterday"}, "not an entry ID"},
		{"bad offset", []string{"version", "1", "kind", KindRedisToKafka, "partition:t:0", "-5"}, "not an offset"},
		{"bad partition", []string{"version", "1", "kind", KindRedisToKafka, "partition:t", "5"}, "partition"},
		{"bad partition count", []string{"version", "1", "kind", KindRedisToKafka, "partition_count:t", "0"}, "not a partition count"},
		{"bad covered count", []string{"version", "1", "kind", KindRedisToKafka, "covered:t", "two"}, "not a partition count"},
		{"covered partition missing", []string{"version", "1", "kind", KindRedisToKafka, "covered:t", "3", "partition:t:0", "4", "partition:t:2", "9"}, `partition 1 but its position (field "partition:t:1") is missing`},
		{"covered partitions all missing", []string{"version", "1", "kind", KindRedisToKafka, "covered:t", "1000000000"}, `partition 0 but`},
		{"empty group", []string{"version", "1", "kind", KindRedisToKafka, "group", ""}, "empty group field"},
		{"bad trimmed count", []string{"version", "1", "kind", KindRedisToKafka, "trimmed:s", "-3"}, "not a count"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := testenv.Name(t, "m")
			key := R2KKey(name)
			t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(key).Build()) })
			if tc.fields == nil {
				c.Do(ctx, c.B().Set().Key(key).Value("x").Build())
			} else {
				cmd := c.B().Hset().Key(key).FieldValue()
				for i := 0; i < len(tc.fields); i += 2 {
					cmd = cmd.FieldValue(tc.fields[i], tc.fields[i+1])
				}
				c.Do(ctx, cmd.Build())
			}
			_, _, err := LoadR2K(ctx, c, name)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), key) {
				t.Fatalf("err = %v, want one naming %s and saying %q", err, key, tc.want)
			}
		})
	}
}

func TestR2KCheckpointRoundTrip(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	name := testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(R2KKey(name)).Build()) })
	tp := TopicPartition{Topic: "orders", Partition: 2}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(InitR2KPartitions(ctx, c, name, map[TopicPartition]int64{tp: 7}))
	must(InitR2KPartitions(ctx, c, name, map[TopicPartition]int64{tp: 99})) // never moves a position back
	must(InitR2KPartitionCounts(ctx, c, name, map[string]int32{"orders": 3}))
	must(InitR2KPartitionCounts(ctx, c, name, map[string]int32{"orders": 8})) // a count once stored is kept
	// The checkpoint's part of a commit, without acks.
	msg, err := c.Do(ctx, R2KCommitCommand(c, name, "g", nil, R2KUpdate{Streams: map[string]string{"s": "5-1"}, Entries: 3, Bytes: 30}, time.Now())).ToMessage()
	must(err)
	if ran, err := R2KCommitReply(name, msg); !ran || err != nil {
		t.Fatalf("commit: ran %v, %v", ran, err)
	}
	ck, found, err := LoadR2K(ctx, c, name)
	must(err)
	if !found || ck.Streams["s"] != "5-1" || ck.Partitions[tp] != 7 || ck.PartitionCounts["orders"] != 3 || ck.Entries != 3 || ck.Bytes != 30 || ck.Updated.IsZero() {
		t.Fatalf("loaded %+v, found %v", ck, found)
	}
}

// InitR2KPartitions refuses to fill a hole with the current end, and
// covers each topic's partitions from 0 on.
func TestInitR2KPartitionsCoversPartitionsAndRefusesAHole(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	name := testenv.Name(t, "m")
	key := R2KKey(name)
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(key).Build()) })
	tp := func(p int32) TopicPartition { return TopicPartition{Topic: "t", Partition: p} }
	if err := InitR2KPartitions(ctx, c, name, map[TopicPartition]int64{tp(0): 5, tp(1): 6}); err != nil {
		t.Fatal(err)
	}
	// A partition added to the topic is covered too.
	if err := InitR2KPartitions(ctx, c, name, map[TopicPartition]int64{tp(0): 50, tp(1): 60, tp(2): 0}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Do(ctx, c.B().Hmget().Key(key).Field("covered:t", "partition:t:0", "partition:t:2").Build()).AsStrSlice(); strings.Join(got, " ") != "3 5 0" {
		t.Fatalf("covered, t:0, t:2 = %q, want 3 5 0", got)
	}
	c.Do(ctx, c.B().Hdel().Key(key).Field("partition:t:1").Build())
	err := InitR2KPartitions(ctx, c, name, map[TopicPartition]int64{tp(0): 50, tp(1): 60, tp(2): 0})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "partition 1") {
		t.Fatalf("Init over a hole: %v, want ErrCorrupt naming partition 1", err)
	}
	if n, _ := c.Do(ctx, c.B().Hexists().Key(key).Field("partition:t:1").Build()).AsInt64(); n != 0 {
		t.Fatal("the hole was filled")
	}
}

func TestLeaseAdmitsOneHolderAtATime(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	name := testenv.Name(t, "m")
	first, err := AcquireLease(ctx, c, KindRedisToKafka, name, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcquireLease(ctx, c, KindRedisToKafka, name, 2*time.Second); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "held by") {
		t.Fatalf("second acquire: %v, want ErrLeaseHeld naming the holder", err)
	}
	// Renewal keeps it past its TTL.
	time.Sleep(2500 * time.Millisecond)
	if _, err := AcquireLease(ctx, c, KindRedisToKafka, name, 2*time.Second); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("after the TTL, while renewed: %v, want ErrLeaseHeld", err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := AcquireLease(ctx, c, KindRedisToKafka, name, 2*time.Second)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	second.Release(ctx)
}

func TestR2KGroupIsRecordedOnceAndReadBack(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	name := testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(R2KKey(name)).Build()) })
	if err := RecordR2KGroup(ctx, c, name, "xmirror:"+name); err != nil {
		t.Fatal(err)
	}
	// A second record never moves it: the first run's group stays.
	if err := RecordR2KGroup(ctx, c, name, "other"); err != nil {
		t.Fatal(err)
	}
	ck, found, err := LoadR2K(ctx, c, name)
	if err != nil || !found || ck.Group != "xmirror:"+name {
		t.Fatalf("got group %q found %v err %v, want xmirror:%s", ck.Group, found, err, name)
	}
}
