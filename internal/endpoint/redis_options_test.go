package endpoint

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/mirror/setting"
)

// writeFile writes content to the file name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestParseRedisOptions(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	pwFile := writeFile(t, dir, "pw", "s3cret-file\n")
	crlfFile := writeFile(t, dir, "pw-crlf", "s3cret-file\r\n")
	emptyFile := writeFile(t, dir, "pw-empty", "\n")
	twoLines := writeFile(t, dir, "pw-two", "a\nb\n")
	notPEM := writeFile(t, dir, "ca-bad", "not a certificate")

	cases := []struct {
		name     string
		url      string
		o        RedisOptions
		user, pw string
		check    func(t *testing.T, r Redis)
		wantErr  string
	}{
		{name: "the URL's user and password win over the environment's", url: "rediss://u:p@h:1",
			o: RedisOptions{User: "envu", Password: "envp"}, user: "u", pw: "p"},
		{name: "the environment's when the URL has none", url: "rediss://h:1",
			o: RedisOptions{User: "envu", Password: "envp"}, user: "envu", pw: "envp"},
		{name: "a user in the URL, the password from the environment", url: "rediss://u@h:1",
			o: RedisOptions{Password: "envp"}, user: "u", pw: "envp"},
		{name: "the password file wins over the environment", url: "redis://u@h:1",
			o: RedisOptions{Password: "envp", PasswordFile: pwFile}, user: "u", pw: "s3cret-file"},
		{name: "a password file's CRLF is not part of it", url: "redis://h:1",
			o: RedisOptions{PasswordFile: crlfFile}, pw: "s3cret-file"},
		{name: "password in the URL and a file", url: "redis://u:p@h:1", o: RedisOptions{PasswordFile: pwFile},
			wantErr: "the password is given twice, in <Redis> and in <RedisPasswordFile>"},
		{name: "empty password file", url: "redis://h:1", o: RedisOptions{PasswordFile: emptyFile}, wantErr: "<RedisPasswordFile> " + emptyFile + " is empty"},
		{name: "password file of two lines", url: "redis://h:1", o: RedisOptions{PasswordFile: twoLines}, wantErr: "holds more than one line"},
		{name: "missing password file", url: "redis://h:1", o: RedisOptions{PasswordFile: filepath.Join(dir, "nope")}, wantErr: "<RedisPasswordFile>: open"},
		{name: "CA, client certificate, server name", url: "rediss://h:1",
			o: RedisOptions{CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "cache.example"},
			check: func(t *testing.T, r Redis) {
				c := r.Option.TLSConfig
				if c.RootCAs == nil || len(c.Certificates) != 1 || c.ServerName != "cache.example" || c.InsecureSkipVerify || r.Insecure() {
					t.Fatalf("TLS settings not applied: %+v", c)
				}
			}},
		{name: "the host is the server name by default", url: "rediss://cache:1",
			check: func(t *testing.T, r Redis) {
				if r.Option.TLSConfig.ServerName != "cache" || r.Option.TLSConfig.MinVersion == 0 {
					t.Fatalf("server name %q", r.Option.TLSConfig.ServerName)
				}
			}},
		{name: "insecure", url: "rediss://h:1", o: RedisOptions{Insecure: true},
			check: func(t *testing.T, r Redis) {
				if !r.Insecure() {
					t.Fatal("not insecure")
				}
			}},
		{name: "skip_verify is insecure too", url: "rediss://h:1?skip_verify=true",
			check: func(t *testing.T, r Redis) {
				if !r.Insecure() {
					t.Fatal("not insecure")
				}
			}},
		{name: "CA with a plain URL", url: "redis://h:1", o: RedisOptions{CAFile: cert}, wantErr: "<RedisCA> applies only to TLS; use a rediss:// URL in <Redis>"},
		{name: "client certificate with a plain URL", url: "redis://h:1", o: RedisOptions{CertFile: cert, KeyFile: key}, wantErr: "<RedisCert> applies only to TLS"},
		{name: "server name with a plain URL", url: "redis://h:1", o: RedisOptions{ServerName: "x"}, wantErr: "<RedisTLSServerName> applies only to TLS"},
		{name: "insecure with a plain URL", url: "redis://h:1", o: RedisOptions{Insecure: true}, wantErr: "<RedisTLSInsecure> applies only to TLS"},
		{name: "certificate without key", url: "rediss://h:1", o: RedisOptions{CertFile: cert}, wantErr: "<RedisCert> needs <RedisKey>"},
		{name: "key without certificate", url: "rediss://h:1", o: RedisOptions{KeyFile: key}, wantErr: "<RedisKey> needs <RedisCert>"},
		{name: "key of another certificate", url: "rediss://h:1", o: RedisOptions{CertFile: cert, KeyFile: notPEM}, wantErr: "<RedisCert> " + cert + " and <RedisKey> " + notPEM},
		{name: "CA file without a certificate", url: "rediss://h:1", o: RedisOptions{CAFile: notPEM}, wantErr: "<RedisCA> " + notPEM + " holds no PEM certificate"},
		{name: "missing CA file", url: "rediss://h:1", o: RedisOptions{CAFile: filepath.Join(dir, "nope")}, wantErr: "<RedisCA>: open"},
		{name: "the error names the endpoint, its password redacted", url: "rediss://u:topsecret@h:1", o: RedisOptions{CertFile: cert},
			wantErr: "redis rediss://u:xxxxx@h:1: <RedisCert> needs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRedis(tc.url, tc.o)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				if msg := setting.Render(err, flagNames); !strings.Contains(msg, tc.wantErr) {
					t.Fatalf("err = %q, want %q", msg, tc.wantErr)
				}
				if strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error shows a password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			if tc.user != "" || tc.pw != "" {
				if r.Option.Username != tc.user || r.Option.Password != tc.pw {
					t.Fatalf("user %q password %q, want %q %q", r.Option.Username, r.Option.Password, tc.user, tc.pw)
				}
			}
		})
	}
}

