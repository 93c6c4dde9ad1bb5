package mirror

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
