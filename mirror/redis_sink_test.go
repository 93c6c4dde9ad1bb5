package mirror

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// replyLost runs the first large pipeline it is given but reports its
// connection lost, as when Redis applied a group of batches and the reply
// never came back.
type replyLost struct {
	rueidis.Client
	lost bool
}

func (l *replyLost) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	res := l.Client.DoMulti(ctx, multi...)
	if len(multi) > 10 && !l.lost {
		l.lost = true
		for i := range res {
			res[i] = rueidis.NewErrorResult(errors.New("read tcp: connection reset by peer"))
		}
	}
	return res
}

func TestRedisSinkConfirmsABatchOnlyOnceWritten(t *testing.T) {
	base := testenv.Redis(t)
	ctx := context.Background()
	tests := []struct {
		name string
		// setup returns the client the sink uses and its dead-letter stream.
		setup     func(t *testing.T) (rueidis.Client, string)
		dead      bool // the second batch dead-letters a record
		wantDone  [2]bool
		wantXLEN  int64
		wantError string
	}{
		{
			name:     "a group applied whose reply was lost is retried as a replay",
			setup:    func(t *testing.T) (rueidis.Client, string) { return &replyLost{Client: base}, "" },
			wantDone: [2]bool{true, true},
			wantXLEN: 6,
		},
		{
			name: "a dead letter that cannot be written confirms no batch of its group",
			setup: func(t *testing.T) (rueidis.Client, string) {
				dead := testenv.Stream(t, base)
				base.Do(ctx, base.B().Set().Key(dead).Value("not a stream").Build())
				return base, dead
			},
			dead:      true,
			wantDone:  [2]bool{false, false},
			wantXLEN:  0,
			wantError: "WRONGTYPE",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, deadStream := tt.setup(t)
			stream, name := testenv.Stream(t, base), testenv.Name(t, "m")
			t.Cleanup(func() { base.Do(context.Background(), base.B().Del().Key(checkpoint.K2RKey(name, stream)).Build()) })
			s := &RedisSink{c: c, opt: checkpoint.K2ROptions{Name: name}, deadStream: deadStream, retryFor: 5 * time.Second, log: slog.New(slog.DiscardHandler), redisName: "test"}
			batch := func(from, to int64) *K2RBatch {
				w := &checkpoint.K2RWrite{Stream: stream, Moves: []checkpoint.K2RMove{{Partition: checkpoint.TopicPartition{Topic: "t"}, From: from, To: to}}}
				for i := 0; i < 3; i++ {
					w.AddEntry("*", 1)
					w.AddField("f", "v")
				}
				return &K2RBatch{writes: []*checkpoint.K2RWrite{w}, entries: 3}
			}
			b := [2]*K2RBatch{batch(checkpoint.NoPosition, 3), batch(3, 6)}
			if tt.dead {
				b[1].dead = []deadLetter{{rec: &kgo.Record{Topic: "t", Offset: 6}, reason: "bad"}}
			}
			var got [2]error
			var group []sinkJob
			for i := range b {
				group = append(group, sinkJob{ctx: ctx, b: b[i], step: checkpoint.NewK2RStep(c, s.opt, b[i].writes, time.Now()), done: func(err error) { got[i] = err }})
			}
			s.apply(group)
			for i := range got {
				if (got[i] == nil) != tt.wantDone[i] {
					t.Errorf("batch %d: done(%v), want confirmed %v", i, got[i], tt.wantDone[i])
				}
				if got[i] != nil && tt.wantError != "" && !strings.Contains(got[i].Error(), tt.wantError) {
					t.Errorf("batch %d: %v, want %q", i, got[i], tt.wantError)
				}
			}
			if n, _ := base.Do(ctx, base.B().Xlen().Key(stream).Build()).AsInt64(); n != tt.wantXLEN {
				t.Errorf("XLEN = %d, want %d", n, tt.wantXLEN)
			}
		})
	}
}
