package k2r

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror/setting"
)

func TestAtomicStepComparesAndSets(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := stepTarget(t, c)
	key := checkpoint.K2RKey(name, stream)
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 0}
	write := func(from, to int64, n int) *Write { return testWrite(stream, tp, from, to, n) }
	opt := stepOptions{Name: name}
	step := testSink(c, opt).newStep([]*Write{write(checkpoint.NoPosition, 3, 3)}, time.Now())
	if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, step); err != nil {
		t.Fatal(err)
	}
	// The same step again (a retry after a lost reply) is a no-op.
	res, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, step)
	if err != nil || !res[0].Replayed {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	// A batch from a position the checkpoint does not hold is refused.
	_, err = testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, opt).newStep([]*Write{write(1, 4, 1)}, time.Now()))
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Stored != 3 || conflict.Expected != 1 {
		t.Fatalf("conflict: %v", err)
	}
	if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 3 {
		t.Fatalf("XLEN = %d, want 3", n)
	}
	ck, found, err := checkpoint.LoadK2R(ctx, c, name, stream)
	if err != nil || !found || ck.Partitions[tp] != 3 || ck.Entries != 3 {
		t.Fatalf("checkpoint.LoadK2R = %+v %v %v", ck, found, err)
	}
	// Damage is reported, never read as a fresh start.
	c.Do(ctx, c.B().Hset().Key(key).FieldValue().FieldValue("t:0", "x").Build())
	if _, _, err := checkpoint.LoadK2R(ctx, c, name, stream); !errors.Is(err, checkpoint.ErrCorrupt) || !strings.Contains(err.Error(), "not an offset") {
		t.Fatalf("garbage offset: %v", err)
	}
	c.Do(ctx, c.B().Hdel().Key(key).Field("version").Build())
	if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, opt).newStep([]*Write{write(3, 4, 1)}, time.Now())); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("script on a hash without version: %v", err)
	}
}

func TestAtomicStepPreservedIDsAreLookedUpNotComparedWithTheTop(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := stepTarget(t, c)
	c.Do(ctx, c.B().Xadd().Key(stream).Id("3-0").FieldValue().FieldValue("f", "another").Build())
	c.Do(ctx, c.B().Xadd().Key(stream).Id("5-0").FieldValue().FieldValue("f", "5-0").Build())
	key := checkpoint.K2RKey(name, stream)
	opt := stepOptions{Name: name, PreserveIDs: true}
	// 3-0 is there, but another entry: taken. 4-0 is below the top 5-0
	// but not there: not present. 5-0 is. 6-0 is new, and 6-0 again
	// present once the first is written.
	w := &Write{Stream: stream, Moves: []Move{{Partition: checkpoint.TopicPartition{Topic: "t"}, From: checkpoint.NoPosition, To: 4}}}
	for _, id := range []string{"3-0", "4-0", "5-0", "6-0", "6-0"} {
		w.AddEntry(id)
		w.AddField("f", id)
	}
	step := testSink(c, opt).newStep([]*Write{w}, time.Now())
	res, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, step)
	var ids *IDCheckError
	if !errors.As(err, &ids) || !errors.As(res[0].Err, &ids) || ids.LastID != "5-0" || string(ids.Classes) != "tbpwp" {
		t.Fatalf("applySteps = %+v, %v; want the classes tbpwp against 5-0", res, err)
	}
	if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 2 {
		t.Fatalf("a refused write added entries: %d", n)
	}
	if n, _ := c.Do(ctx, c.B().Exists().Key(key).Build()).AsInt64(); n != 0 {
		t.Fatal("a refused write moved the checkpoint")
	}
	// Told what to expect, it writes the new entry only.
	w.Expect(ids.Classes, ids.State)
	res, err = testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, step)
	if err != nil || res[0].Added != 1 || res[0].Present != 2 {
		t.Fatalf("applySteps = %+v, %v", res, err)
	}
	got, _ := c.Do(ctx, c.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if len(got) != 3 || got[2].ID != "6-0" || got[0].FieldValues["f"] != "another" {
		t.Fatalf("stream: %+v", got)
	}
	if v, _ := c.Do(ctx, c.B().Hget().Key(key).Field("t:0").Build()).ToString(); v != "4" {
		t.Fatalf("position %q", v)
	}
}

