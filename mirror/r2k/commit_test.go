package r2k

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// A commit the server refuses any part of (an ACL forbidding XACK, a
// stream key that is no longer a stream) leaves the checkpoint where it
// was, with every entry of the refused stream still pending; once the
// cause is gone the same commit applies whole.
func TestAckAndCheckpointRefusedAckMovesNothing(t *testing.T) {
	admin := testenv.Redis(t)
	ctx := context.Background()
	group := "g"
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 0}
	// setup makes two streams with pending entries (a has more than the
	// script acknowledges in one XACK) and a checkpoint at offset 7.
	setup := func(t *testing.T) (name string, acks []streamAck, u checkpoint.R2KUpdate) {
		name = testenv.Name(t, "m")
		t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
		u = checkpoint.R2KUpdate{Streams: map[string]string{}, Partitions: map[checkpoint.TopicPartition]int64{tp: 7 + 2503}, Entries: 2503, Bytes: 25030}
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
			acks = append(acks, streamAck{Stream: s, IDs: ids})
			u.Streams[s] = ids[len(ids)-1]
		}
		if err := checkpoint.InitR2KPartitions(ctx, admin, name, map[checkpoint.TopicPartition]int64{tp: 7}); err != nil {
			t.Fatal(err)
		}
		return name, acks, u
	}
	pending := func(t *testing.T, acks []streamAck) []int64 {
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
	unchanged := func(t *testing.T, name string, acks []streamAck, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("commit: %v, want an error saying %q", err, want)
		}
		ck, _, lerr := checkpoint.LoadR2K(ctx, admin, name)
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
	applied := func(t *testing.T, c rueidis.Client, name string, acks []streamAck, u checkpoint.R2KUpdate) {
		t.Helper()
		if err := ackAndCheckpoint(ctx, c, name, group, acks, u, time.Now()); err != nil {
			t.Fatal(err)
		}
		ck, _, err := checkpoint.LoadR2K(ctx, admin, name)
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
		unchanged(t, name, acks, ackAndCheckpoint(ctx, c, name, group, acks, u, time.Now()), "NOPERM")
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
			dc.Do(ctx, checkpoint.R2KCommitCommand(c, name, group, []string{acks[0].Stream}, checkpoint.R2KUpdate{
				Streams:    map[string]string{acks[0].Stream: u.Streams[acks[0].Stream]},
				Partitions: map[checkpoint.TopicPartition]int64{tp: 10},
				Entries:    3, Bytes: 30,
			}, time.Now()))
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
		if ran, err := checkpoint.R2KCommitReply(name, applied[1]); !ran || !errors.Is(err, checkpoint.ErrCommitRefused) {
			t.Fatalf("R2KCommitReply: ran %v, %v; want a refusal", ran, err)
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
		err := ackAndCheckpoint(ctx, admin, name, group, acks, u, time.Now())
		if !errors.Is(err, checkpoint.ErrCommitRefused) {
			t.Fatalf("commit: %v, want checkpoint.ErrCommitRefused", err)
		}
		// The acks of the stream that is still one stand (safe: the
		// checkpoint is behind them, never ahead).
		unchanged(t, name, nil, err, "WRONGTYPE the key holds a string")
	})
}

// A commit whose MULTI or EXEC an ACL refuses says so, and what to grant,
// rather than a misleading EXEC error; refused, it is not retried.
func TestAckAndCheckpointSaysTheServerRefusesTransactions(t *testing.T) {
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
			t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(checkpoint.R2KKey(name), stream).Build()) })

			if err := checkTransactions(ctx, uc, "redis-to-kafka"); err == nil || !strings.Contains(err.Error(), "the server refuses MULTI/EXEC for this user") || !strings.Contains(err.Error(), "+multi +exec") {
				t.Fatalf("checkTransactions: %v; want the refusal and what to grant", err)
			}
			u := checkpoint.R2KUpdate{Streams: map[string]string{stream: "1-0"}, Partitions: map[checkpoint.TopicPartition]int64{{Topic: "t", Partition: 0}: 1}, Entries: 1}
			err = ackAndCheckpoint(ctx, uc, name, "g", []streamAck{{Stream: stream, IDs: []string{"1-0"}}}, u, time.Now())
			if !errors.Is(err, checkpoint.ErrCommitRefused) || !strings.Contains(err.Error(), "the server refuses MULTI/EXEC for this user") {
				t.Fatalf("ackAndCheckpoint: %v; want a refusal saying the server refuses MULTI/EXEC", err)
			}
		})
	}
}
