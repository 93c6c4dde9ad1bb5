package mirror

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultStreamTemplate names each destination stream after its topic.
const DefaultStreamTemplate = "{topic}"

// A StreamTemplate names the destination stream of a topic-partition.
//
// Syntax: literal text with the placeholders {topic} and {partition};
// "{{" and "}}" stand for literal braces (so a Redis hash tag around the
// topic is "{{{topic}}}"). Any other "{...}", an empty "{}", and a brace
// left unpaired are errors.
type StreamTemplate struct {
	raw   string
	parts []streamTemplatePart
	// HasTopic and HasPartition tell which placeholders occur.
	HasTopic, HasPartition bool
}

type streamTemplatePart struct {
	literal string
	kind    byte // 0 literal, 't' topic, 'p' partition
}

// ParseStreamTemplate parses a --stream value.
func ParseStreamTemplate(s string) (StreamTemplate, error) {
	t := StreamTemplate{raw: s}
	if s == "" {
		return t, errors.New("stream template is empty")
	}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, streamTemplatePart{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '{':
			if i+1 < len(s) && s[i+1] == '{' {
				lit.WriteByte('{')
				i++
				continue
			}
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return t, fmt.Errorf("stream template %q: '{' at byte %d is not closed; write {{ for a literal brace", s, i)
			}
			name := s[i+1 : i+1+end]
			switch name {
			case "topic":
				flush()
				t.parts = append(t.parts, streamTemplatePart{kind: 't'})
				t.HasTopic = true
			case "partition":
				flush()
				t.parts = append(t.parts, streamTemplatePart{kind: 'p'})
				t.HasPartition = true
			default:
				return t, fmt.Errorf("stream template %q: unknown placeholder {%s}; use {topic} or {partition}, or {{ }} for literal braces", s, name)
			}
			i += end + 1
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				lit.WriteByte('}')
				i++
				continue
			}
			return t, fmt.Errorf("stream template %q: '}' at byte %d has no '{'; write }} for a literal brace", s, i)
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return t, nil
}

// String is the template as given.
func (t StreamTemplate) String() string { return t.raw }

// Stream is the stream name for a topic-partition.
func (t StreamTemplate) Stream(topic string, partition int32) string {
	if len(t.parts) == 1 && t.parts[0].kind == 't' {
		return topic
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch p.kind {
		case 't':
			b.WriteString(topic)
		case 'p':
			b.WriteString(strconv.FormatInt(int64(partition), 10))
		default:
			b.WriteString(p.literal)
		}
	}
	return b.String()
}

// CheckTopics refuses a template that cannot tell the given topics apart
// where it must: with {partition} but without {topic}, partition 0 of every
// topic would share a stream, which is never what was meant. A template
// with neither placeholder merges all topics into one stream on purpose.
func (t StreamTemplate) CheckTopics(topics []string) error {
	if len(topics) > 1 && t.HasPartition && !t.HasTopic {
		return fmt.Errorf("stream template %q has {partition} but not {topic}, so the same partition number of %d topics would share a stream; add {topic}", t.raw, len(topics))
	}
	return nil
}
