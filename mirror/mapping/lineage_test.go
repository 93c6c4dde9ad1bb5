package mapping

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestFieldNamesInTheReservedNamespaceAreEscaped(t *testing.T) {
	tests := []struct{ field, header string }{
		{"payload", "payload"},
		{"", ""},
		{"\xff\xfe", "\xff\xfe"},
		{"xmirror", "xmirror"},
		{"xmirror.", "xmirror.xmirror."},
		{"xmirror.id", "xmirror.xmirror.id"},
		{"xmirror.stream", "xmirror.xmirror.stream"},
		{"xmirror.xmirror.id", "xmirror.xmirror.xmirror.id"},
		{"xmirror.xmirror.", "xmirror.xmirror.xmirror."},
		{"xmirror.\xff", "xmirror.xmirror.\xff"},
		{"xmirror.other", "xmirror.xmirror.other"},
		{"XMIRROR.ID", "XMIRROR.ID"},
		{"Xmirror.id", "Xmirror.id"},
		{" xmirror.id", " xmirror.id"},
		{"xmirror-id", "xmirror-id"},
	}
	for _, tt := range tests {
		got := HeaderKey(tt.field)
		if got != tt.header {
			t.Errorf("headerKey(%q) = %q, want %q", tt.field, got, tt.header)
		}
		if back := FieldName(got); back != tt.field {
			t.Errorf("fieldName(%q) = %q, want the field %q back", got, back, tt.field)
		}
		if got == HeaderID || got == HeaderStream {
			t.Errorf("field %q is written as the lineage header %q", tt.field, got)
		}
	}
}

func TestHeadersOfOtherProducersKeepTheirNames(t *testing.T) {
	// Headers redis-to-kafka never writes: only a doubled prefix is
	// taken for an escape.
	for _, h := range []string{"trace", "", "xmirror.", "xmirror.trace", "xmirror.xmirror", "XMIRROR.XMIRROR.id"} {
		if got := FieldName(h); got != h {
			t.Errorf("fieldName(%q) = %q, want it unchanged", h, got)
		}
	}
}

func TestLineageIsTheFirstHeaderOfEachExactName(t *testing.T) {
	tests := []struct {
		name       string
		headers    []string
		stream, id int
	}{
		{"none", nil, -1, -1},
		{"as redis-to-kafka writes it", []string{HeaderStream, "s", HeaderID, "1-1", "payload", "x"}, 0, 1},
		{"escaped fields are not lineage", []string{"xmirror.xmirror.stream", "t", "xmirror.xmirror.id", "2-2"}, -1, -1},
		{"other cases are not lineage", []string{"XMIRROR.STREAM", "t", "XMIRROR.ID", "2-2", "xmirror.Id", "3-3"}, -1, -1},
		{"prefix alone is not lineage", []string{"xmirror.", "x", "xmirror", "y"}, -1, -1},
		// An earlier redis-to-kafka wrote a field named xmirror.id as a
		// second header after the lineage: the first one is the lineage.
		{"twice: the first counts", []string{HeaderStream, "s", HeaderID, "1-1", HeaderID, "9999999999999-0", HeaderStream, "t"}, 0, 1},
		{"only one of them", []string{"a", "1", HeaderID, "1-1"}, -1, 1},
		{"in another order", []string{HeaderID, "1-1", "a", "1", HeaderStream, "s"}, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, i := LineageIndex(hdr(tt.headers...))
			if s != tt.stream || i != tt.id {
				t.Errorf("lineageIndex = %d, %d, want %d, %d", s, i, tt.stream, tt.id)
			}
		})
	}
}

// The raw format's cost per field: a prefix compare, and an allocation
// only for a name in the namespace.
func BenchmarkHeaderKey(b *testing.B) {
	for _, name := range []string{"customer", "xmirror.id"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				benchSink = HeaderKey(name)
			}
		})
	}
}

var benchSink string

func hdr(kv ...string) []kgo.RecordHeader {
	var h []kgo.RecordHeader
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return h
}
