package mirror

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/redis/rueidis"
)

// ClassifyRedis marks a Redis failure transient when retrying can help: the
// connection failed or the server is (re)starting. An error reply about the
// data or the command itself (WRONGTYPE, NOGROUP, ...) is final.
func ClassifyRedis(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, rueidis.ErrClosing) {
		return err
	}
	// errors.As, not rueidis.IsRedisErr: the error comes wrapped with what
	// was being done, and IsRedisErr sees only an unwrapped reply.
	if isTLSFailure(err) {
		// A certificate refused or not trusted stays so: a retry would
		// only hide it.
		return err
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) && !re.IsNil() {
		msg := re.Error()
		// Loading after a restart, a failover under way, a replica not
		// yet promoted: the same command succeeds a moment later.
		if re.IsLoading() || re.IsTryAgain() || re.IsClusterDown() || strings.HasPrefix(msg, "MASTERDOWN") || strings.HasPrefix(msg, "BUSY ") || strings.HasPrefix(msg, "READONLY") {
			return Transient(err)
		}
		return err
	}
	return Transient(err)
}

// IsRefusal reports a Redis error reply that trying again would not change,
// such as an ACL's NOPERM.
func IsRefusal(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && !re.IsNil() && !IsTransient(ClassifyRedis(err))
}

// IsRedisErrPrefix reports a Redis error reply starting with prefix, such as
// "NOGROUP" or "BUSYGROUP".
func IsRedisErrPrefix(err error, prefix string) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.HasPrefix(re.Error(), prefix)
}

// IsRedisErrContaining reports a Redis error reply whose text contains s.
func IsRedisErrContaining(err error, s string) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.Contains(re.Error(), s)
}

// isTLSFailure says whether err is a TLS handshake that failed for good:
// a certificate not verified, refused by the server, or a server that does
// not speak TLS.
func isTLSFailure(err error) bool {
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var record tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &record) ||
		errors.As(err, &unknownCA) || errors.As(err, &host) || errors.As(err, &invalid)
}
