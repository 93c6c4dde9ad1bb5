package r2k

import (
	"context"
	"testing"
	"time"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror/mapping"
)

func TestParseRunID(t *testing.T) {
	tests := []struct{ info, want string }{
		{"# Server\r\nredis_version:7.2.4\r\nrun_id:8a0f5c\r\ntcp_port:6379\r\n", "8a0f5c"},
		{"run_id:abc", "abc"},
		{"# Server\r\nredis_version:7.2.4\r\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := parseRunID(tt.info); got != tt.want {
			t.Errorf("parseRunID(%q) = %q, want %q", tt.info, got, tt.want)
		}
	}
}

func TestHandledIsTheHigherOfTheCheckpointAndWhatThisProcessRead(t *testing.T) {
	tests := []struct{ bound, delivered, want string }{
		{"", "", ""},
		{"5-0", "", "5-0"},
		{"", "7-1", "7-1"},
		{"5-0", "7-1", "7-1"},
		{"10-0", "9-9", "10-0"},
		{"1-10", "1-9", "1-10"}, // numeric, not string, order
	}
	for _, tt := range tests {
		st := &streamState{bound: tt.bound, delivered: tt.delivered}
		if got := st.handled(); got != tt.want {
			t.Errorf("bound %q delivered %q: handled %q, want %q", tt.bound, tt.delivered, got, tt.want)
		}
	}
}

// An entry is skipped when the read-back found it, or when it is at or
// below the stream's handled ID; nothing else is, and an entry already
// set aside keeps its reason.
func TestMarkWrittenSkipsWhatKafkaHoldsAndNothingElse(t *testing.T) {
	s := &RedisSource{alreadyWritten: map[string]struct{}{"a\x0020-0": {}}}
	tests := []struct {
		name    string
		e       Entry
		handled string
		want    skipReason
	}{
		{"below the bound", Entry{Stream: "a", ID: "9-0"}, "10-0", skipWritten},
		{"at the bound", Entry{Stream: "a", ID: "10-0"}, "10-0", skipWritten},
		{"above the bound", Entry{Stream: "a", ID: "10-1"}, "10-0", skipNone},
		{"no bound", Entry{Stream: "a", ID: "1-0"}, "", skipNone},
		{"found by the read-back", Entry{Stream: "a", ID: "20-0"}, "10-0", skipWritten},
		{"same ID, other stream", Entry{Stream: "b", ID: "20-0"}, "", skipNone},
		{"refused already", Entry{Stream: "a", ID: "1-0", skip: skipRefused}, "10-0", skipRefused},
	}
	for _, tt := range tests {
		e := tt.e
		s.markWritten(&e, tt.handled)
		if e.skip != tt.want {
			t.Errorf("%s: skip %d, want %d", tt.name, e.skip, tt.want)
		}
	}
}

// Under ClaimIdle the group may be shared: no entry is skipped by its
// ID, only by what the read-back found.
func TestClaimIdleTurnsTheIDBoundOff(t *testing.T) {
	if !(&RedisSource{}).useBound() {
		t.Fatal("without --claim-idle the bound must apply")
	}
	s := &RedisSource{cfg: RedisSourceConfig{ClaimIdle: time.Minute}}
	if s.useBound() {
		t.Fatal("with --claim-idle the bound must not apply")
	}
	s.streams = []*streamState{{name: "a", bound: "5-0", delivered: "9-0", boundPEL: true}}
	if m := s.handledByStream(false); len(m) != 0 {
		t.Fatalf("handledByStream under --claim-idle = %v, want none", m)
	}
}

// Remarking a batch after a read-back keeps its counts right.
func TestRemarkUpdatesTheBatchCounts(t *testing.T) {
	s := &RedisSource{alreadyWritten: map[string]struct{}{"a\x003-0": {}}}
	b := &EntryBatch{}
	for _, id := range []string{"1-0", "2-0", "3-0", "4-0"} {
		e := Entry{Stream: "a", ID: id, Fields: []mapping.Field{{Name: "v", Value: "xx"}}}
		b.Entries = append(b.Entries, e)
		b.written++
		b.size += entrySize(e)
	}
	s.remark(b, map[string]string{"a": "1-0"})
	if b.Len() != 2 || b.Bytes() != 6 {
		t.Fatalf("after remark: %d entries, %d bytes; want 2 and 6", b.Len(), b.Bytes())
	}
	for i, want := range []skipReason{skipWritten, skipNone, skipWritten, skipNone} {
		if b.Entries[i].skip != want {
			t.Errorf("entry %s: skip %d, want %d", b.Entries[i].ID, b.Entries[i].skip, want)
		}
	}
}

// A group moved back delivers entries again that are acknowledged without
// records; their commit must not record a lower stream position than the
// one Kafka confirmed, or a restart in the middle of the catch-up would
// take the lower one for what Kafka holds and send the rest again.
func TestCommitOfEntriesDeliveredAgainKeepsTheStreamPosition(t *testing.T) {
	c := testenv.Redis(t)
	ctx := context.Background()
	stream := testenv.Stream(t, c)
	name := testenv.Name(t, "m")
	key := checkpoint.R2KKey(name)
	t.Cleanup(func() { c.Do(context.Background(), c.B().Del().Key(key).Build()) })
	var ids []string
	for i := 0; i < 10; i++ {
		id, err := c.Do(ctx, c.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("v", "x").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Kafka confirmed all ten; the group was then moved back to the start.
	src, err := NewRedisSource(ctx, RedisSourceConfig{
		Client: c, Streams: []string{stream}, Group: "g", Consumer: name, Start: "0", BatchSize: 4,
		Mirror: name, Confirmed: map[string]string{stream: ids[9]},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != 0 || len(b.Entries) != 4 {
		t.Fatalf("first batch: %d of %d entries to write, want 0 of 4", b.Len(), len(b.Entries))
	}
	if err := src.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := c.Do(ctx, c.B().Hget().Key(key).Field("stream:"+stream).Build()).ToString()
	if err != nil || got != ids[9] {
		t.Fatalf("stream position after the first batch: %q (%v), want %s", got, err, ids[9])
	}
	if u := b.Unwritten(); u.Present != 4 {
		t.Fatalf("%+v acknowledged without a record, want 4 present", u)
	}
}