func TestURLHasPassword(t *testing.T) {
	for url, want := range map[string]bool{"redis://h:1": false, "redis://u@h:1": false, "redis://u:p@h:1": true, "redis://:p@h:1": true} {
		r, err := ParseRedisURL(url)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.URLHasPassword(); got != want {
			t.Errorf("%s: %v, want %v", url, got, want)
		}
	}
}

// FuzzParseRedisURL: no URL makes the parser panic; a refusal is one line;
// a URL accepted has a host, takes only the parameters xmirror applies and
// parses again to the same options; and neither its result nor its error
// shows the URL's password.
func FuzzParseRedisURL(f *testing.F) {
	for _, seed := range []string{
		"redis://127.0.0.1:6379/0", "rediss://u:secret@cache:6380/2?dial_timeout=2s", "redis://:secret@h",
		"redis://u:secret@h:1/0?bogus=1", "redis://u:secret@h:1:%zz", "rediss://h?skip_verify=true&protocol=2",
		"unix:///tmp/redis.sock", "redis://[::1]:6379", "redis://u:se@cret@h", "", "redis://h:1/0?db=1&db=2",
		"redis://h:6379/0?foo=1", "redis://h:1?db=1;foo=2", "redis://h:1?DB=1", "redis://h:1?db", "redis://h:1?%zz",
		"redis://u:secret@h:1?client_name=secret",
		"redis//u:s3cret@host", "u:s3cret@host:6379", "redis:u:s3cret@host:1", "rediss:/u:s3cret@host", "redis:///u:s3cret@host",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := ParseRedisURL(raw)
		if err != nil {
			if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("%q: error %q is not one line", raw, msg)
			}
		} else {
			u, perr := url.Parse(raw)
			if perr != nil {
				t.Fatalf("%q accepted, yet it is not a URL: %v", raw, perr)
			}
			for k := range u.Query() {
				if !slices.Contains(redisParams, k) {
					t.Fatalf("%q accepted with the unknown parameter %q", raw, k)
				}
			}
			if u.Scheme != "unix" && (len(r.Option.InitAddress) == 0 || r.Option.InitAddress[0] == "") {
				t.Fatalf("%q accepted without an address", raw)
			}
			again, err := ParseRedisURL(r.URL)
			if err != nil || !reflect.DeepEqual(again.Option.InitAddress, r.Option.InitAddress) || again.Option.SelectDB != r.Option.SelectDB || again.TLS() != r.TLS() {
				t.Fatalf("%q parses again as %+v, %v", raw, again.Option, err)
			}
		}
		pw := ""
		if u, perr := url.Parse(raw); perr == nil && u.User != nil {
			pw, _ = u.User.Password()
		}
		if err != nil && pw == "" {
			// However the URL is malformed, what stands between "://" (or
			// the start) and the last @ could be credentials.
			if at := strings.LastIndex(raw, "@"); at > 0 {
				cred := raw[:at]
				if i := strings.Index(cred, "://"); i >= 0 {
					cred = cred[i+3:]
				}
				if i := strings.LastIndex(cred, ":"); i >= 0 {
					pw = cred[i+1:]
				}
				if strings.Contains(fmt.Sprintf("%q", raw[at:]), pw) {
					pw = "" // the rest, quoted, holds it too: not told apart
				}
			}
		}
		if len(pw) < 4 || strings.Count(raw, pw) != 1 {
			return // not told apart from the rest of the URL
		}
		if err != nil {
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error shows the password: %v", err)
			}
			return
		}
		if strings.Contains(r.Redacted(), pw) || strings.Contains(r.Addr(), pw) {
			t.Fatalf("redacted %q / addr %q shows the password", r.Redacted(), r.Addr())
		}
	})
}