func TestAtomicStepPreservedIDsInOrderAreCheckedByTheFirst(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := stepTarget(t, c)
	opt := stepOptions{Name: name, PreserveIDs: true}
	tp := checkpoint.TopicPartition{Topic: "t"}
	write := func(from, to int64, ids ...string) *Write {
		w := &Write{Stream: stream, Moves: []Move{{Partition: tp, From: from, To: to}}}
		for _, id := range ids {
			w.AddEntry(id)
			w.AddField("f", id)
		}
		return w
	}
	if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, opt).newStep([]*Write{write(checkpoint.NoPosition, 3, "4-1", "5-1", "6-1")}, time.Now())); err != nil {
		t.Fatal(err)
	}
	// Deleted entries leave the last ID where it was: 6-1 is not there,
	// and still Redis cannot add it.
	c.Do(ctx, c.B().Xdel().Key(stream).Id("6-1").Build())
	w := write(3, 5, "6-1", "7-1")
	step := testSink(c, opt).newStep([]*Write{w}, time.Now())
	_, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, step)
	var ids *IDCheckError
	if !errors.As(err, &ids) || ids.LastID != "6-1" || ids.Classes != nil {
		t.Fatalf("err = %v; want the first ID found not above 6-1", err)
	}
	w.Expect(nil, "")
	if _, err = testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, step); !errors.As(err, &ids) || string(ids.Classes) != "bw" {
		t.Fatalf("err = %v; want the classes bw", err)
	}
}

func TestAtomicStepWritesNothingOfARefusedWrite(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	name := testenv.Name(t, "m")
	good, taken := testenv.Stream(t, c), testenv.Stream(t, c)
	t.Cleanup(func() {
		c.Do(context.Background(), c.B().Del().Key(checkpoint.K2RKey(name, good), checkpoint.K2RKey(name, taken)).Build())
	})
	if err := c.Do(ctx, c.B().Set().Key(taken).Value("not a stream").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	write := func(stream string, from, to int64) *Write {
		return testWrite(stream, checkpoint.TopicPartition{Topic: "t", Partition: 1}, from, to, int(to-from))
	}
	opt := stepOptions{Name: name}
	tests := []struct {
		name    string
		writes  []*Write
		wantErr string
		xlen    int64 // of good afterwards
	}{
		{"a stream and a key of another type in one call", []*Write{write(good, 0, 5), write(taken, 0, 5)}, "WRONGTYPE", 5},
		{"a conflict after an applied write", []*Write{write(good, 5, 7), write(good, 0, 3)}, "holds offset 7", 7},
		{"a retry of both", []*Write{write(good, 5, 7), write(good, 7, 9)}, "", 9},
	}
	// The first write starts the partition at 0.
	if err := checkpoint.InitK2RPartitions(ctx, c, name, map[string]checkpoint.K2RInit{good: {Starts: map[checkpoint.TopicPartition]int64{{Topic: "t", Partition: 1}: 0}}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		_, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, opt).newStep(tt.writes, time.Now()))
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Fatalf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
		}
		if n, _ := c.Do(ctx, c.B().Xlen().Key(good).Build()).AsInt64(); n != tt.xlen {
			t.Fatalf("%s: XLEN = %d, want %d", tt.name, n, tt.xlen)
		}
		for _, stream := range []string{good, taken} {
			if n, _ := c.Do(ctx, c.B().Exists().Key(checkpoint.K2RGuardKey(name, stream)).Build()).AsInt64(); n != 0 {
				t.Fatalf("%s: guard key of %q left behind", tt.name, stream)
			}
		}
	}
	// The refused stream got no checkpoint, the good one every position.
	if n, _ := c.Do(ctx, c.B().Exists().Key(checkpoint.K2RKey(name, taken)).Build()).AsInt64(); n != 0 {
		t.Fatal("a checkpoint was written for the stream that was not written")
	}
	ck, _, err := checkpoint.LoadK2R(ctx, c, name, good)
	if err != nil || ck.Partitions[checkpoint.TopicPartition{Topic: "t", Partition: 1}] != 9 || ck.Entries != 9 {
		t.Fatalf("checkpoint.LoadK2R = %+v, %v", ck, err)
	}
}

