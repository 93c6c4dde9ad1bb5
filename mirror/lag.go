package mirror

// Lag is how far a mirror is behind in one stream or partition of its
// source: Entries (records) not yet mirrored. A redis-to-kafka mirror
// names the Stream, a kafka-to-redis mirror the Topic and Partition.
type Lag struct {
	Stream    string
	Topic     string
	Partition int32
	Entries   int64
}
