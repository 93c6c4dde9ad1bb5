package checkpoint

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/internal/testenv"
)

// TestR2KTrimStopsAtTheCheckpointAndAtEveryGroupsPosition pins the trim's
// bound, per stream: the checkpoint's position, every group's last
// delivered entry (0-0: the whole stream) and lowest pending entry, and it
// counts what it removed in the checkpoint.
func TestR2KTrimStopsAtTheCheckpointAndAtEveryGroupsPosition(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	name := testenv.Name(t, "m")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(R2KKey(name)).Build()) })
	stream := testenv.Stream(t, c)
	other := testenv.Stream(t, c) // without a position in the checkpoint
	notStream := testenv.Name(t, "k")
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(notStream).Build()) })
	do := func(cmd rueidis.Completed) rueidis.RedisResult {
		t.Helper()
		r := c.Do(ctx, cmd)
		if err := r.Error(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	var ids []string
	for i := range 10 {
		id, _ := do(c.B().Xadd().Key(stream).Id(fmt.Sprintf("%d-1", i+1)).FieldValue().FieldValue("i", strconv.Itoa(i)).Build()).ToString()
		ids = append(ids, id)
	}
	do(c.B().Xadd().Key(other).Id("*").FieldValue().FieldValue("i", "0").Build())
	do(c.B().Set().Key(notStream).Value("x").Build())
	// The mirror's group read everything, and acknowledged it; its
	// checkpoint says Kafka confirmed up to the 8th entry.
	do(c.B().XgroupCreate().Key(stream).Group("mirror").Id("0").Build())
	do(c.B().Xreadgroup().Group("mirror", "m").Count(10).Streams().Key(stream).Id(">").Build())
	do(c.B().Xack().Key(stream).Group("mirror").Id(ids...).Build())
	msg, _ := do(R2KCommitCommand(c, name, "mirror", nil, R2KUpdate{Streams: map[string]string{stream: ids[7]}}, time.Now())).ToMessage()
	if ran, err := R2KCommitReply(name, msg); !ran || err != nil {
		t.Fatalf("commit: %v", err)
	}
	// Another group read 5 and acknowledged 3: 4th and 5th pending.
	do(c.B().XgroupCreate().Key(stream).Group("other").Id("0").Build())
	do(c.B().Xreadgroup().Group("other", "o").Count(5).Streams().Key(stream).Id(">").Build())
	do(c.B().Xack().Key(stream).Group("other").Id(ids[:3]...).Build())

	streams := []string{stream, other, notStream}
	// trim checks what a trim removed, up to which MINID, and that the
	// stream then starts at head.
	trim := func(want int64, wantMinID, head string) {
		t.Helper()
		got, err := R2KTrimReply(name, streams, c.Do(ctx, R2KTrimCommand(c, name, streams)))
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Trimmed != want || got[0].MinID != wantMinID {
			t.Fatalf("trimmed %d up to %q, want %d up to %q", got[0].Trimmed, got[0].MinID, want, wantMinID)
		}
		if got[1] != (R2KTrim{Stream: other}) || got[2] != (R2KTrim{Stream: notStream}) {
			t.Fatalf("a stream without a position, a key no stream: %+v, %+v; want nothing trimmed", got[1], got[2])
		}
		first, _ := do(c.B().Xrange().Key(stream).Start("-").End("+").Count(1).Build()).ToArray()
		entry, _ := first[0].ToArray()
		if id, _ := entry[0].ToString(); id != head {
			t.Fatalf("the stream starts at %s, want %s", id, head)
		}
	}
	// A group created at 0-0 holds the whole stream.
	do(c.B().XgroupCreate().Key(stream).Group("new").Id("0").Build())
	trim(0, "0-0", ids[0])
	do(c.B().XgroupDestroy().Key(stream).Group("new").Build())

	trim(3, ids[3], ids[3]) // the lowest pending entry of the other group
	do(c.B().Xack().Key(stream).Group("other").Id(ids[3], ids[4]).Build())
	trim(1, ids[4], ids[4]) // its last delivered entry stays
	do(c.B().Xreadgroup().Group("other", "o").Count(10).Streams().Key(stream).Id(">").Build())
	trim(1, ids[5], ids[5]) // the rest delivered, not acknowledged: pending from the 6th
	do(c.B().Xack().Key(stream).Group("other").Id(ids[5:]...).Build())
	trim(2, ids[7], ids[7]) // the checkpoint's entry stays
	trim(0, ids[7], ids[7])

	ck, _, err := LoadR2K(ctx, c, name)
	if err != nil || ck.Trimmed[stream] != 7 || len(ck.Trimmed) != 1 {
		t.Fatalf("checkpoint counts %v trimmed (%v), want 7 for %s", ck.Trimmed, err, stream)
	}
}