func TestAtomicStepRetriedAfterTheCallWasAppliedIsAReplay(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 0}
	opt := func(name string) stepOptions { return stepOptions{Name: name} }
	tests := []struct {
		name    string
		applied int // of the call's three steps, before the retry
	}{
		{"whole call applied, reply lost", 3},
		{"first two applied, then the connection lost", 2},
		{"first applied", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, name := stepTarget(t, c)
			if err := checkpoint.InitK2RPartitions(ctx, c, name, map[string]checkpoint.K2RInit{stream: {Starts: map[checkpoint.TopicPartition]int64{tp: 0}}}); err != nil {
				t.Fatal(err)
			}
			var steps []*step
			for _, r := range [][2]int64{{0, 4}, {4, 6}, {6, 9}} {
				steps = append(steps, testSink(c, opt(name)).newStep([]*Write{testWrite(stream, tp, r[0], r[1], int(r[1]-r[0]))}, time.Now()))
			}
			if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, steps[:tt.applied]...); err != nil {
				t.Fatal(err)
			}
			// The retry of the whole call must find what was applied
			// done, not in conflict, and apply the rest.
			res, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, steps...)
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			for i, r := range res {
				if r.Replayed != (i < tt.applied) {
					t.Errorf("step %d: replayed %v, want %v", i, r.Replayed, i < tt.applied)
				}
			}
			if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 9 {
				t.Fatalf("XLEN = %d, want 9", n)
			}
		})
	}
}

func TestAtomicStepChainedRunsChainedCallsInTheirOrder(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := stepTarget(t, c)
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 0}
	opt := stepOptions{Name: name}
	if err := checkOrderAccess(ctx, c, name); err != nil {
		t.Fatal(err)
	}
	first, second := checkpoint.K2ROrderKey(name, "test", 1), checkpoint.K2ROrderKey(name, "test", 2)
	// The second call reaches Redis first: it waits for the first.
	done := make(chan error)
	go func() {
		_, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{After: first, Token: second}, testSink(c, opt).newStep([]*Write{testWrite(stream, tp, 3, 5, 2)}, time.Now()))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{Token: first}, testSink(c, opt).newStep([]*Write{testWrite(stream, tp, checkpoint.NoPosition, 3, 3)}, time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("second call: %v", err)
	}
	entries, err := c.Do(ctx, c.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if err != nil || len(entries) != 5 || entries[3].FieldValues["n"] != "0" || entries[2].FieldValues["n"] != "2" {
		t.Fatalf("entries %v, %v: want the first call's 3, then the second's 2", entries, err)
	}
	// Only the unclaimed token is left, and it expires.
	if ttl, _ := c.Do(ctx, c.B().Pttl().Key(second).Build()).AsInt64(); ttl <= 0 || ttl > orderTokenTTL.Milliseconds() {
		t.Errorf("PTTL of the last token = %d", ttl)
	}
	if n, _ := c.Do(ctx, c.B().Exists().Key(first).Build()).AsInt64(); n != 0 {
		t.Error("the claimed token is left behind")
	}

	// A call whose wait ended without its predecessor's token (here: the
	// token key is no list) writes nothing out of place and says so.
	c.Do(ctx, c.B().Set().Key(first).Value("x").Build())
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(first, second).Build()) })
	_, err = testSink(c, stepOptions{}).applySteps(ctx, callOrder{After: first}, testSink(c, opt).newStep([]*Write{testWrite(stream, tp, 7, 9, 2)}, time.Now()))
	if !errors.Is(err, ErrOutOfOrder) || IsConflict(err) {
		t.Fatalf("call run early: %v, want ErrOutOfOrder", err)
	}
	if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 5 {
		t.Fatalf("XLEN = %d, want 5", n)
	}
}

