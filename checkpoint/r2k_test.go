package checkpoint

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

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
	must(CommitR2K(ctx, c, name, "g", nil, R2KUpdate{Streams: map[string]string{"s": "5-1"}, Entries: 3, Bytes: 30}, time.Now()))
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

// A commit the server refuses any part of (an ACL forbidding XACK, a
// stream key that is no longer a stream) leaves the checkpoint where it
// was, with every entry of the refused stream still pending; once the
// cause is gone the same commit applies whole.
func TestCommitR2KRefusedAckMovesNothing(t *testing.T) {
	admin := testenv.Redis(t)
	ctx := context.Background()
	group := "g"
	tp := TopicPartition{Topic: "t", Partition: 0}
	// setup makes two streams with pending entries (a has more than the
	// script acknowledges in one XACK) and a checkpoint at offset 7.
	setup := func(t *testing.T) (name string, acks []R2KAck, u R2KUpdate) {
		name = testenv.Name(t, "m")
		t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(R2KKey(name)).Build()) })
		u = R2KUpdate{Streams: map[string]string{}, Partitions: map[TopicPartition]int64{tp: 7 + 2503}, Entries: 2503, Bytes: 25030}
		for _, n := range []int{2500, 3} {
			s := testenv.Stream(t, admin)
			cmds := rueidis.Commands{admin.B().XgroupCreate().Key(s).Group(group).Id("0").Mkstream().Build()}
			for range n {
				cmds = append(cmds, admin.B().Xadd().Key(s).Id("*").FieldValue().FieldValue("v", "x").Build())
			}
			var ids []string
			for i, r := range admin.DoMulti(ctx, cmds...) {
				if i == 0 {
					if err := r.Error(); err != nil {
						t.Fatal(err)
					}
					continue
				}
				id, err := r.ToString()
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			if err := admin.Do(ctx, admin.B().Xreadgroup().Group(group, "c").Streams().Key(s).Id(">").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			acks = append(acks, R2KAck{Stream: s, IDs: ids})
			u.Streams[s] = ids[len(ids)-1]
		}
		if err := InitR2KPartitions(ctx, admin, name, map[TopicPartition]int64{tp: 7}); err != nil {
			t.Fatal(err)
		}
		return name, acks, u
	}
	pending := func(t *testing.T, acks []R2KAck) []int64 {
		var n []int64
		for _, a := range acks {
			p, err := admin.Do(ctx, admin.B().Xpending().Key(a.Stream).Group(group).Build()).ToArray()
			if err != nil {
				t.Fatal(err)
			}
			c, _ := p[0].AsInt64()
			n = append(n, c)
		}
		return n
	}
	// unchanged: the commit failed saying want, the checkpoint did not
	// move and the entries of the streams in acks are all pending.
	unchanged := func(t *testing.T, name string, acks []R2KAck, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("commit: %v, want an error saying %q", err, want)
		}
		ck, _, lerr := LoadR2K(ctx, admin, name)
		if lerr != nil {
			t.Fatal(lerr)
		}
		if ck.Partitions[tp] != 7 || len(ck.Streams) != 0 || ck.Entries != 0 {
			t.Fatalf("checkpoint after a refused commit: %+v, want offset 7, no streams, no entries", ck)
		}
		for i, n := range pending(t, acks) {
			if n != int64(len(acks[i].IDs)) {
				t.Fatalf("stream %s has %d entries pending after a refused commit, want all %d", acks[i].Stream, n, len(acks[i].IDs))
			}
		}
	}
	applied := func(t *testing.T, c rueidis.Client, name string, acks []R2KAck, u R2KUpdate) {
		t.Helper()
		if err := CommitR2K(ctx, c, name, group, acks, u, time.Now()); err != nil {
			t.Fatal(err)
		}
		ck, _, err := LoadR2K(ctx, admin, name)
		if err != nil {
			t.Fatal(err)
		}
		if ck.Partitions[tp] != u.Partitions[tp] || ck.Entries != u.Entries || ck.Bytes != u.Bytes {
			t.Fatalf("checkpoint %+v, want %+v", ck, u)
		}
		for s, id := range u.Streams {
			if ck.Streams[s] != id {
				t.Fatalf("checkpoint stream %s at %q, want %q", s, ck.Streams[s], id)
			}
		}
		if p := pending(t, acks); p[0] != 0 || p[1] != 0 {
			t.Fatalf("pending after the commit: %v, want none", p)
		}
	}

	t.Run("XACK forbidden", func(t *testing.T) {
		name, acks, u := setup(t)
		user := "xmirror-test-" + name
		c := testenv.RedisUser(t, admin, user, "-xack")
		unchanged(t, name, acks, CommitR2K(ctx, c, name, group, acks, u, time.Now()), "NOPERM")
		// The user may XACK again: the same commit applies whole.
		if err := admin.Do(ctx, admin.B().AclSetuser().Username(user).Rule("+xack").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		applied(t, c, name, acks, u)
	})
	// EXEC checks the ACL again: an XACK allowed while queued can fail
	// when the transaction runs, and the checkpoint script after it must
	// then write nothing.
	t.Run("XACK forbidden between queueing and EXEC", func(t *testing.T) {
		name, acks, u := setup(t)
		acks, u.Streams = acks[1:], map[string]string{acks[1].Stream: u.Streams[acks[1].Stream]}
		user := "xmirror-test-" + name
		c := testenv.RedisUser(t, admin, user)
		var (
			applied []rueidis.RedisMessage
			err     error
		)
		c.Dedicated(func(dc rueidis.DedicatedClient) error {
			dc.Do(ctx, dc.B().Multi().Build())
			dc.Do(ctx, dc.B().Xack().Key(acks[0].Stream).Group(group).Id(acks[0].IDs...).Build())
			if err := admin.Do(ctx, admin.B().AclSetuser().Username(user).Rule("-xack").Build()).Error(); err != nil {
				t.Error(err)
			}
			dc.Do(ctx, dc.B().Eval().Script(r2kCommitScript).Numkeys(2).Key(acks[0].Stream, R2KKey(name)).
				Arg(group, "3", "30", "partition:t:0", "10", "stream:"+acks[0].Stream, u.Streams[acks[0].Stream]).Build())
			applied, err = dc.Do(ctx, dc.B().Exec().Build()).ToArray()
			return nil
		})
		if err != nil || len(applied) != 2 {
			t.Fatalf("EXEC: %v, %d replies", err, len(applied))
		}
		if applied[0].Error() == nil {
			t.Skip("this server does not check the ACL again at EXEC")
		}
		reply, _ := applied[1].AsStrSlice()
		if len(reply) != 2 || reply[0] != "noperm" {
			t.Fatalf("script reply %q after an XACK refused in EXEC, want noperm", reply)
		}
		unchanged(t, name, acks, applied[0].Error(), "NOPERM")
	})
	t.Run("second stream no longer a stream", func(t *testing.T) {
		name, acks, u := setup(t)
		b := acks[1].Stream
		if err := admin.Do(ctx, admin.B().Del().Key(b).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if err := admin.Do(ctx, admin.B().Set().Key(b).Value("x").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		err := CommitR2K(ctx, admin, name, group, acks, u, time.Now())
		if !errors.Is(err, ErrCommitRefused) {
			t.Fatalf("commit: %v, want ErrCommitRefused", err)
		}
		// The acks of the stream that is still one stand (safe: the
		// checkpoint is behind them, never ahead).
		unchanged(t, name, nil, err, "WRONGTYPE the key holds a string")
	})
}

// A commit whose MULTI or EXEC an ACL refuses says so, and what to grant,
// rather than a misleading EXEC error; refused, it is not retried.
func TestCommitR2KSaysTheServerRefusesTransactions(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	for _, denied := range []string{"-multi", "-exec"} {
		t.Run(denied, func(t *testing.T) {
			user := testenv.Name(t, "u")
			if err := c.Do(ctx, c.B().AclSetuser().Username(user).Rule("on", ">pw", "~*", "&*", "+@all", denied).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Do(context.Background(), c.B().AclDeluser().Username(user).Build()) })
			opt, err := rueidis.ParseURL(testenv.RedisURL())
			if err != nil {
				t.Fatal(err)
			}
			opt.Username, opt.Password, opt.DisableCache = user, "pw", true
			uc, err := rueidis.NewClient(opt)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(uc.Close)
			name := testenv.Name(t, "m")
			stream := testenv.Name(t, "s")
			t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(R2KKey(name), stream).Build()) })

			if err := CheckTransactions(ctx, uc, "redis-to-kafka"); err == nil || !strings.Contains(err.Error(), "the server refuses MULTI/EXEC for this user") || !strings.Contains(err.Error(), "+multi +exec") {
				t.Fatalf("CheckTransactions: %v; want the refusal and what to grant", err)
			}
			u := R2KUpdate{Streams: map[string]string{stream: "1-0"}, Partitions: map[TopicPartition]int64{{Topic: "t", Partition: 0}: 1}, Entries: 1}
			err = CommitR2K(ctx, uc, name, "g", []R2KAck{{Stream: stream, IDs: []string{"1-0"}}}, u, time.Now())
			if !errors.Is(err, ErrCommitRefused) || !strings.Contains(err.Error(), "the server refuses MULTI/EXEC for this user") {
				t.Fatalf("CommitR2K: %v; want a refusal saying the server refuses MULTI/EXEC", err)
			}
		})
	}
}
