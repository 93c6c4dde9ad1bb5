package mirror

import "github.com/xmirror/xmirror/mirror/setting"

// What a mirror does with an entry it cannot write: the destination refuses it
// (redis-to-kafka), or it cannot be decoded (kafka-to-redis).
const (
	OnErrorFail       = "fail"        // stop; nothing from that entry on is checkpointed
	OnErrorSkip       = "skip"        // log it, count it, go on
	OnErrorDeadLetter = "dead-letter" // copy it into the dead-letter stream, go on
)

// What a mirror does with entries gone from the source before it read them
// (trimmed from a stream, deleted from a partition by retention).
const (
	OnGapFail = "fail" // stop, naming what was lost
	OnGapSkip = "skip" // warn, count them as lost, and go on
)

// ValidatePolicies adds to ps the problems of the policies both directions
// have: OnError with its DeadLetterStream, and OnGap.
func ValidatePolicies(ps *setting.Problems, onError, deadLetterStream, onGap string) {
	switch onError {
	case OnErrorFail, OnErrorSkip:
		if deadLetterStream != "" {
			ps.Addf("DeadLetterStream", "{DeadLetterStream} needs {OnError} dead-letter")
		}
	case OnErrorDeadLetter:
		if deadLetterStream == "" {
			ps.Addf("DeadLetterStream", "{OnError} dead-letter needs {DeadLetterStream}")
		}
	default:
		ps.Addf("OnError", "{OnError} must be fail, skip or dead-letter, got %q", onError)
	}
	if onGap != OnGapFail && onGap != OnGapSkip {
		ps.Addf("OnGap", "{OnGap} must be fail or skip, got %q", onGap)
	}
}
