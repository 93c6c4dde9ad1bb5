package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

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

func TestApplyK2RComparesAndSets(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := k2rTarget(t, c)
	key := K2RKey(name, stream)
	tp := TopicPartition{Topic: "t", Partition: 0}
	write := func(from, to int64, n int) *K2RWrite { return testWrite(stream, tp, from, to, n) }
	opt := K2ROptions{Name: name}
	step := NewK2RStep(c, opt, []*K2RWrite{write(NoPosition, 3, 3)}, time.Now())
	if _, err := ApplyK2R(ctx, c, step); err != nil {
		t.Fatal(err)
	}
	// The same step again (a retry after a lost reply) is a no-op.
	res, err := ApplyK2R(ctx, c, step)
	if err != nil || !res[0].Replayed {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	// A batch from a position the checkpoint does not hold is refused.
	_, err = ApplyK2R(ctx, c, NewK2RStep(c, opt, []*K2RWrite{write(1, 4, 1)}, time.Now()))
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Stored != 3 || conflict.Expected != 1 {
		t.Fatalf("conflict: %v", err)
	}
	if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 3 {
		t.Fatalf("XLEN = %d, want 3", n)
	}
	ck, found, err := LoadK2R(ctx, c, name, stream)
	if err != nil || !found || ck.Partitions[tp] != 3 || ck.Entries != 3 {
		t.Fatalf("LoadK2R = %+v %v %v", ck, found, err)
	}
	// Damage is reported, never read as a fresh start.
	c.Do(ctx, c.B().Hset().Key(key).FieldValue().FieldValue("t:0", "x").Build())
	if _, _, err := LoadK2R(ctx, c, name, stream); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not an offset") {
		t.Fatalf("garbage offset: %v", err)
	}
	c.Do(ctx, c.B().Hdel().Key(key).Field("version").Build())
	if _, err := ApplyK2R(ctx, c, NewK2RStep(c, opt, []*K2RWrite{write(3, 4, 1)}, time.Now())); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("script on a hash without version: %v", err)
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

func TestApplyK2RPreservedIDsAreLookedUpNotComparedWithTheTop(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := k2rTarget(t, c)
	c.Do(ctx, c.B().Xadd().Key(stream).Id("3-0").FieldValue().FieldValue("f", "another").Build())
	c.Do(ctx, c.B().Xadd().Key(stream).Id("5-0").FieldValue().FieldValue("f", "5-0").Build())
	key := K2RKey(name, stream)
	opt := K2ROptions{Name: name, PreserveIDs: true}
	// 3-0 is there, but another entry: taken. 4-0 is below the top 5-0
	// but not there: not present. 5-0 is. 6-0 is new, and 6-0 again
	// present once the first is written.
	w := &K2RWrite{Stream: stream, Moves: []K2RMove{{Partition: TopicPartition{Topic: "t"}, From: NoPosition, To: 4}}}
	for _, id := range []string{"3-0", "4-0", "5-0", "6-0", "6-0"} {
		w.AddEntry(id)
		w.AddField("f", id)
	}
	step := NewK2RStep(c, opt, []*K2RWrite{w}, time.Now())
	res, err := ApplyK2R(ctx, c, step)
	var ids *IDCheckError
	if !errors.As(err, &ids) || !errors.As(res[0].Err, &ids) || ids.LastID != "5-0" || string(ids.Classes) != "tbpwp" {
		t.Fatalf("ApplyK2R = %+v, %v; want the classes tbpwp against 5-0", res, err)
	}
	if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 2 {
		t.Fatalf("a refused write added entries: %d", n)
	}
	if n, _ := c.Do(ctx, c.B().Exists().Key(key).Build()).AsInt64(); n != 0 {
		t.Fatal("a refused write moved the checkpoint")
	}
	// Told what to expect, it writes the new entry only.
	w.Expect(ids.Classes, ids.State)
	res, err = ApplyK2R(ctx, c, step)
	if err != nil || res[0].Added != 1 || res[0].Present != 2 {
		t.Fatalf("ApplyK2R = %+v, %v", res, err)
	}
	got, _ := c.Do(ctx, c.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if len(got) != 3 || got[2].ID != "6-0" || got[0].FieldValues["f"] != "another" {
		t.Fatalf("stream: %+v", got)
	}
	if v, _ := c.Do(ctx, c.B().Hget().Key(key).Field("t:0").Build()).ToString(); v != "4" {
		t.Fatalf("position %q", v)
	}
}

func TestApplyK2RPreservedIDsInOrderAreCheckedByTheFirst(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := k2rTarget(t, c)
	opt := K2ROptions{Name: name, PreserveIDs: true}
	tp := TopicPartition{Topic: "t"}
	write := func(from, to int64, ids ...string) *K2RWrite {
		w := &K2RWrite{Stream: stream, Moves: []K2RMove{{Partition: tp, From: from, To: to}}}
		for _, id := range ids {
			w.AddEntry(id)
			w.AddField("f", id)
		}
		return w
	}
	if _, err := ApplyK2R(ctx, c, NewK2RStep(c, opt, []*K2RWrite{write(NoPosition, 3, "4-1", "5-1", "6-1")}, time.Now())); err != nil {
		t.Fatal(err)
	}
	// Deleted entries leave the last ID where it was: 6-1 is not there,
	// and still Redis cannot add it.
	c.Do(ctx, c.B().Xdel().Key(stream).Id("6-1").Build())
	w := write(3, 5, "6-1", "7-1")
	step := NewK2RStep(c, opt, []*K2RWrite{w}, time.Now())
	_, err := ApplyK2R(ctx, c, step)
	var ids *IDCheckError
	if !errors.As(err, &ids) || ids.LastID != "6-1" || ids.Classes != nil {
		t.Fatalf("err = %v; want the first ID found not above 6-1", err)
	}
	w.Expect(nil, "")
	if _, err = ApplyK2R(ctx, c, step); !errors.As(err, &ids) || string(ids.Classes) != "bw" {
		t.Fatalf("err = %v; want the classes bw", err)
	}
}

func TestApplyK2RWritesNothingOfARefusedWrite(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	name := testenv.Name(t, "m")
	good, taken := testenv.Stream(t, c), testenv.Stream(t, c)
	t.Cleanup(func() {
		c.Do(context.Background(), c.B().Del().Key(K2RKey(name, good), K2RKey(name, taken)).Build())
	})
	if err := c.Do(ctx, c.B().Set().Key(taken).Value("not a stream").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	write := func(stream string, from, to int64) *K2RWrite {
		return testWrite(stream, TopicPartition{Topic: "t", Partition: 1}, from, to, int(to-from))
	}
	opt := K2ROptions{Name: name}
	tests := []struct {
		name    string
		writes  []*K2RWrite
		wantErr string
		xlen    int64 // of good afterwards
	}{
		{"a stream and a key of another type in one call", []*K2RWrite{write(good, 0, 5), write(taken, 0, 5)}, "WRONGTYPE", 5},
		{"a conflict after an applied write", []*K2RWrite{write(good, 5, 7), write(good, 0, 3)}, "holds offset 7", 7},
		{"a retry of both", []*K2RWrite{write(good, 5, 7), write(good, 7, 9)}, "", 9},
	}
	// The first write starts the partition at 0.
	if err := InitK2RPartitions(ctx, c, name, map[string]K2RInit{good: {Starts: map[TopicPartition]int64{{Topic: "t", Partition: 1}: 0}}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		_, err := ApplyK2R(ctx, c, NewK2RStep(c, opt, tt.writes, time.Now()))
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Fatalf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
		}
		if n, _ := c.Do(ctx, c.B().Xlen().Key(good).Build()).AsInt64(); n != tt.xlen {
			t.Fatalf("%s: XLEN = %d, want %d", tt.name, n, tt.xlen)
		}
		for _, stream := range []string{good, taken} {
			if n, _ := c.Do(ctx, c.B().Exists().Key(K2RGuardKey(name, stream)).Build()).AsInt64(); n != 0 {
				t.Fatalf("%s: guard key of %q left behind", tt.name, stream)
			}
		}
	}
	// The refused stream got no checkpoint, the good one every position.
	if n, _ := c.Do(ctx, c.B().Exists().Key(K2RKey(name, taken)).Build()).AsInt64(); n != 0 {
		t.Fatal("a checkpoint was written for the stream that was not written")
	}
	ck, _, err := LoadK2R(ctx, c, name, good)
	if err != nil || ck.Partitions[TopicPartition{Topic: "t", Partition: 1}] != 9 || ck.Entries != 9 {
		t.Fatalf("LoadK2R = %+v, %v", ck, err)
	}
}

func TestApplyK2RRetriedAfterTheCallWasAppliedIsAReplay(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	tp := TopicPartition{Topic: "t", Partition: 0}
	opt := func(name string) K2ROptions { return K2ROptions{Name: name} }
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
			stream, name := k2rTarget(t, c)
			if err := InitK2RPartitions(ctx, c, name, map[string]K2RInit{stream: {Starts: map[TopicPartition]int64{tp: 0}}}); err != nil {
				t.Fatal(err)
			}
			var steps []*K2RStep
			for _, r := range [][2]int64{{0, 4}, {4, 6}, {6, 9}} {
				steps = append(steps, NewK2RStep(c, opt(name), []*K2RWrite{testWrite(stream, tp, r[0], r[1], int(r[1]-r[0]))}, time.Now()))
			}
			if _, err := ApplyK2R(ctx, c, steps[:tt.applied]...); err != nil {
				t.Fatal(err)
			}
			// The retry of the whole call must find what was applied
			// done, not in conflict, and apply the rest.
			res, err := ApplyK2R(ctx, c, steps...)
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

func TestApplyK2RInOrderRunsChainedCallsInTheirOrder(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream, name := k2rTarget(t, c)
	tp := TopicPartition{Topic: "t", Partition: 0}
	opt := K2ROptions{Name: name}
	if err := CheckK2ROrderAccess(ctx, c, name); err != nil {
		t.Fatal(err)
	}
	first, second := K2ROrderKey(name, "test", 1), K2ROrderKey(name, "test", 2)
	// The second call reaches Redis first: it waits for the first.
	done := make(chan error)
	go func() {
		_, err := ApplyK2RInOrder(ctx, c, K2ROrder{After: first, Token: second}, NewK2RStep(c, opt, []*K2RWrite{testWrite(stream, tp, 3, 5, 2)}, time.Now()))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := ApplyK2RInOrder(ctx, c, K2ROrder{Token: first}, NewK2RStep(c, opt, []*K2RWrite{testWrite(stream, tp, NoPosition, 3, 3)}, time.Now())); err != nil {
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
	_, err = ApplyK2RInOrder(ctx, c, K2ROrder{After: first}, NewK2RStep(c, opt, []*K2RWrite{testWrite(stream, tp, 7, 9, 2)}, time.Now()))
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
func TestApplyK2RWithoutTheCheckIsRefusedAndVerified(t *testing.T) {
	admin := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, admin)
	name := testenv.Name(t, "m")
	user := "xmirror-test-" + name
	t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(K2RKey(name, stream)).Build()) })
	c := testenv.RedisUser(t, admin, user, "-@scripting")

	if err := CheckK2RAccess(ctx, c, name, stream); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("CheckK2RAccess without scripting: %v, want NOPERM", err)
	}
	tp := TopicPartition{Topic: "t", Partition: 0}
	w := testWrite(stream, tp, 5, 6, 1)
	_, err := ApplyK2R(ctx, c, NewK2RStep(c, K2ROptions{Name: name}, []*K2RWrite{w}, time.Now()))
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("write without scripting: %v, want NOPERM", err)
	}
	if n, _ := admin.Do(ctx, admin.B().Exists().Key(stream, K2RKey(name, stream)).Build()).AsInt64(); n != 0 {
		t.Fatalf("%d of the stream and its checkpoint exist after a refused write, want neither", n)
	}
}

// A user that may not run MULTI would have the commands queued after it
// run one by one, outside any transaction: the access check at start
// refuses it, naming MULTI.
func TestCheckK2RAccessRefusesAUserWithoutMulti(t *testing.T) {
	admin := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, admin)
	name := testenv.Name(t, "m")
	user := "xmirror-test-" + name
	c := testenv.RedisUser(t, admin, user, "-multi")
	err := CheckK2RAccess(ctx, c, name, stream)
	if err == nil || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(err.Error(), "MULTI") {
		t.Fatalf("CheckK2RAccess without MULTI: %v, want NOPERM naming MULTI", err)
	}
	if err := CheckK2RAccess(ctx, admin, name, stream); err != nil {
		t.Fatalf("CheckK2RAccess with every command: %v", err)
	}
}

