package mirror

// Lineage headers: every record redis-to-kafka writes carries the stream and
// entry ID it came from. redis-to-kafka reads them back after a crash to
// find what is already in Kafka (exactly once); kafka-to-redis uses them to
// restore entry IDs (--preserve-ids) and never copies them as fields.
const (
	HeaderStream = "xmirror.stream"
	HeaderID     = "xmirror.id"
)
