package checkpoint

import (
	"errors"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xmirror/xmirror/mirror/mapping"
)

// fuzzHash reads a hash as HGETALL returns it from fuzzer input: fields and
// values alternate, separated by NUL bytes (a field or value of any other
// bytes can be written); a field given twice keeps its last value, as
// HSET does.
func fuzzHash(in string) map[string]string {
	m := map[string]string{}
	parts := strings.Split(in, "\x00")
	for i := 0; i+1 < len(parts); i += 2 {
		m[parts[i]] = parts[i+1]
	}
	return m
}

// hashSeed writes field/value pairs as fuzzHash reads them.
func hashSeed(kv ...string) string { return strings.Join(kv, "\x00") }

// checkRefusal: an error for a damaged checkpoint is one line that names
// the key.
func checkRefusal(t *testing.T, key string, m map[string]string, err error) {
	t.Helper()
	msg := err.Error()
	if msg == "" || !strings.Contains(msg, strconv.Quote(key)) {
		t.Fatalf("hash %q: error %q does not name the checkpoint %q", m, msg, key)
	}
}

// encodeR2K writes ck as redis-to-kafka writes its checkpoint (the commit's
// fields and the init scripts' ones).
func encodeR2K(ck R2K) map[string]string {
	m := map[string]string{fieldVersion: strconv.Itoa(Version), fieldKind: KindRedisToKafka,
		fieldEntries: strconv.FormatInt(ck.Entries, 10), fieldBytes: strconv.FormatInt(ck.Bytes, 10)}
	if !ck.Updated.IsZero() {
		m[fieldUpdated] = strconv.FormatInt(ck.Updated.UnixMilli(), 10)
	}
	for s, id := range ck.Streams {
		m[r2kStreamPrefix+s] = id
	}
	for tp, off := range ck.Partitions {
		m[r2kPartitionPrefix+formatTopicPartition(tp)] = strconv.FormatInt(off, 10)
	}
	for topic, n := range ck.PartitionCounts {
		m[r2kCountPrefix+topic] = strconv.FormatInt(int64(n), 10)
	}
	if ck.Group != "" {
		m[r2kFieldGroup] = ck.Group
	}
	for stream, n := range ck.Trimmed {
		m[r2kTrimmedPrefix+stream] = strconv.FormatInt(n, 10)
	}
	return m
}

// FuzzDecodeR2K: no hash read back from Redis makes the redis-to-kafka
// checkpoint reader panic; what it refuses is refused naming the key (and,
// past the version and kind, as ErrCorrupt); what it accepts holds only
// entry IDs and non-negative numbers, and reads back the same once written
// again.
func FuzzDecodeR2K(f *testing.F) {
	head := []string{fieldVersion, "1", fieldKind, KindRedisToKafka}
	for _, kv := range [][]string{
		head,
		append(head, "stream:s", "5-1", "partition:orders:2", "7", "partition_count:orders", "3", "covered:orders", "3", "partition:orders:0", "0", "partition:orders:1", "4"),
		append(head, "entries", "3", "bytes", "30", "updated_ms", "1700000000000", "group", "g"),
		append(head, "stream:s", "5-1", "trimmed:s", "4", "trimmed:", "0", "trimmed:t", "-1", "trimmed:u", "x"),
		append(head, "stream:", "0-0", "partition::0", "1", "partition:a:b:0", "1"),
		append(head, "covered:t", "1000000000"),
		append(head, "partition:t:-1", "0", "partition:t:0", "-5", "stream:s", "yesterday", "group", ""),
		append(head, "entries", "many"),
		append(head, "partition:t:1", "6", "partition:t:01", "5"),
		{fieldVersion, "9", fieldKind, KindRedisToKafka},
		{fieldVersion, "1", fieldKind, KindKafkaToRedis},
		{"stream:s", "1-0"},
	} {
		f.Add(hashSeed(kv...))
	}
	const key = "xmirror:r2k:m"
	f.Fuzz(func(t *testing.T, in string) {
		m := fuzzHash(in)
		if err := checkHeader(key, m, KindRedisToKafka, Version, Version); err != nil {
			checkRefusal(t, key, m, err)
			return
		}
		ck, err := decodeR2K(key, m)
		if again, err2 := decodeR2K(key, m); (err == nil) != (err2 == nil) || err == nil && !reflect.DeepEqual(again, ck) {
			t.Fatalf("hash %q read twice gives %+v, %v and %+v, %v", m, ck, err, again, err2)
		}
		if err != nil {
			checkRefusal(t, key, m, err)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("hash %q: error %v does not wrap ErrCorrupt", m, err)
			}
			return
		}
		for s, id := range ck.Streams {
			if v, ok := m[r2kStreamPrefix+s]; !ok || v != id || !mapping.ValidID(id) {
				t.Fatalf("hash %q: stream %q at %q", m, s, id)
			}
		}
		for tp, off := range ck.Partitions {
			if off < 0 || tp.Partition < 0 {
				t.Fatalf("hash %q: partition %v at %d", m, tp, off)
			}
		}
		for topic, n := range ck.PartitionCounts {
			if n <= 0 {
				t.Fatalf("hash %q: topic %q counts %d partitions", m, topic, n)
			}
		}
		if ck.Entries < 0 || ck.Bytes < 0 {
			t.Fatalf("hash %q: totals %d, %d", m, ck.Entries, ck.Bytes)
		}
		for stream, n := range ck.Trimmed {
			if n < 0 {
				t.Fatalf("hash %q: stream %q counts %d trimmed", m, stream, n)
			}
		}
		again, err := decodeR2K(key, encodeR2K(ck))
		if err != nil {
			t.Fatalf("hash %q read as %+v, written again, is refused: %v", m, ck, err)
		}
		if !reflect.DeepEqual(again, ck) {
			t.Fatalf("hash %q read as %+v, written again, reads %+v", m, ck, again)
		}
	})
}

