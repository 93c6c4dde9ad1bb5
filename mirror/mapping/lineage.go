package mapping

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Lineage headers: every record redis-to-kafka writes carries the stream and
// entry ID it came from. redis-to-kafka reads them back after a crash to
// find what is already in Kafka (exactly once); kafka-to-redis uses them to
// restore entry IDs (PreserveIDs) and never copies them as fields.
const (
	HeaderStream = "xmirror.stream"
	HeaderID     = "xmirror.id"
)

// ReservedPrefix starts every header name xmirror keeps for itself, the
// lineage headers and any it may add. A user's field is a header in the raw
// format, and a field may have any name: one that starts with the prefix is
// written with the prefix once more (xmirror.id -> xmirror.xmirror.id), so
// no field can pass for lineage, and kafka-to-redis removes that one prefix
// again. Reserving the whole prefix, not just today's two names, keeps
// records already in Kafka unambiguous when a lineage header is added.
//
// Names that do not start with the prefix, including ones that differ only
// in case (XMIRROR.ID), are written as they are: the compare is on bytes,
// as Kafka's and Redis's are.
const ReservedPrefix = "xmirror."

// HeaderKey is the header name a field becomes in the raw format. It costs
// a prefix compare, and allocates only for a name in xmirror's namespace.
func HeaderKey(field string) string {
	if strings.HasPrefix(field, ReservedPrefix) {
		return ReservedPrefix + field
	}
	return field
}

// FieldName is the field a header other than lineage becomes: the inverse
// of headerKey. A header in the namespace that headerKey never writes (from
// another producer, say xmirror.trace) is copied as it is, not dropped.
func FieldName(header string) string {
	if strings.HasPrefix(header, ReservedPrefix+ReservedPrefix) {
		return header[len(ReservedPrefix):]
	}
	return header
}

// LineageIndex returns the positions of a record's lineage headers, -1 for
// one that is absent. Only the exact names count, and only their first
// occurrence: redis-to-kafka writes them first and once, and before names
// in the namespace were escaped, a field of that name followed them as a
// second header, which stays a field. Both directions read lineage through
// this function, so the crash read-back and kafka-to-redis always agree.
func LineageIndex(headers []kgo.RecordHeader) (stream, id int) {
	stream, id = -1, -1
	for i := range headers {
		switch headers[i].Key {
		case HeaderStream:
			if stream < 0 {
				stream = i
			}
		case HeaderID:
			if id < 0 {
				id = i
			}
		}
	}
	return stream, id
}
