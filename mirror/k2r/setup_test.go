package k2r

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/setting"
)

func TestAPartitionStartsAtItsCheckpointOrWhereStartSays(t *testing.T) {
	tp := checkpoint.TopicPartition{Topic: "orders", Partition: 2}
	log := partitionLog{start: 10, end: 50, stable: 45}
	tests := []struct {
		name      string
		stored    int64
		hasStored bool
		latest    bool
		onGap     string
		want      partitionStart
		err       string
	}{
		{name: "new, earliest", want: partitionStart{next: 10, stored: 10}},
		{name: "new, latest: the last stable offset", latest: true, want: partitionStart{next: 45, stored: 45}},
		{name: "resumed", stored: 30, hasStored: true, want: partitionStart{next: 30, stored: 30}},
		{name: "resumed, latest changes nothing", stored: 30, hasStored: true, latest: true, want: partitionStart{next: 30, stored: 30}},
		{name: "resumed at the log start", stored: 10, hasStored: true, want: partitionStart{next: 10, stored: 10}},
		{name: "resumed at the end", stored: 50, hasStored: true, want: partitionStart{next: 50, stored: 50}},
		{name: "below the log start: a gap", stored: 4, hasStored: true, onGap: mirror.OnGapFail,
			err: `topic "orders" partition 2: the checkpoint is at offset 4 but the log now starts at 10: 6 records were deleted`},
		{name: "below the log start, gap skipped", stored: 4, hasStored: true, onGap: mirror.OnGapSkip,
			want: partitionStart{next: 10, stored: 4, lost: 6}},
		{name: "above the end", stored: 51, hasStored: true, onGap: mirror.OnGapSkip,
			err: `the checkpoint is at offset 51 but the partition ends at 50; was the topic deleted and recreated? delete the checkpoint "ck"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := startAt(tp, "ck", tc.stored, tc.hasStored, log, tc.latest, tc.onGap)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want an error saying %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestPartitionsAreAssignedTheirStreamsKnownOnesFirst(t *testing.T) {
	tmpl, err := ParseStreamTemplate("copy-{topic}")
	if err != nil {
		t.Fatal(err)
	}
	tp := func(topic string, p int32) checkpoint.TopicPartition {
		return checkpoint.TopicPartition{Topic: topic, Partition: p}
	}
	k := &partitionSetup{cfg: setupConfig{Config: &Config{}, tmpl: tmpl},
		streamIndex: map[string]int{"copy-a": 0},
		feeds:       map[string][]checkpoint.TopicPartition{"copy-a": {tp("a", 0)}},
	}
	as := k.assign([]string{"copy-a"}, []checkpoint.TopicPartition{tp("a", 1), tp("b", 0), tp("b", 1)})
	if !slices.Equal(as.streams, []string{"copy-a", "copy-b"}) || !slices.Equal(as.newStreams, []string{"copy-b"}) ||
		!slices.Equal(as.touched, []string{"copy-a", "copy-b"}) || !slices.Equal(as.topics, []string{"a", "b"}) {
		t.Fatalf("streams %v, new %v, touched %v, topics %v", as.streams, as.newStreams, as.touched, as.topics)
	}
	if !slices.Equal(as.feeds["copy-a"], []checkpoint.TopicPartition{tp("a", 0), tp("a", 1)}) || len(as.feeds["copy-b"]) != 2 {
		t.Fatalf("feeds %v: a's earlier partition is kept", as.feeds)
	}
	for i, want := range []int{0, 1, 1} {
		if st := as.states[i]; st.stream != want || st.stored != checkpoint.NoPosition {
			t.Errorf("partition %s: stream %d, stored %d; want stream %d, no position", st.tp, st.stream, st.stored, want)
		}
	}
	err = as.checkOnePartitionPerStream()
	var p *setting.Problem
	if !errors.As(err, &p) || p.Field != "PreserveIDs" {
		t.Fatalf("two partitions into one stream: %v; want a problem of PreserveIDs", err)
	}
}