// A server that refuses scripts: xmirror refuses to start, and a write
// that runs anyway is refused whole (its positions script is refused while
// queued), never applied without its check.
func TestAtomicStepWithoutTheCheckIsRefusedAndVerified(t *testing.T) {
	admin := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, admin)
	name := testenv.Name(t, "m")
	user := "xmirror-test-" + name
	t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(checkpoint.K2RKey(name, stream)).Build()) })
	c := testenv.RedisUser(t, admin, user, "-@scripting")

	if err := checkStepAccess(ctx, c, name, stream); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("checkStepAccess without scripting: %v, want NOPERM", err)
	}
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 0}
	w := testWrite(stream, tp, 5, 6, 1)
	_, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, stepOptions{Name: name}).newStep([]*Write{w}, time.Now()))
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("write without scripting: %v, want NOPERM", err)
	}
	if n, _ := admin.Do(ctx, admin.B().Exists().Key(stream, checkpoint.K2RKey(name, stream)).Build()).AsInt64(); n != 0 {
		t.Fatalf("%d of the stream and its checkpoint exist after a refused write, want neither", n)
	}
}

// A user that may not run MULTI would have the commands queued after it
// run one by one, outside any transaction: the access check at start
// refuses it, naming MULTI.
func TestCheckStepAccessRefusesAUserWithoutMulti(t *testing.T) {
	admin := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, admin)
	name := testenv.Name(t, "m")
	user := "xmirror-test-" + name
	c := testenv.RedisUser(t, admin, user, "-multi")
	err := checkStepAccess(ctx, c, name, stream)
	if err == nil || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(err.Error(), "MULTI") {
		t.Fatalf("checkStepAccess without MULTI: %v, want NOPERM naming MULTI", err)
	}
	if err := checkStepAccess(ctx, admin, name, stream); err != nil {
		t.Fatalf("checkStepAccess with every command: %v", err)
	}
}

// stepTarget is a new stream and mirror name, whose checkpoint is deleted
// after the test.
func stepTarget(t *testing.T, c rueidis.Client) (stream, name string) {
	stream, name = testenv.Stream(t, c), testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(checkpoint.K2RKey(name, stream)).Build()) })
	return stream, name
}

// testSink is a sink on c whose steps are shaped by opt.
func testSink(c rueidis.Client, opt stepOptions) *RedisSink {
	return &RedisSink{c: c, opt: opt}
}

// testWrite is a write of n entries into stream, moving tp from from to to.
func testWrite(stream string, tp checkpoint.TopicPartition, from, to int64, n int) *Write {
	w := &Write{Stream: stream, Moves: []Move{{Partition: tp, From: from, To: to}}}
	for i := 0; i < n; i++ {
		w.AddEntry("*")
		w.AddField("n", strconv.Itoa(i))
	}
	return w
}

// The stream key turned into another type after the check passed and
// before EXEC (the stream is not WATCHed): the XADDs fail inside EXEC, and
// the positions must not move without them. Once the key is deleted the
// same batch is written whole, once.
func TestStreamTypeChangedBetweenCheckAndExecMovesNoPosition(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := stepTarget(t, c)
	key := checkpoint.K2RKey(name, stream)
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 0}
	if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, stepOptions{Name: name}).newStep([]*Write{testWrite(stream, tp, checkpoint.NoPosition, 3, 3)}, time.Now())); err != nil {
		t.Fatal(err)
	}
	opt := stepOptions{Name: name, afterCheck: func(rueidis.DedicatedClient) {
		for _, r := range c.DoMulti(ctx, c.B().Del().Key(stream).Build(), c.B().Set().Key(stream).Value("x").Build()) {
			if err := r.Error(); err != nil {
				t.Error(err)
			}
		}
	}}
	_, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, opt).newStep([]*Write{testWrite(stream, tp, 3, 6, 3)}, time.Now()))
	if !errors.Is(err, ErrWrongType) || !strings.Contains(err.Error(), "became a string") {
		t.Fatalf("write after the key became a string: %v, want ErrWrongType", err)
	}
	ck, _, err := checkpoint.LoadK2R(ctx, c, name, stream)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Partitions[tp] != 3 || ck.Entries != 3 {
		t.Fatalf("checkpoint %+v after a write whose entries were refused, want position 3 and 3 entries", ck)
	}

	// The key deleted, the batch is written again, whole and once.
	if err := c.Do(ctx, c.B().Del().Key(stream).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, stepOptions{Name: name}).newStep([]*Write{testWrite(stream, tp, 3, 6, 3)}, time.Now())); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 3 {
		t.Fatalf("XLEN = %d after the rerun, want the batch's 3", n)
	}
	if got, _ := c.Do(ctx, c.B().Hmget().Key(key).Field("t:0", "entries").Build()).AsStrSlice(); strings.Join(got, " ") != "6 6" {
		t.Fatalf("position and entries %q after the rerun, want 6 6", got)
	}
}

