package cmd_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/internal/testenv"
)

// An XACK the server refuses (an ACL that forbids it) fails the commit
// without moving the checkpoint: the partition offset stays before the
// records whose entries are still pending, so the rerun (the cause fixed)
// reads them back and sends none of them again.
func TestRefusedAckMovesNoCheckpointAndTheRerunDoublesNothing(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	stream := testenv.Stream(t, rc)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "m")
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key("xmirror:r2k:"+name).Build()) })
	ids := addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	// A user that may do everything but acknowledge entries.
	user := testenv.Name(t, "u")
	must(t, rc.Do(ctx, rc.B().AclSetuser().Username(user).Rule("on", ">pw", "~*", "&*", "+@all", "-xack").Build()).Error())
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().AclDeluser().Username(user).Build()) })
	addr := strings.TrimPrefix(testenv.RedisURL(), "redis://")
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--timeout", "20s"}

	r := xmirror(t, append(args, "--redis", "redis://"+user+":pw@"+addr)...)
	if r.code != 1 || !strings.Contains(r.stderr, "NOPERM") {
		t.Fatalf("exit %d, stderr %q; want exit 1 with the server's NOPERM", r.code, r.stderr)
	}
	if n := len(readTopic(t, topic)); n != 10 {
		t.Fatalf("%d records after the refused commit, want the 10 produced", n)
	}
	ck, err := rc.Do(ctx, rc.B().Hgetall().Key("xmirror:r2k:"+name).Build()).AsStrMap()
	must(t, err)
	if off := ck["partition:"+topic+":0"]; off != "0" {
		t.Fatalf("checkpoint partition offset %q after the refused commit, want 0 (checkpoint %v)", off, ck)
	}
	if pos, ok := ck["stream:"+stream]; ok {
		t.Fatalf("checkpoint stream position %q after the refused commit, want none", pos)
	}
	group := onlyGroup(t, rc, stream)
	p, err := rc.Do(ctx, rc.B().Xpending().Key(stream).Group(group).Build()).ToArray()
	must(t, err)
	if n, _ := p[0].AsInt64(); n != 10 {
		t.Fatalf("%d entries pending after the refused commit, want 10", n)
	}

	// The cause fixed (the default user), the rerun sends nothing again.
	mustMirror(t, args...)
	seen := map[string]int{}
	for _, rec := range readTopic(t, topic) {
		id, _ := header(rec, "xmirror.id")
		seen[id]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("entry %s is in the topic %d times, want once", id, seen[id])
		}
	}
	if len(seen) != len(ids) {
		t.Errorf("topic holds %d distinct entries, want %d", len(seen), len(ids))
	}
	p, err = rc.Do(ctx, rc.B().Xpending().Key(stream).Group(group).Build()).ToArray()
	must(t, err)
	if n, _ := p[0].AsInt64(); n != 0 {
		t.Fatalf("%d entries pending after the rerun, want 0", n)
	}
}

// An ACL that lets a user acknowledge entries and write hashes but not run
// transactions (MULTI/EXEC) stops redis-to-kafka at start, saying so and
// what to grant, before anything is read or produced.
func TestUserWithoutTransactionsIsRefusedBeforeAnythingIsMirrored(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	ctx := context.Background()
	addr := strings.TrimPrefix(testenv.RedisURL(), "redis://")
	for _, denied := range []string{"-multi", "-exec"} {
		t.Run(denied, func(t *testing.T) {
			stream := testenv.Stream(t, rc)
			topic := testenv.Topic(t, kc, 1)
			name := testenv.Name(t, "m")
			t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key("xmirror:r2k:"+name).Build()) })
			addEntries(t, rc, stream, 0, 10, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
			user := testenv.Name(t, "u")
			must(t, rc.Do(ctx, rc.B().AclSetuser().Username(user).Rule("on", ">pw", "~*", "&*", "+@all", denied).Build()).Error())
			t.Cleanup(func() { rc.Do(context.Background(), rc.B().AclDeluser().Username(user).Build()) })

			r := xmirror(t, "r2k", "--stream", stream, "--topic", topic, "--name", name, "--timeout", "20s", "--redis", "redis://"+user+":pw@"+addr)
			if r.code != 1 || !strings.Contains(r.stderr, "the server refuses MULTI/EXEC for this user") || !strings.Contains(r.stderr, "+multi +exec") {
				t.Fatalf("exit %d, stderr %q; want exit 1 saying the server refuses MULTI/EXEC and what to grant", r.code, r.stderr)
			}
			if n := len(readTopic(t, topic)); n != 0 {
				t.Fatalf("%d records produced before the refusal, want none", n)
			}
			groups, err := rc.Do(ctx, rc.B().XinfoGroups().Key(stream).Build()).ToArray()
			must(t, err)
			for _, g := range groups {
				info, _ := g.AsMap()
				pendingMsg := info["pending"]
				if n, _ := pendingMsg.AsInt64(); n != 0 {
					t.Fatalf("%d entries read before the refusal, want none", n)
				}
			}
		})
	}
}
