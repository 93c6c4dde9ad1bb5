package k2r

import (
	"context"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

func TestAFetchErrorSaysWhatHappenedToTheTopic(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{kerr.UnknownTopicID, []string{`topic "t" partition 3`, "deleted and created again during the run", "run again"}},
		{kerr.UnknownTopicOrPartition, []string{`topic "t" partition 3`, "deleted during the run"}},
	} {
		msg := (&KafkaSource{}).fetchError(context.Background(), "t", 3, tc.err).Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%v: %q does not say %q", tc.err, msg, w)
			}
		}
	}
}
