package checkpoint

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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
	write := func(from, to int64, n int) *K2RWrite {
		w := &K2RWrite{Stream: stream, Moves: []K2RMove{{Partition: tp, From: from, To: to}}}
		for i := 0; i < n; i++ {
			w.AddEntry("*", 1)
			w.AddField("f", "v")
		}
		return w
	}
	opt := K2ROptions{Name: name}
	if _, err := ApplyK2R(ctx, c, opt, []*K2RWrite{write(NoPosition, 3, 3)}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The same batch again (a retry after a lost reply) is a no-op.
	res, err := ApplyK2R(ctx, c, opt, []*K2RWrite{write(NoPosition, 3, 3)}, time.Now())
	if err != nil || !res[0].Replayed {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	// A batch from a position the checkpoint does not hold is refused.
	_, err = ApplyK2R(ctx, c, opt, []*K2RWrite{write(1, 4, 1)}, time.Now())
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
	if _, err := ApplyK2R(ctx, c, opt, []*K2RWrite{write(3, 4, 1)}, time.Now()); !errors.Is(err, ErrCorrupt) {
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
	res, err := ApplyK2R(ctx, c, K2ROptions{Name: name, PreserveIDs: true}, []*K2RWrite{w}, time.Now())
	if err != nil || res[0].Added != 1 || res[0].Present != 2 {
		t.Fatalf("ApplyK2R = %+v, %v", res, err)
	}
}