// TestExplainTLSFailures: each way a TLS handshake fails is told apart,
// with what to do, naming the settings to change.
func TestExplainTLSFailures(t *testing.T) {
	r, err := ParseRedisURL("rediss://u:topsecret@cache:6380")
	if err != nil {
		t.Fatal(err)
	}
	cert := &x509.Certificate{DNSNames: []string{"redis.internal"}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "a CA this host does not trust; give that CA's certificate with <RedisCA>"},
		{&tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: cert, Host: "cache"}}, `not for "cache" (it holds redis.internal); connect by a name it holds or set <RedisTLSServerName>`},
		{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: cert, Reason: x509.Expired, Detail: "expired at noon"}}, "has expired or is not valid yet (expired at noon)"},
		{fmt.Errorf("read: %w", tls.AlertError(116)), "requires a client certificate; give one with <RedisCert> and <RedisKey>"},
		{errors.New("remote error: tls: unknown certificate authority"), "refused the client certificate (<RedisCert>)"},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "does not speak TLS; use redis://"},
		{errors.New("WRONGPASS invalid username-password pair or user is disabled."), `authentication refused for user "u"`},
		{errors.New("read tcp 1->2: read: connection reset by peer"), "a server that requires a client certificate does that: give one with <RedisCert> and <RedisKey>"},
	} {
		msg := setting.Render(r.explain(tc.err), flagNames)
		if !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, "redis cache:6380: ") || strings.Contains(msg, "topsecret") {
			t.Errorf("%v:\n got %q\nwant %q after the endpoint", tc.err, msg, tc.want)
		}
	}
}

// TestRedisPasswordFileIsReadAtEachConnection: a rotated password is what
// the next connection logs in with; a file gone since keeps the last one,
// and a pipe the one it gave.
func TestRedisPasswordFileIsReadAtEachConnection(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("first\n"), 0o600)
	r, err := ParseRedis("redis://alice@cache:6379", RedisOptions{PasswordFile: pwFile})
	if err != nil {
		t.Fatal(err)
	}
	creds := func() (rueidis.AuthCredentials, error) {
		return r.Option.AuthCredentialsFn(rueidis.AuthCredentialsContext{})
	}
	if c, err := creds(); err != nil || c.Username != "alice" || c.Password != "first" {
		t.Fatalf("first login: %+v, %v", c, err)
	}
	os.WriteFile(pwFile, []byte("second\n"), 0o600)
	later := time.Now().Add(time.Second)
	os.Chtimes(pwFile, later, later)
	if c, err := creds(); err != nil || c.Password != "second" {
		t.Fatalf("after the rotation: %+v, %v", c, err)
	}
	os.Remove(pwFile)
	if c, err := creds(); err != nil || c.Password != "second" {
		t.Fatalf("with the file gone (midway through a rotation): %+v, %v; want the password last read", c, err)
	}
	// A pipe gives its content once: what it gave is the password.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.WriteString("piped\n")
			w.Close()
		}
	}()
	r, err = ParseRedis("redis://alice@cache:6379", RedisOptions{PasswordFile: fifo})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := creds(); err != nil || c.Password != "piped" {
		t.Fatalf("a password from a pipe: %+v, %v", c, err)
	}
}
