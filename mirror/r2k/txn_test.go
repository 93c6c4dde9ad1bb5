package r2k

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/xmirror/xmirror/mirror/setting"
)

func TestTransactionalIDIsTheMirrorNameUnderAPrefix(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		fails      bool
	}{
		{"orders", "xmirror-r2k:orders", false},
		{"a b/ü:*", "xmirror-r2k:a b/ü:*", false},
		{strings.Repeat("n", maxTransactionalID-len(TransactionalIDPrefix)), "xmirror-r2k:" + strings.Repeat("n", maxTransactionalID-len(TransactionalIDPrefix)), false},
		{strings.Repeat("n", maxTransactionalID-len(TransactionalIDPrefix)+1), "", true},
	} {
		got, err := TransactionalID(tc.name)
		if tc.fails {
			if err == nil || !strings.Contains(setting.Render(err, flags), "--name") {
				t.Errorf("name of %d bytes: %q, %v; want refused, naming --name", len(tc.name), got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("TransactionalID(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestFencedIsAProducerEpochRefusal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{kerr.ProducerFenced, true},
		{fmt.Errorf("producer ID has a fatal, unrecoverable error, err: %w", kerr.InvalidProducerEpoch), true},
		{&EntryError{Stream: "s", ID: "1-1", Topic: "t", Err: kerr.ProducerFenced}, true},
		{kerr.InvalidTimestamp, false},
		{kerr.TransactionalIDAuthorizationFailed, false},
		{errors.New("i/o timeout"), false},
	} {
		if got := fenced(tc.err); got != tc.want {
			t.Errorf("fenced(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	msg := (&FencedError{Mirror: "m", Err: kerr.ProducerFenced}).Error()
	if !strings.Contains(msg, `another run of mirror "m" started`) || !strings.Contains(msg, "this one stops") || !strings.Contains(msg, "xmirror-r2k:m") {
		t.Errorf("FencedError says %q", msg)
	}
}