// k2rTarget is a new stream and mirror name, whose checkpoint is deleted
// after the test.
func k2rTarget(t *testing.T, c rueidis.Client) (stream, name string) {
	stream, name = testenv.Stream(t, c), testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(K2RKey(name, stream)).Build()) })
	return stream, name
}

// testWrite is a write of n entries into stream, moving tp from from to to.
func testWrite(stream string, tp TopicPartition, from, to int64, n int) *K2RWrite {
	w := &K2RWrite{Stream: stream, Moves: []K2RMove{{Partition: tp, From: from, To: to}}}
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
	stream, name := k2rTarget(t, c)
	key := K2RKey(name, stream)
	tp := TopicPartition{Topic: "t", Partition: 0}
	if _, err := ApplyK2R(ctx, c, NewK2RStep(c, K2ROptions{Name: name}, []*K2RWrite{testWrite(stream, tp, NoPosition, 3, 3)}, time.Now())); err != nil {
		t.Fatal(err)
	}
	opt := K2ROptions{Name: name, afterCheck: func(rueidis.DedicatedClient) {
		for _, r := range c.DoMulti(ctx, c.B().Del().Key(stream).Build(), c.B().Set().Key(stream).Value("x").Build()) {
			if err := r.Error(); err != nil {
				t.Error(err)
			}
		}
	}}
	_, err := ApplyK2R(ctx, c, NewK2RStep(c, opt, []*K2RWrite{testWrite(stream, tp, 3, 6, 3)}, time.Now()))
	if !errors.Is(err, ErrWrongType) || !strings.Contains(err.Error(), "became a string") {
		t.Fatalf("write after the key became a string: %v, want ErrWrongType", err)
	}
	ck, _, err := LoadK2R(ctx, c, name, stream)
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
	if _, err := ApplyK2R(ctx, c, NewK2RStep(c, K2ROptions{Name: name}, []*K2RWrite{testWrite(stream, tp, 3, 6, 3)}, time.Now())); err != nil {
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
func TestApplyK2RWhoseCheckCouldNotRunAppliesNothingFromAWrongStart(t *testing.T) {
	tp := TopicPartition{Topic: "t", Partition: 0}
	for _, tc := range []struct {
		name        string
		deleteFirst bool  // the stream deleted after the first write
		from, to    int64 // the second write's move
		replayed    bool
		conflict    bool
	}{
		{name: "a write already applied, retried", from: NoPosition, to: 3, replayed: true},
		{name: "a start behind the checkpoint", from: 1, to: 4, conflict: true},
		{name: "a start ahead of the checkpoint", from: 5, to: 8, conflict: true},
		{name: "a stream that is not there", deleteFirst: true, from: 1, to: 4, conflict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testenv.Redis(t)
			ctx := context.Background()
			stream, name := k2rTarget(t, c)
			if _, err := ApplyK2R(ctx, c, NewK2RStep(c, K2ROptions{Name: name}, []*K2RWrite{testWrite(stream, tp, NoPosition, 3, 3)}, time.Now())); err != nil {
				t.Fatal(err)
			}
			if tc.deleteFirst {
				c.Do(ctx, c.B().Del().Key(stream).Build())
			}
			before := streamState(t, c, stream)
			ckBefore, _ := c.Do(ctx, c.B().Hgetall().Key(K2RKey(name, stream)).Build()).AsStrMap()
			opt := K2ROptions{Name: name, afterCheck: func(dc rueidis.DedicatedClient) {
				// The check refused the write and touched the guard;
				// without the watch, EXEC runs as if it never had.
				if err := dc.Do(ctx, dc.B().Unwatch().Build()).Error(); err != nil {
					t.Error(err)
				}
			}}
			res, err := ApplyK2R(ctx, c, NewK2RStep(c, opt, []*K2RWrite{testWrite(stream, tp, tc.from, tc.to, 3)}, time.Now()))
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
			ckAfter, _ := c.Do(ctx, c.B().Hgetall().Key(K2RKey(name, stream)).Build()).AsStrMap()
			delete(ckBefore, "updated_ms")
			delete(ckAfter, "updated_ms")
			if fmt.Sprint(ckAfter) != fmt.Sprint(ckBefore) {
				t.Fatalf("checkpoint after a write from a wrong start: %v, want %v", ckAfter, ckBefore)
			}
			if n, _ := c.Do(ctx, c.B().Exists().Key(K2RGuardKey(name, stream)).Build()).AsInt64(); n != 0 {
				t.Fatalf("the guard key outlived the write")
			}
			// The right start still writes, once, after the entries
			// taken back.
			from := int64(3)
			if _, err := ApplyK2R(ctx, c, NewK2RStep(c, K2ROptions{Name: name}, []*K2RWrite{testWrite(stream, tp, from, 6, 3)}, time.Now())); err != nil {
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
	for _, want := range []string{`topic "t"`, "old-id", "new-id", key, "--on-topic-recreated restart", "--name"} {
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

// A conflict says which way the position moved: ahead is another process,
// back with the stream intact is a position moved back, and Redis losing
// writes is named as such.
func TestK2RConflictsSayWhichWayThePositionMoved(t *testing.T) {
	tp := TopicPartition{Topic: "t", Partition: 2}
	tests := []struct {
		name     string
		err      error
		wentBack bool
		want     []string
		notWant  []string
	}{
		{"ahead", &ConflictError{Key: "k", Name: "m", Partition: tp, Stored: 700, Expected: 500}, false,
			[]string{"holds offset 700, but this mirror continues from offset 500", "another process is probably running", `--name "m"`}, []string{"went back"}},
		{"created by another", &ConflictError{Key: "k", Name: "m", Partition: tp, Stored: 3, Expected: NoPosition}, false,
			[]string{"another process"}, nil},
		{"back, stream intact", &ConflictError{Key: "k", Name: "m", Partition: tp, Stored: 300, Expected: 500, Stream: "s", Kept: "5-0"}, true,
			[]string{"went back", `stream "s" still holds entry 5-0`, "twice", `field "t:2" back to 500`}, []string{"probably running", "lost writes"}},
		{"lost writes", &LostWritesError{Key: "k", Stream: "s", Partition: tp, From: 500, To: 300, Lost: "5-0"}, false,
			[]string{"Redis lost writes: positions of t/2 went back from 500 to 300", "lost entry 5-0", "mirroring again from 300"}, nil},
		{"lost checkpoint", &LostWritesError{Key: "k", Stream: "s", Partition: tp, From: 500, To: NoPosition}, false,
			[]string{"Redis lost writes: the position of t/2 is gone (it was offset 500", "--start"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c *ConflictError
			if errors.As(tc.err, &c) && c.WentBack() != tc.wentBack {
				t.Errorf("WentBack = %v, want %v", c.WentBack(), tc.wentBack)
			}
			msg := tc.err.Error()
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
