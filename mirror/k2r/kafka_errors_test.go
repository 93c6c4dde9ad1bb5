package k2r

import (
	"context"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

func TestKafkaErrorHintsSayWhatHappenedToTheTopic(t *testing.T) {
	fetch := func(err error) string { return (&KafkaSource{}).fetchError(context.Background(), "t", 3, err).Error() }
	cases := []struct {
		name    string
		msg     string
		want    []string
		notWant []string
	}{
		{"k2r deleted and recreated", fetch(kerr.UnknownTopicID),
			[]string{`topic "t" partition 3`, "deleted and created again during the run", "run again"}, nil},
		{"k2r deleted", fetch(kerr.UnknownTopicOrPartition),
			[]string{`topic "t" partition 3`, "deleted during the run"}, nil},
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
