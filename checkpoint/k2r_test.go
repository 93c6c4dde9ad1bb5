package checkpoint

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/internal/testenv"
)

func TestK2RKeySharesTheStreamsHashTag(t *testing.T) {
	tests := []struct {
		stream, want string
		sameSlot     bool
	}{
		{"orders", "xmirror:k2r:{orders}:m", true},
		{"{orders}.copy", "xmirror:k2r:{orders}:m", true},
		{"eu{orders}x{y}", "xmirror:k2r:{orders}:m", true},
		{"{}orders", "xmirror:k2r:{{}orders}:m", false}, // empty tag: whole name, which holds '}'
		{"a}b", "xmirror:k2r:{a}b}:m", false},
		{"a{b", "xmirror:k2r:{a{b}:m", true},
	}
	for _, tt := range tests {
		if got := K2RKey("m", tt.stream); got != tt.want {
			t.Errorf("K2RKey(m, %q) = %q, want %q", tt.stream, got, tt.want)
		}
		if got := SameSlot(tt.stream); got != tt.sameSlot {
			t.Errorf("SameSlot(%q) = %v, want %v", tt.stream, got, tt.sameSlot)
		}
	}
}

func TestLoadK2RRefusesAListedPartitionWithoutPosition(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	cases := []struct {
		name   string
		fields []string
		want   string // "": loads
	}{
		{"complete", []string{"version", "2", "kind", KindKafkaToRedis, "partitions", "t:0,t:1", "t:0", "1", "t:1", "2"}, ""},
		{"version 1 without list", []string{"version", "1", "kind", KindKafkaToRedis, "t:0", "1"}, ""},
		{"hole", []string{"version", "2", "kind", KindKafkaToRedis, "partitions", "t:0,t:1", "t:0", "1"}, `topic "t" partition 1 but its position (field "t:1") is missing`},
		{"version 2 without list", []string{"version", "2", "kind", KindKafkaToRedis, "t:0", "1"}, `no "partitions" field`},
		{"garbage in list", []string{"version", "2", "kind", KindKafkaToRedis, "partitions", "t:0,zero", "t:0", "1"}, `lists "zero"`},
		{"version 3", []string{"version", "3", "kind", KindKafkaToRedis}, "reads version 1 to 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream, name := k2rTarget(t, c)
			key := K2RKey(name, stream)
			cmd := c.B().Hset().Key(key).FieldValue()
			for i := 0; i < len(tc.fields); i += 2 {
				cmd = cmd.FieldValue(tc.fields[i], tc.fields[i+1])
			}
			c.Do(ctx, cmd.Build())
			_, _, err := LoadK2R(ctx, c, name, stream)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), key) {
				t.Fatalf("err = %v, want one naming %s and saying %q", err, key, tc.want)
			}
		})
	}
}

// InitK2RPartitions lists every partition it takes on, upgrades a version 1
// checkpoint and refuses to fill a hole.
func TestInitK2RPartitionsListsPartitionsAndRefusesAHole(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := k2rTarget(t, c)
	key := K2RKey(name, stream)
	c.Do(ctx, c.B().Hset().Key(key).FieldValue().FieldValue("version", "1").FieldValue("kind", KindKafkaToRedis).FieldValue("t:0", "7").Build())
	tp := func(p int32) TopicPartition { return TopicPartition{Topic: "t", Partition: p} }
	init := func(starts map[TopicPartition]int64) error {
		return InitK2RPartitions(ctx, c, name, map[string]K2RInit{stream: {Starts: starts}})
	}
	if err := init(map[TopicPartition]int64{tp(0): 0, tp(1): 3}); err != nil {
		t.Fatal(err)
	}
	got, _ := c.Do(ctx, c.B().Hmget().Key(key).Field("version", "partitions", "t:0", "t:1").Build()).AsStrSlice()
	if strings.Join(got, " ") != "2 t:0,t:1 7 3" {
		t.Fatalf("version, partitions, t:0, t:1 = %q, want 2 t:0,t:1 7 3", got)
	}
	c.Do(ctx, c.B().Hdel().Key(key).Field("t:1").Build())
	if err := init(map[TopicPartition]int64{tp(0): 0, tp(1): 0}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "partition 1") {
		t.Fatalf("Init over a hole: %v, want ErrCorrupt naming partition 1", err)
	}
	if n, _ := c.Do(ctx, c.B().Hexists().Key(key).Field("t:1").Build()).AsInt64(); n != 0 {
		t.Fatal("the hole was filled")
	}
}

// k2rTarget is a new stream and mirror name, whose checkpoint is deleted
// after the test.
func k2rTarget(t *testing.T, c rueidis.Client) (stream, name string) {
	stream, name = testenv.Stream(t, c), testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(K2RKey(name, stream)).Build()) })
	return stream, name
}

