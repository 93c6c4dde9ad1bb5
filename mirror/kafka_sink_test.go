package mirror

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/internal/testenv"
)

// The sink refuses a record before franz-go would: batchSize must be
// exactly where franz-go's own batch limit check draws the line, or a
// record it passes could still fail inside franz-go, after the records
// behind it were produced. franz-go checks before it sends, so a limit one
// byte short fails without the broker being asked.
func TestBatchSizeIsWhereTheProducerDrawsTheLine(t *testing.T) {
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	wide := make([]kgo.RecordHeader, 0, 20000)
	for i := 0; i < 20000; i++ {
		wide = append(wide, kgo.RecordHeader{Key: "f" + strconv.Itoa(i), Value: []byte(strings.Repeat("v", i%200))})
	}
	records := map[string]*kgo.Record{
		"empty":          {},
		"small":          {Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: HeaderStream, Value: []byte("s")}}},
		"large value":    {Value: make([]byte, 300000)},
		"many headers":   {Value: []byte("x"), Headers: wide},
		"long header":    {Headers: []kgo.RecordHeader{{Key: strings.Repeat("n", 70000), Value: make([]byte, 20000)}}},
		"value of 16383": {Value: make([]byte, 16383)},
		"value of 16384": {Value: make([]byte, 16384)},
	}
	for name, r := range records {
		t.Run(name, func(t *testing.T) {
			size := batchSize(r)
			for _, limit := range []int{size, size - 1} {
				cl := testenv.Kafka(t, kgo.ProducerBatchMaxBytes(int32(max(limit, 512))), kgo.RequiredAcks(kgo.AllISRAcks()))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				rec := *r
				rec.Topic = topic
				err := cl.ProduceSync(ctx, &rec).FirstErr()
				cancel()
				switch tooLarge := errors.Is(err, kerr.MessageTooLarge); {
				case limit == size && err != nil:
					t.Fatalf("batch limit %d = batchSize: %v, want it produced", limit, err)
				case limit == size-1 && limit >= 512 && !tooLarge:
					t.Fatalf("batch limit %d, one short of batchSize: %v, want MESSAGE_TOO_LARGE", limit, err)
				}
			}
		})
	}
}

func TestTooLargeNamesTheSettingAndHowToRaiseIt(t *testing.T) {
	r := &kgo.Record{Topic: "t", Value: make([]byte, 5<<20)}
	for _, tc := range []struct {
		limit RecordLimit
		want  []string
	}{
		{RecordLimit{Topic: "t", Bytes: 3 << 20, Setting: SettingTopic}, []string{"its max.message.bytes", "raise the topic's max.message.bytes", "--entity-name t --add-config max.message.bytes=6291456"}},
		{RecordLimit{Topic: "t", Bytes: 1048588, Setting: SettingBroker}, []string{"the broker's message.max.bytes", "no max.message.bytes of its own", "--add-config max.message.bytes=6291456"}},
		{RecordLimit{Topic: "t", Bytes: 4 << 20, Setting: SettingRequest}, []string{"the broker's socket.request.max.bytes", "raise the broker's socket.request.max.bytes"}},
	} {
		k := &KafkaSink{cfg: KafkaSinkConfig{Limits: map[string]RecordLimit{"t": tc.limit}}}
		err := k.tooLarge(r)
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("%s: %v, want a MESSAGE_TOO_LARGE", tc.limit.Setting, err)
		}
		msg := (&EntryError{Stream: "s", ID: "1-1", Topic: "t", Err: err}).Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", tc.limit.Setting, msg, w)
			}
		}
		if k.tooLarge(&kgo.Record{Topic: "t", Value: []byte("small")}) != nil {
			t.Errorf("%s: a small record refused", tc.limit.Setting)
		}
	}
}