// encodeK2R writes ck as kafka-to-redis writes its checkpoint.
func encodeK2R(ck K2R) map[string]string {
	m := map[string]string{}
	h := K2RHeader(ck.Updated)
	for i := 0; i+1 < len(h); i += 2 {
		m[h[i]] = h[i+1]
	}
	if ck.Updated.IsZero() {
		delete(m, fieldUpdated)
	}
	m[fieldEntries] = strconv.FormatInt(ck.Entries, 10)
	m[fieldBytes] = strconv.FormatInt(ck.Bytes, 10)
	var listed []string
	for tp, off := range ck.Partitions {
		m[K2RPositionField(tp)] = strconv.FormatInt(off, 10)
		listed = append(listed, K2RPositionField(tp))
	}
	sort.Strings(listed)
	m[fieldK2RPartitions] = strings.Join(listed, ",")
	for topic, id := range ck.TopicIDs {
		m[K2RTopicIDField(topic)] = id
	}
	return m
}

// FuzzDecodeK2R: the same for the kafka-to-redis checkpoint, whose every
// field is either part of its header, a total, a topic ID or a position.
func FuzzDecodeK2R(f *testing.F) {
	head := []string{fieldVersion, "2", fieldKind, KindKafkaToRedis}
	for _, kv := range [][]string{
		append(head, fieldK2RPartitions, ""),
		append(head, fieldK2RPartitions, "orders:0,orders:1", "orders:0", "5", "orders:1", "0", "orders:topic_id", "AAAAAAAAAAAAAAAAAAAAAA"),
		append(head, fieldK2RPartitions, "orders:0", "entries", "3", "bytes", "30", "updated_ms", "1700000000000"),
		append(head, fieldK2RPartitions, "orders:0,orders:2", "orders:0", "1"),
		append(head, fieldK2RPartitions, ",", ":topic_id", ""),
		append(head, fieldK2RPartitions, "a:b:0", "a:b:0", "9", "t:+1", "2", "t:x", "1"),
		append(head, fieldK2RPartitions, "t:1", "t:1", "6", "t:01", "5"),
		{fieldVersion, "1", fieldKind, KindKafkaToRedis, "orders:0", "5"},
		append(head, "orders:0", "5"),
		{fieldVersion, "3", fieldKind, KindKafkaToRedis},
		{fieldVersion, "two", fieldKind, KindKafkaToRedis},
	} {
		f.Add(hashSeed(kv...))
	}
	const key = "xmirror:k2r:{s}:m"
	f.Fuzz(func(t *testing.T, in string) {
		m := fuzzHash(in)
		if err := checkHeader(key, m, KindKafkaToRedis, k2rOldestVersion, K2RVersion); err != nil {
			checkRefusal(t, key, m, err)
			return
		}
		ck, err := decodeK2R(key, m)
		if again, err2 := decodeK2R(key, m); (err == nil) != (err2 == nil) || err == nil && !reflect.DeepEqual(again, ck) {
			t.Fatalf("hash %q read twice gives %+v, %v and %+v, %v", m, ck, err, again, err2)
		}
		if err != nil {
			checkRefusal(t, key, m, err)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("hash %q: error %v does not wrap ErrCorrupt", m, err)
			}
			return
		}
		for tp, off := range ck.Partitions {
			if off < 0 || tp.Partition < 0 {
				t.Fatalf("hash %q: partition %v at %d", m, tp, off)
			}
		}
		for _, f := range splitList(m[fieldK2RPartitions]) {
			off, _ := strconv.ParseInt(m[f], 10, 64)
			if tp, err := ParseK2RPositionField(f); err != nil || K2RPositionField(tp) != f || ck.Partitions[tp] != off {
				t.Fatalf("hash %q: listed %q is not a position read", m, f)
			}
		}
		for topic, id := range ck.TopicIDs {
			if id == "" || m[K2RTopicIDField(topic)] != id {
				t.Fatalf("hash %q: topic %q has ID %q", m, topic, id)
			}
		}
		if ck.Entries < 0 || ck.Bytes < 0 {
			t.Fatalf("hash %q: totals %d, %d", m, ck.Entries, ck.Bytes)
		}
		again, err := decodeK2R(key, encodeK2R(ck))
		if err != nil {
			t.Fatalf("hash %q read as %+v, written again, is refused: %v", m, ck, err)
		}
		if !reflect.DeepEqual(again, ck) {
			t.Fatalf("hash %q read as %+v, written again, reads %+v", m, ck, again)
		}
	})
}

