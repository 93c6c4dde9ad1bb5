package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// RedisTLS is the pair of TLS Redis servers that scripts/services.sh
// up --secure starts (or external ones named by REDIS_TLS_URL,
// REDIS_MTLS_URL and REDIS_TLS_DIR): URL verifies a client certificate
// when one is sent, MTLSURL requires one. Dir holds ca.crt, client.crt,
// client.key and a <user>.password file for each ACL user (see
// scripts/services.sh).
type RedisTLS struct {
	URL, MTLSURL string // rediss:// URLs without credentials
	Dir          string
}

// The ACL users of the TLS servers, as scripts/services.sh makes them.
const (
	TLSAdmin   = "xmirror-admin"      // every command and key: the tests' own clients
	TLSUserR2K = "xmirror-r2k"        // exactly what redis-to-kafka needs, on streams tls-*
	TLSUserK2R = "xmirror-k2r"        // exactly what kafka-to-redis needs, on streams tls-*
	TLSNoXack  = "xmirror-r2k-noxack" // TLSUserR2K without XACK
)

// CA, Cert and Key are the PEM files of the servers' CA and of the
// client's certificate and key.
func (s RedisTLS) CA() string   { return filepath.Join(s.Dir, "ca.crt") }
func (s RedisTLS) Cert() string { return filepath.Join(s.Dir, "client.crt") }
func (s RedisTLS) Key() string  { return filepath.Join(s.Dir, "client.key") }

// PasswordFile is the file holding user's password.
func (s RedisTLS) PasswordFile(user string) string { return filepath.Join(s.Dir, user+".password") }

// Password is user's password.
func (s RedisTLS) Password(tb testing.TB, user string) string {
	tb.Helper()
	b, err := os.ReadFile(s.PasswordFile(user))
	if err != nil {
		tb.Fatalf("password of %s: %v", user, err)
	}
	return strings.TrimSpace(string(b))
}

// TLSRedis returns the TLS servers, having checked that both answer the
// admin user over TLS with the client certificate; a missing one skips the
// test, or fails it under CI=true.
func TLSRedis(tb testing.TB) RedisTLS {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: skipped with -short")
	}
	s := RedisTLS{URL: envOr("REDIS_TLS_URL", "rediss://127.0.0.1:6380/0"),
		MTLSURL: envOr("REDIS_MTLS_URL", "rediss://127.0.0.1:6381/0"), Dir: os.Getenv("REDIS_TLS_DIR")}
	if s.Dir == "" {
		s.Dir = defaultTLSDir()
	}
	for _, u := range []string{s.URL, s.MTLSURL} {
		c, err := s.connect(u, TLSAdmin)
		if err != nil {
			tb.Helper()
			missingTLS(tb, u, err)
		}
		c.Close()
	}
	return s
}

// Admin is a plain client of the server at url (URL or MTLSURL), logged in
// as the admin user, sharing no code with xmirror; closed when the test ends.
func (s RedisTLS) Admin(tb testing.TB, url string) rueidis.Client {
	tb.Helper()
	c, err := s.connect(url, TLSAdmin)
	if err != nil {
		tb.Fatalf("connect to %s as %s: %v", url, TLSAdmin, err)
	}
	tb.Cleanup(c.Close)
	return c
}

func (s RedisTLS) connect(url, user string) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	pw, err := os.ReadFile(s.PasswordFile(user))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(s.CA())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(s.Cert(), s.Key())
	if err != nil {
		return nil, err
	}
	opt.TLSConfig.RootCAs, opt.TLSConfig.Certificates = pool, []tls.Certificate{pair}
	opt.Username, opt.Password = user, strings.TrimSpace(string(pw))
	opt.DisableCache = true
	opt.Dialer.Timeout = 3 * time.Second
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func missingTLS(tb testing.TB, url string, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("the TLS Redis at %s is required under CI=true but unreachable: %v (start it with scripts/services.sh up --secure)", url, err)
	}
	tb.Skipf("the TLS Redis at %s is unreachable (%v); start it with scripts/services.sh up --secure", url, err)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// defaultTLSDir is where scripts/services.sh keeps the TLS material of
// this checkout.
func defaultTLSDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", ".local", "services", "redis-tls")
}