// InitK2RPartitions records each topic's ID where the checkpoint has none,
// refuses a checkpoint written for another ID without changing it, and
// with Restart replaces the old topic's positions by the new topic's
// starts, dropping the partitions the new topic lacks.
func TestInitK2RPartitionsRecordsTopicIDsAndRefusesARecreatedTopic(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := k2rTarget(t, c)
	key := K2RKey(name, stream)
	tp := func(p int32) TopicPartition { return TopicPartition{Topic: "t", Partition: p} }
	// Written before IDs were recorded: it adopts the topic's.
	c.Do(ctx, c.B().Hset().Key(key).FieldValue().FieldValue("version", "2").FieldValue("kind", KindKafkaToRedis).
		FieldValue("partitions", "t:0,t:1").FieldValue("t:0", "500").FieldValue("t:1", "40").Build())
	init := func(in K2RInit) error { return InitK2RPartitions(ctx, c, name, map[string]K2RInit{stream: in}) }
	if err := init(K2RInit{Starts: map[TopicPartition]int64{tp(0): 0, tp(1): 0}, TopicIDs: map[string]string{"t": "old-id"}}); err != nil {
		t.Fatal(err)
	}
	ck, _, err := LoadK2R(ctx, c, name, stream)
	if err != nil || ck.TopicIDs["t"] != "old-id" || ck.Partitions[tp(0)] != 500 {
		t.Fatalf("after adoption: %+v, %v", ck, err)
	}

	err = init(K2RInit{Starts: map[TopicPartition]int64{tp(0): 0}, TopicIDs: map[string]string{"t": "new-id"}})
	var recreated *TopicRecreatedError
	if !errors.As(err, &recreated) || recreated.Topic != "t" || recreated.Recorded != "old-id" || recreated.Current != "new-id" || recreated.Key != key {
		t.Fatalf("init with another topic ID: %v", err)
	}
	for _, want := range []string{`topic "t"`, "old-id", "new-id", key} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %q", err, want)
		}
	}
	if got, _ := c.Do(ctx, c.B().Hmget().Key(key).Field("t:0", "t:topic_id").Build()).AsStrSlice(); strings.Join(got, " ") != "500 old-id" {
		t.Fatalf("a refused init changed the checkpoint: %q", got)
	}

	// Restart: a recorded ID other than the one given is still refused.
	if err := init(K2RInit{Starts: map[TopicPartition]int64{tp(0): 0}, TopicIDs: map[string]string{"t": "new-id"}, Restart: map[string]string{"t": "other"}}); !errors.As(err, &recreated) {
		t.Fatalf("restart from an ID not recorded: %v", err)
	}
	if err := init(K2RInit{Starts: map[TopicPartition]int64{tp(0): 3}, TopicIDs: map[string]string{"t": "new-id"}, Restart: map[string]string{"t": "old-id"}}); err != nil {
		t.Fatal(err)
	}
	m, _ := c.Do(ctx, c.B().Hgetall().Key(key).Build()).AsStrMap()
	if m["t:0"] != "3" || m["partitions"] != "t:0" || m["t:topic_id"] != "new-id" {
		t.Fatalf("after restart: %v", m)
	}
	if _, ok := m["t:1"]; ok {
		t.Fatalf("the old topic's partition 1 kept its position: %v", m)
	}
	// Done once: the same restart again moves nothing.
	c.Do(ctx, c.B().Hset().Key(key).FieldValue().FieldValue("t:0", "9").Build())
	if err := init(K2RInit{Starts: map[TopicPartition]int64{tp(0): 3}, TopicIDs: map[string]string{"t": "new-id"}, Restart: map[string]string{"t": "old-id"}}); err != nil {
		t.Fatal(err)
	}
	if ck, _, err := LoadK2R(ctx, c, name, stream); err != nil || ck.Partitions[tp(0)] != 9 {
		t.Fatalf("a second restart moved the position: %+v, %v", ck, err)
	}
}

// A topic's ID field cannot be taken for a partition's, whatever the
// topics are called: "topic_id" partition 0 and topic "0" keep apart.
func TestLoadK2RKeepsTopicIDsApartFromPartitions(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := k2rTarget(t, c)
	a, b := TopicPartition{Topic: "topic_id", Partition: 0}, TopicPartition{Topic: "0", Partition: 1}
	if err := InitK2RPartitions(ctx, c, name, map[string]K2RInit{stream: {
		Starts:   map[TopicPartition]int64{a: 5, b: 6},
		TopicIDs: map[string]string{"topic_id": "id-a", "0": "id-b"},
	}}); err != nil {
		t.Fatal(err)
	}
	ck, _, err := LoadK2R(ctx, c, name, stream)
	if err != nil || len(ck.Partitions) != 2 || ck.Partitions[a] != 5 || ck.Partitions[b] != 6 || ck.TopicIDs["topic_id"] != "id-a" || ck.TopicIDs["0"] != "id-b" {
		t.Fatalf("LoadK2R = %+v, %v", ck, err)
	}
}
