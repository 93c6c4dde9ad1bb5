package r2k

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/xmirror/xmirror/mirror/setting"
)

func TestKafkaErrorHintsSayWhatHappenedToTheTopic(t *testing.T) {
	entry := func(err error, create bool) string {
		return setting.Render(&EntryError{Stream: "s", ID: "1-0", Topic: "t", Err: err, CreateTopic: create}, flags)
	}
	cases := []struct {
		name    string
		msg     string
		want    []string
		notWant []string
	}{
		{"r2k deleted, --create-topic given", entry(kerr.UnknownTopicOrPartition, true),
			[]string{"deleted during the run", "--create-topic creates it again"}, []string{"pass --create-topic", "(--create-topic creates it)"}},
		{"r2k deleted, no --create-topic", entry(kerr.UnknownTopicOrPartition, false),
			[]string{"deleted during the run", "pass --create-topic"}, nil},
		{"r2k deleted and recreated", entry(fmt.Errorf("produce: %w", kerr.UnknownTopicID), true),
			[]string{"UNKNOWN_TOPIC_ID", "deleted and created again during the run", "run again"}, nil},
		{"r2k too large", entry(kerr.MessageTooLarge, false), []string{"max.message.bytes"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, w := range tc.want {
				if !strings.Contains(tc.msg, w) {
					t.Errorf("%q does not say %q", tc.msg, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(tc.msg, w) {
					t.Errorf("%q says %q", tc.msg, w)
				}
			}
		})
	}
}