// FuzzParseHolder: no lease value makes its reader panic; what it reads
// is written back as it was read; and a value it cannot read whole never
// lets a process take the lease over.
func FuzzParseHolder(f *testing.F) {
	for _, v := range []string{
		"web-1:4242:0a1b2c3d start=98765 boot=6f1c1d34-1c6a-4b8e-9a0e-3f0c2b9d1e77 pidns=4026531836",
		"web-1:4242:0a1b2c3d", "a:b:7:ff start=1 boot=x pidns=y", "garbage", "h:notapid:ff start=1 boot=x pidns=y",
		"", ":1:", "h:+7:n start=-1 boot= pidns==", "h:7:n\tstart=18446744073709551616 boot=b=c pidns=p extra",
	} {
		f.Add(v)
	}
	self := process{host: "h", pid: 10, nonce: "01", start: 500, boot: "b", pidns: "p"}
	f.Fuzz(func(t *testing.T, v string) {
		p := parseHolder(v)
		if p.pid <= 0 {
			if p != (process{}) {
				t.Fatalf("%q: no pid, yet read as %+v", v, p)
			}
		} else {
			want := p
			if p.start == 0 || p.boot == "" || p.pidns == "" {
				want.start, want.boot, want.pidns = 0, "", "" // value() writes all three or none
			}
			if got := parseHolder(want.value()); got != want {
				t.Fatalf("%q read as %+v, written as %q, reads %+v", v, want, want.value(), got)
			}
		}
		if _, ok := self.mayTakeOver(p, func(int, uint64) bool { return true }); ok {
			if p.pid <= 0 || p.start == 0 || p.host != self.host || p.boot != self.boot || p.pidns != self.pidns {
				t.Fatalf("%q (read as %+v) may be taken over", v, p)
			}
		}
	})
}

// The totals of a redis-to-kafka checkpoint are counts: one that is not
// would make the next commit's HINCRBY fail, so it is refused when read.
func TestDecodeR2KRefusesTotalsThatAreNotCounts(t *testing.T) {
	const key = "xmirror:r2k:m"
	for _, f := range []string{fieldEntries, fieldBytes, fieldUpdated} {
		for _, v := range []string{"many", "-1", "", "1.5"} {
			m := map[string]string{fieldVersion: "1", fieldKind: KindRedisToKafka, f: v}
			if _, err := decodeR2K(key, m); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), strconv.Quote(f)) {
				t.Errorf("%s=%q: %v, want a corrupt checkpoint naming the field", f, v, err)
			}
		}
	}
	m := map[string]string{fieldVersion: "1", fieldKind: KindRedisToKafka, fieldEntries: "3", fieldUpdated: "1700000000000"}
	ck, err := decodeR2K(key, m)
	if err != nil || ck.Entries != 3 || ck.Bytes != 0 || !ck.Updated.Equal(time.UnixMilli(1700000000000)) {
		t.Fatalf("read %+v, %v", ck, err)
	}
}

// A partition field is read only as xmirror writes it: t:01 beside t:1
// would be two positions of one partition, one of them taken at random.
func TestPartitionFieldsAreReadOnlyAsWritten(t *testing.T) {
	for _, f := range []string{"t:01", "t:+1", "t:00", "t: 1", "t:1 "} {
		if tp, err := ParseK2RPositionField(f); err == nil {
			t.Errorf("%q read as %v", f, tp)
		}
	}
	for _, tp := range []TopicPartition{{"t", 0}, {"t", 1}, {"a.b-c_d", 2147483647}, {"", 3}} {
		f := K2RPositionField(tp)
		if got, err := ParseK2RPositionField(f); err != nil && tp.Topic != "" || err == nil && got != tp {
			t.Errorf("%v written as %q reads %v, %v", tp, f, got, err)
		}
	}
	m := map[string]string{fieldVersion: "2", fieldKind: KindKafkaToRedis, fieldK2RPartitions: "t:1", "t:1": "6", "t:01": "5"}
	if _, err := decodeK2R("k", m); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"t:01"`) {
		t.Fatalf("two fields for partition 1: %v, want the extra one refused", err)
	}
}
