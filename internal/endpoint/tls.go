package endpoint

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/xmirror/xmirror/mirror/setting"
)

// tlsFiles are the TLS settings of one server, as a user gives them: the
// same for Redis and for Kafka.
type tlsFiles struct {
	CAFile, CertFile, KeyFile, ServerName string
	Insecure                              bool
}

// tlsFields names a server's TLS settings as its texts name them (see
// setting.Errorf): {RedisCA} or {KafkaCA}, and so on.
type tlsFields struct {
	CA, Cert, Key, ServerName, Insecure string
	// Plain is what to use instead for a server that does not speak TLS.
	Plain string
}

var (
	redisTLSFields = tlsFields{CA: "RedisCA", Cert: "RedisCert", Key: "RedisKey",
		ServerName: "RedisTLSServerName", Insecure: "RedisTLSInsecure", Plain: "use redis:// instead of rediss://"}
	kafkaTLSFields = tlsFields{CA: "KafkaCA", Cert: "KafkaCert", Key: "KafkaKey",
		ServerName: "KafkaTLSServerName", Insecure: "KafkaTLSInsecure", Plain: "connect without TLS (leave out {KafkaTLS} and the other TLS settings)"}
)

// given lists the settings of t that are set, by their field names.
func (t tlsFiles) given(f tlsFields) []string {
	var set []string
	for _, s := range []struct {
		on   bool
		name string
	}{{t.CAFile != "", f.CA}, {t.CertFile != "", f.Cert}, {t.KeyFile != "", f.Key},
		{t.ServerName != "", f.ServerName}, {t.Insecure, f.Insecure}} {
		if s.on {
			set = append(set, s.name)
		}
	}
	return set
}

// config returns base (nil for a new one) with t applied: TLS 1.2 at
// least, the CA pool, the client certificate, the server name. The files
// are read now, so a wrong path is an error here.
func (t tlsFiles) config(base *tls.Config, f tlsFields) (*tls.Config, error) {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	cfg.MinVersion = tls.VersionTLS12
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, setting.Errorf("{"+f.CA+"}: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, setting.Errorf("{"+f.CA+"} %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, setting.Errorf("{"+f.Cert+"} %s and {"+f.Key+"} %s: %s", t.CertFile, t.KeyFile, strings.TrimPrefix(err.Error(), "tls: "))
		}
		cfg.Certificates = []tls.Certificate{pair}
	case t.CertFile != "":
		return nil, setting.Errorf("{" + f.Cert + "} needs {" + f.Key + "}, the certificate's private key")
	case t.KeyFile != "":
		return nil, setting.Errorf("{" + f.Key + "} needs {" + f.Cert + "}, the key's certificate")
	}
	if t.ServerName != "" {
		cfg.ServerName = t.ServerName
	}
	if t.Insecure {
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

// tlsHint says what to do about a failed TLS handshake, in a text that
// names settings as {Field} (see setting.Errorf), or "" when err is none.
// clientCert says whether a client certificate was offered.
func tlsHint(err error, f tlsFields, clientCert bool) string {
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA):
		return "the server's certificate is signed by a CA this host does not trust; give that CA's certificate with {" + f.CA + "}"
	case errors.As(err, &host):
		return fmt.Sprintf("the server's certificate is not for %q (%s); connect by a name it holds or set {%s}", host.Host, certNames(host.Certificate), f.ServerName)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("the server's certificate has expired or is not valid yet (%s); renew it, or check this host's clock", invalid.Detail)
	case errors.As(err, &invalid):
		return "the server's certificate is not valid for a TLS server; check it"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the server does not speak TLS; " + f.Plain
	case strings.Contains(msg, "certificate required"), errors.As(err, &alert) && alert == 116:
		return "the server requires a client certificate; give one with {" + f.Cert + "} and {" + f.Key + "}"
	case strings.Contains(msg, "remote error: tls: expired certificate"):
		return "the server refused the client certificate ({" + f.Cert + "}): it has expired; renew it"
	case !clientCert && (strings.Contains(msg, "remote error: tls: bad certificate") || strings.Contains(msg, "remote error: tls: handshake failure")):
		// A server that requires a client certificate and got none says so
		// with one of these alerts (Java's brokers: bad_certificate).
		return "the server requires a client certificate; give one with {" + f.Cert + "} and {" + f.Key + "}"
	case strings.Contains(msg, "remote error: tls: unknown certificate authority"), strings.Contains(msg, "remote error: tls: bad certificate"):
		return "the server refused the client certificate ({" + f.Cert + "}); use one signed by a CA the server trusts"
	case strings.Contains(msg, "remote error: tls: unknown certificate"), strings.Contains(msg, "remote error: tls: revoked certificate"):
		// Java's brokers send certificate_unknown for an expired client
		// certificate.
		return "the server refused the client certificate ({" + f.Cert + "}): expired, revoked, or not signed by a CA it trusts; renew it or use another"
	case strings.Contains(msg, "remote error: tls"), isTLSError(err):
		if clientCert {
			return "TLS handshake failed; check the certificates ({" + f.CA + "}, {" + f.Cert + "})"
		}
		return "TLS handshake failed; check the certificates ({" + f.CA + "}), or " + f.Plain
	}
	return ""
}

// certNames lists the names a certificate holds, for messages.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no names"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	if len(names) == 0 {
		return "it holds no names"
	}
	return "it holds " + strings.Join(names, ", ")
}

func isTLSError(err error) bool {
	var rec tls.RecordHeaderError
	var cert *tls.CertificateVerificationError
	return errors.As(err, &rec) || errors.As(err, &cert)
}

// readSecretFile reads a password or token file (noun says which): its first line, without
// the line break, which must not be empty nor followed by another line.
func readSecretFile(path, field, noun string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", setting.Errorf("{"+field+"}: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", setting.Errorf("{"+field+"} %s is empty", path)
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", setting.Errorf("{"+field+"} %s holds more than one line; put the "+noun+" alone on its first line", path)
	}
	return s, nil
}

// secretFile is a password or token file read at start and again, at a
// login, when it changed (a regular file whose size or modification time
// is not what it was), so a rotated secret is used from the next
// connection on. A pipe or a process substitution (<(…)), which gives its
// content once, keeps what it gave; so does a file that cannot be read at
// the moment (removed or empty midway through a rotation): the server
// then says whether the secret still holds.
type secretFile struct {
	path string

	mu    sync.Mutex
	value string
	seen  os.FileInfo // of the file last read; nil for a pipe
}

// same says whether st is the file last read, unchanged: the same file
// (not one renamed over it), of the same size and time.
func (f *secretFile) same(st os.FileInfo) bool {
	return f.seen != nil && os.SameFile(f.seen, st) && st.Size() == f.seen.Size() && st.ModTime().Equal(f.seen.ModTime())
}

// newSecretFile reads path now: a wrong path, an empty file or one of
// several lines is an error naming field.
func newSecretFile(path, field, noun string) (*secretFile, error) {
	// Stat first: a rotation landing between the two is then read again
	// at the next login, not missed.
	st, statErr := os.Stat(path)
	v, err := readSecretFile(path, field, noun)
	if err != nil {
		return nil, err
	}
	f := &secretFile{path: path, value: v}
	if statErr == nil && st.Mode().IsRegular() {
		f.seen = st
	}
	return f, nil
}

// get is the secret as the file holds it now.
func (f *secretFile) get() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.path)
	if err != nil || !st.Mode().IsRegular() || f.same(st) {
		return f.value
	}
	if v, err := readSecretFile(f.path, "", ""); err == nil {
		f.value, f.seen = v, st
	}
	return f.value
}
