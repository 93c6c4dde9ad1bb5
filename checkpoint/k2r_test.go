package checkpoint

import (
	"context"
	"errors"
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
	stream := testenv.Stream(t, c)
	name := testenv.Name(t, "m")
	key := K2RKey(name, stream)
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(key).Build()) })
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

func TestApplyK2RPreservedIDsAlreadyPresent(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, c)
	name := testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(K2RKey(name, stream)).Build()) })
	c.Do(ctx, c.B().Xadd().Key(stream).Id("5-0").FieldValue().FieldValue("f", "old").Build())
	w := &K2RWrite{Stream: stream, Moves: []K2RMove{{Partition: TopicPartition{Topic: "t"}, From: NoPosition, To: 3}}}
	for _, id := range []string{"4-0", "5-0", "6-0"} {
		w.AddEntry(id, 1)
		w.AddField("f", id)
	}
	res, err := ApplyK2R(ctx, c, NewK2RStep(c, K2ROptions{Name: name, PreserveIDs: true}, []*K2RWrite{w}, time.Now()))
	if err != nil || res[0].Added != 1 || res[0].Present != 2 {
		t.Fatalf("ApplyK2R = %+v, %v", res, err)
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
	if err := InitK2RPartitions(ctx, c, name, map[string]map[TopicPartition]int64{good: {{Topic: "t", Partition: 1}: 0}}); err != nil {
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

func TestApplyK2RRetriedAfterTheWholeCallWasAppliedIsAReplay(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, c)
	name := testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(K2RKey(name, stream)).Build()) })
	tp := TopicPartition{Topic: "t", Partition: 0}
	write := func(from, to int64) *K2RWrite { return testWrite(stream, tp, from, to, int(to-from)) }
	opt := K2ROptions{Name: name}
	if err := InitK2RPartitions(ctx, c, name, map[string]map[TopicPartition]int64{stream: {tp: 0}}); err != nil {
		t.Fatal(err)
	}
	// Two batches sent together, applied, and their reply lost: the
	// retry of both must find them applied, not in conflict.
	steps := []*K2RStep{NewK2RStep(c, opt, []*K2RWrite{write(0, 4)}, time.Now()), NewK2RStep(c, opt, []*K2RWrite{write(4, 6)}, time.Now())}
	if _, err := ApplyK2R(ctx, c, steps...); err != nil {
		t.Fatal(err)
	}
	res, err := ApplyK2R(ctx, c, steps...)
	if err != nil || !res[0].Replayed || !res[1].Replayed {
		t.Fatalf("retry of the applied call: %+v, %v", res, err)
	}
	if n, _ := c.Do(ctx, c.B().Xlen().Key(stream).Build()).AsInt64(); n != 6 {
		t.Fatalf("XLEN = %d, want 6", n)
	}
}

// A server that refuses the check script: xmirror refuses to start, and a
// transaction that ran without its check is verified, never taken as
// applied on a checkpoint that did not hold its start.
func TestApplyK2RWithoutTheCheckIsRefusedAndVerified(t *testing.T) {
	admin := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, admin)
	name := testenv.Name(t, "m")
	user := "xmirror-test-" + name
	if err := admin.Do(ctx, admin.B().AclSetuser().Username(user).Rule("on", ">pw", "~*", "&*", "+@all", "-@scripting").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Do(context.Background(), admin.B().AclDeluser().Username(user).Build())
		admin.Do(context.Background(), admin.B().Del().Key(K2RKey(name, stream)).Build())
	})
	opt, err := rueidis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	opt.Username, opt.Password, opt.DisableCache = user, "pw", true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if err := CheckK2RAccess(ctx, c, name, stream); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("CheckK2RAccess without scripting: %v, want NOPERM", err)
	}
	tp := TopicPartition{Topic: "t", Partition: 0}
	w := testWrite(stream, tp, 5, 6, 1)
	_, err = ApplyK2R(ctx, c, NewK2RStep(c, K2ROptions{Name: name}, []*K2RWrite{w}, time.Now()))
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Stored != NoPosition || conflict.Expected != 5 || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("unchecked write on a checkpoint without its start: %v", err)
	}
}

// testWrite is a write of n entries into stream, moving tp from from to to.
func testWrite(stream string, tp TopicPartition, from, to int64, n int) *K2RWrite {
	w := &K2RWrite{Stream: stream, Moves: []K2RMove{{Partition: tp, From: from, To: to}}}
	for i := 0; i < n; i++ {
		w.AddEntry("*", 1)
		w.AddField("n", strconv.Itoa(i))
	}
	return w
}
