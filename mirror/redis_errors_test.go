package mirror

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
)

// TestClassifyRedis: a server that does not answer is transient; a TLS
// handshake that failed for a certificate or a plain server is not, since
// retrying cannot change it.
func TestClassifyRedis(t *testing.T) {
	for _, tc := range []struct {
		err       error
		transient bool
	}{
		{errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), true},
		{fmt.Errorf("take lease k: %w", errors.New("read: connection reset by peer")), true},
		{fmt.Errorf("take lease k: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, false},
		{fmt.Errorf("handshake: %w", tls.AlertError(42)), false},
		{x509.HostnameError{Host: "cache"}, false},
	} {
		if got := IsTransient(ClassifyRedis(tc.err)); got != tc.transient {
			t.Errorf("%v: transient %v, want %v", tc.err, got, tc.transient)
		}
	}
}