// streamState is what XINFO STREAM says of a stream's history (its last
// ID, entries added) and its length, or "none". (Its greatest deleted ID
// cannot be set back: XSETID takes only a greater one.)
func streamState(t *testing.T, c rueidis.Client, stream string) string {
	t.Helper()
	ctx := context.Background()
	if n, _ := c.Do(ctx, c.B().Exists().Key(stream).Build()).AsInt64(); n == 0 {
		return "none"
	}
	info, err := c.Do(ctx, c.B().XinfoStream().Key(stream).Build()).ToMap()
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, f := range []string{"last-generated-id", "entries-added", "length"} {
		m := info[f]
		v, _ := m.ToString()
		if n, err := m.AsInt64(); err == nil {
			v = strconv.FormatInt(n, 10)
		}
		parts = append(parts, f+"="+v)
	}
	return strings.Join(parts, " ")
}

// A transaction that runs without its check (the server refused the
// check's script for a moment: -LOADING as a restarted Redis finishes
// loading, -BUSY; here the watch is dropped after the check refused the
// write) applies nothing when the checkpoint does not hold its start: the
// XADDs are taken back in the same EXEC, the stream's history and the
// checkpoint stay as they were, and the result is what the check would
// have said.
func TestAtomicStepWhoseCheckCouldNotRunAppliesNothingFromAWrongStart(t *testing.T) {
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 0}
	for _, tc := range []struct {
		name        string
		deleteFirst bool  // the stream deleted after the first write
		from, to    int64 // the second write's move
		replayed    bool
		conflict    bool
	}{
		{name: "a write already applied, retried", from: checkpoint.NoPosition, to: 3, replayed: true},
		{name: "a start behind the checkpoint", from: 1, to: 4, conflict: true},
		{name: "a start ahead of the checkpoint", from: 5, to: 8, conflict: true},
		{name: "a stream that is not there", deleteFirst: true, from: 1, to: 4, conflict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testenv.Redis(t)
			ctx := context.Background()
			stream, name := stepTarget(t, c)
			if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, stepOptions{Name: name}).newStep([]*Write{testWrite(stream, tp, checkpoint.NoPosition, 3, 3)}, time.Now())); err != nil {
				t.Fatal(err)
			}
			if tc.deleteFirst {
				c.Do(ctx, c.B().Del().Key(stream).Build())
			}
			before := streamState(t, c, stream)
			ckBefore, _ := c.Do(ctx, c.B().Hgetall().Key(checkpoint.K2RKey(name, stream)).Build()).AsStrMap()
			opt := stepOptions{Name: name, afterCheck: func(dc rueidis.DedicatedClient) {
				// The check refused the write and touched the guard;
				// without the watch, EXEC runs as if it never had.
				if err := dc.Do(ctx, dc.B().Unwatch().Build()).Error(); err != nil {
					t.Error(err)
				}
			}}
			res, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, opt).newStep([]*Write{testWrite(stream, tp, tc.from, tc.to, 3)}, time.Now()))
			var conflict *ConflictError
			switch {
			case tc.replayed && (err != nil || !res[0].Replayed):
				t.Fatalf("replayed write: %+v, %v; want a replay", res, err)
			case tc.conflict && !errors.As(err, &conflict):
				t.Fatalf("write from a wrong start: %v, want a *ConflictError", err)
			case tc.conflict && strings.Contains(err.Error(), "twice"):
				t.Fatalf("write from a wrong start: %v; it must not have been applied", err)
			}
			if after := streamState(t, c, stream); after != before {
				t.Fatalf("stream after a write from a wrong start: %s, want it as before: %s", after, before)
			}
			ckAfter, _ := c.Do(ctx, c.B().Hgetall().Key(checkpoint.K2RKey(name, stream)).Build()).AsStrMap()
			delete(ckBefore, "updated_ms")
			delete(ckAfter, "updated_ms")
			if fmt.Sprint(ckAfter) != fmt.Sprint(ckBefore) {
				t.Fatalf("checkpoint after a write from a wrong start: %v, want %v", ckAfter, ckBefore)
			}
			if n, _ := c.Do(ctx, c.B().Exists().Key(checkpoint.K2RGuardKey(name, stream)).Build()).AsInt64(); n != 0 {
				t.Fatalf("the guard key outlived the write")
			}
			// The right start still writes, once, after the entries
			// taken back.
			from := int64(3)
			if _, err := testSink(c, stepOptions{}).applySteps(ctx, callOrder{}, testSink(c, stepOptions{Name: name}).newStep([]*Write{testWrite(stream, tp, from, 6, 3)}, time.Now())); err != nil {
				t.Fatal(err)
			}
			want := int64(6)
			if tc.deleteFirst {
				want = 3
			}
			if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != want {
				t.Fatalf("XLEN = %d after the right write, want %d", n, want)
			}
		})
	}
}

