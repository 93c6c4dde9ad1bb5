package k2r

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/xmirror/xmirror/mirror/mapping"
)

// DefaultStreamTemplate names each destination stream after its topic.
const DefaultStreamTemplate = "{topic}"

// A StreamTemplate names the destination stream of a topic-partition: a
// Template with the placeholders {topic} and {partition} ("{{" and "}}"
// are literal braces, so a Redis hash tag around the topic is
// "{{{topic}}}").
type StreamTemplate struct {
	mapping.Template
}

// ParseStreamTemplate parses a Stream value.
func ParseStreamTemplate(s string) (StreamTemplate, error) {
	if s == "" {
		return StreamTemplate{}, errors.New("stream template is empty")
	}
	t, err := mapping.ParseTemplate(s, "topic", "partition")
	if err != nil {
		return StreamTemplate{}, err
	}
	return StreamTemplate{t}, nil
}

// Stream is the stream name for a topic-partition.
func (t StreamTemplate) Stream(topic string, partition int32) string {
	return t.Expand(map[string]string{"topic": topic, "partition": strconv.FormatInt(int64(partition), 10)})
}

// CheckTopics refuses a template that cannot tell the given topics apart
// where it must: with {partition} but without {topic}, partition 0 of every
// topic would share a stream, which is never what was meant. A template
// with neither placeholder merges all topics into one stream on purpose.
func (t StreamTemplate) CheckTopics(topics []string) error {
	if len(topics) > 1 && t.Uses("partition") && !t.Uses("topic") {
		return fmt.Errorf("stream template %q has {partition} but not {topic}, so the same partition number of %d topics would share a stream; add {topic}", t.String(), len(topics))
	}
	return nil
}