// flagNames names the settings as a command line would.
func flagNames(field string) (string, bool) {
	switch field {
	case "Name":
		return "--name", true
	case "Start":
		return "--start", true
	case "Stream":
		return "--stream", true
	case "OnTopicRecreated":
		return "--on-topic-recreated", true
	}
	return "", false
}

// A conflict says which way the position moved: ahead is another process,
// back with the stream intact is a position moved back, and Redis losing
// writes is named as such.
func TestConflictsSayWhichWayThePositionMoved(t *testing.T) {
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 2}
	tests := []struct {
		name     string
		err      error
		wentBack bool
		want     []string
		notWant  []string
	}{
		{"ahead", &ConflictError{Key: "k", Name: "m", Partition: tp, Stored: 700, Expected: 500}, false,
			[]string{"holds offset 700, but this mirror continues from offset 500", "another process is probably running", `mirror name "m"`, "give this one another --name"}, []string{"went back"}},
		{"created by another", &ConflictError{Key: "k", Name: "m", Partition: tp, Stored: 3, Expected: checkpoint.NoPosition}, false,
			[]string{"another process"}, nil},
		{"back, stream intact", &ConflictError{Key: "k", Name: "m", Partition: tp, Stored: 300, Expected: 500, Stream: "s", Kept: "5-0"}, true,
			[]string{"went back", `stream "s" still holds entry 5-0`, "twice", `field "t:2" back to 500`}, []string{"probably running", "lost writes"}},
		{"lost writes", &LostWritesError{Key: "k", Stream: "s", Partition: tp, From: 500, To: 300, Lost: "5-0"}, false,
			[]string{"Redis lost writes: positions of t/2 went back from 500 to 300", "lost entry 5-0", "mirroring again from 300"}, nil},
		{"lost checkpoint", &LostWritesError{Key: "k", Stream: "s", Partition: tp, From: 500, To: checkpoint.NoPosition}, false,
			[]string{"Redis lost writes: the position of t/2 is gone (it was offset 500", "(--start; with --start latest"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c *ConflictError
			if errors.As(tc.err, &c) && c.WentBack() != tc.wentBack {
				t.Errorf("WentBack = %v, want %v", c.WentBack(), tc.wentBack)
			}
			if plain := tc.err.Error(); strings.Contains(plain, "--") {
				t.Errorf("%q names a flag", plain)
			}
			msg := setting.Render(tc.err, flagNames)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not say %q", msg, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("%q says %q", msg, w)
				}
			}
		})
	}
}

// A recreated topic's error says which settings mirror the new topic or
// keep the old checkpoint, named as the front end names them.
func TestTopicRecreatedNamesTheSettingsThatDecide(t *testing.T) {
	err := topicRecreated(&checkpoint.TopicRecreatedError{Key: "k", Topic: "t", Recorded: "old-id", Current: "new-id"})
	if plain := err.Error(); strings.Contains(plain, "--") || !strings.Contains(plain, "OnTopicRecreated restart") {
		t.Errorf("%q: want the settings by field name", plain)
	}
	msg := setting.Render(err, flagNames)
	for _, want := range []string{`topic "t" was deleted and created again`, "old-id", "new-id", "run with --on-topic-recreated restart", "give this mirror another --name"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
	if !errors.As(err, new(*checkpoint.TopicRecreatedError)) {
		t.Errorf("%v does not wrap a *checkpoint.TopicRecreatedError", err)
	}
}
