package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// xmirrorEnv runs the binary as xmirror does, with env added.
func xmirrorEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := xmirrorCmd(t, args...)
	cmd.Env = append(cmd.Env, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

// tlsStream is a unique stream name the least-privilege users may use
// (tls-*), deleted when the test ends.
func tlsStream(t *testing.T, admin rueidis.Client) string {
	t.Helper()
	s := testenv.Name(t, "tls")
	t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(s).Build()) })
	return s
}

// withUser is url with user (and password, when not empty) in it.
func withUser(t *testing.T, raw, user, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if password == "" {
		u.User = url.User(user)
	} else {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

// secretFree fails the test when any output of r holds a secret.
func secretFree(t *testing.T, r result, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(r.stdout, s) || strings.Contains(r.stderr, s) {
			t.Errorf("the output shows a secret %q\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
		}
	}
}

// TestBothDirectionsThroughTLSAsLeastPrivilegeUsers mirrors a stream to
// Kafka and back through the TLS servers, as the ACL users that hold
// exactly what each direction needs: over TLS with the password from the
// environment, and over mutual TLS with the user in the URL and the
// password in a file. What each side holds is read by clients that share
// no code with xmirror.
func TestBothDirectionsThroughTLSAsLeastPrivilegeUsers(t *testing.T) {
	srv := testenv.TLSRedis(t)
	kc := testenv.Kafka(t)
	for _, tc := range []struct {
		name string
		url  string
		opts func(user string) ([]string, []string) // flags, env
	}{
		{"tls, password from the environment", srv.URL, func(user string) ([]string, []string) {
			return []string{"--redis", srv.URL, "--redis-ca", srv.CA()},
				[]string{"XMIRROR_REDIS_USER=" + user, "XMIRROR_REDIS_PASSWORD=" + srv.Password(t, user)}
		}},
		{"mutual tls, password file", srv.MTLSURL, func(user string) ([]string, []string) {
			return []string{"--redis", withUser(t, srv.MTLSURL, user, ""), "--redis-ca", srv.CA(),
				"--redis-cert", srv.Cert(), "--redis-key", srv.Key(), "--redis-password-file", srv.PasswordFile(user)}, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admin := srv.Admin(t, tc.url)
			stream, back := tlsStream(t, admin), tlsStream(t, admin)
			topic := testenv.Topic(t, kc, 1)
			r2kName, k2rName := testenv.Name(t, "r"), testenv.Name(t, "k")
			t.Cleanup(func() {
				ctx := context.Background()
				admin.Do(ctx, admin.B().Del().Key(checkpoint.R2KKey(r2kName)).Build())
				admin.Do(ctx, admin.B().Del().Key(checkpoint.K2RKey(k2rName, back)).Build())
			})
			const n = 50
			ids := addEntries(t, admin, stream, 0, n, func(i int) []string { return []string{"order", strconv.Itoa(i), "bytes", "\x00\xff" + strconv.Itoa(i)} })

			flags, env := tc.opts(testenv.TLSUserR2K)
			r := xmirrorEnv(t, env, append([]string{"r2k", "--stream", stream, "--topic", topic, "--name", r2kName}, flags...)...)
			if r.code != 0 {
				t.Fatalf("redis-to-kafka: exit %d\nstderr: %s", r.code, r.stderr)
			}
			recs := readTopic(t, topic)
			if len(recs) != n {
				t.Fatalf("topic holds %d records, want %d", len(recs), n)
			}
			for i, rec := range recs {
				want := fmt.Sprintf(`{"order":"%d","bytes":"\u0000`+"\xff"+`%d"}`, i, i)
				if string(rec.Value) != want {
					t.Fatalf("record %d is %q, want %q", i, rec.Value, want)
				}
			}

			flags, env = tc.opts(testenv.TLSUserK2R)
			r = xmirrorEnv(t, env, append([]string{"k2r", "--topic", topic, "--stream", back, "--name", k2rName, "--preserve-ids"}, flags...)...)
			if r.code != 0 {
				t.Fatalf("kafka-to-redis: exit %d\nstderr: %s", r.code, r.stderr)
			}
			got, err := admin.Do(context.Background(), admin.B().Xrange().Key(back).Start("-").End("+").Build()).AsXRange()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("%s holds %d entries, want %d", back, len(got), n)
			}
			for i, e := range got {
				if e.ID != ids[i] || e.FieldValues["order"] != strconv.Itoa(i) || e.FieldValues["bytes"] != "\x00\xff"+strconv.Itoa(i) {
					t.Fatalf("entry %d is %s %v, want %s with order %d", i, e.ID, e.FieldValues, ids[i], i)
				}
			}
		})
	}
}

// TestRedisTLSAndAuthFailuresAreOneLine: each way a secured connection
// fails ends with one line naming the endpoint and what to do, within
// seconds, and shows no secret.
func TestRedisTLSAndAuthFailuresAreOneLine(t *testing.T) {
	srv := testenv.TLSRedis(t)
	testenv.Redis(t)
	plain, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	tlsHost := hostOf(t, srv.URL)
	mtlsHost := hostOf(t, srv.MTLSURL)
	pw := srv.Password(t, testenv.TLSUserR2K)
	wrong := "wrong-" + pw[:8] + "-secret"
	user := []string{"XMIRROR_REDIS_USER=" + testenv.TLSUserR2K, "XMIRROR_REDIS_PASSWORD=" + pw}
	cases := []struct {
		name  string
		args  []string
		env   []string
		code  int
		wants []string
	}{
		{"wrong password", []string{"--redis", srv.URL, "--redis-ca", srv.CA()},
			[]string{"XMIRROR_REDIS_USER=" + testenv.TLSUserR2K, "XMIRROR_REDIS_PASSWORD=" + wrong}, 1,
			[]string{"redis " + tlsHost, `authentication refused for user "xmirror-r2k"`, "--redis-password-file"}},
		{"wrong password in the url", []string{"--redis", withUser(t, srv.URL, testenv.TLSUserR2K, wrong), "--redis-ca", srv.CA()}, nil, 1,
			[]string{"redis " + tlsHost, "authentication refused", "can be seen by other users"}},
		{"tls spoken to a plain server", []string{"--redis", "rediss://" + plain.Host + "/0?dial_timeout=1s", "--redis-ca", srv.CA()}, user, 1,
			[]string{"redis " + plain.Host, "does not speak TLS", "use redis://"}},
		{"plain spoken to a tls server", []string{"--redis", strings.Replace(srv.URL, "rediss://", "redis://", 1)}, user, 1,
			[]string{"redis " + tlsHost, "expect TLS (use rediss://)"}},
		{"unknown ca", []string{"--redis", srv.URL}, user, 1,
			[]string{"redis " + tlsHost, "a CA this host does not trust", "--redis-ca"}},
		{"wrong host name", []string{"--redis", srv.URL, "--redis-ca", srv.CA(), "--redis-tls-server-name", "wrong.example"}, user, 1,
			[]string{"redis " + tlsHost, `not for "wrong.example"`, "--redis-tls-server-name"}},
		{"missing client certificate", []string{"--redis", srv.MTLSURL, "--redis-ca", srv.CA()}, user, 1,
			[]string{"redis " + mtlsHost, "client certificate", "--redis-cert and --redis-key"}},
		{"tls settings with a plain url", []string{"--redis", testenv.RedisURL(), "--redis-ca", srv.CA()}, user, 2,
			[]string{"--redis-ca applies only to TLS"}},
		{"password given twice", []string{"--redis", withUser(t, srv.URL, testenv.TLSUserR2K, wrong), "--redis-password-file", srv.PasswordFile(testenv.TLSUserR2K)}, nil, 2,
			[]string{"the password is given twice"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, command := range [][]string{
				{"check", "--timeout", "5s", "-o", "json"},
				{"r2k", "--stream", "tls-none", "-v", "-o", "json"},
				{"k2r", "--topic", "none", "--stream", "tls-none", "-v", "-o", "json"},
			} {
				r := xmirrorEnv(t, tc.env, append(command, tc.args...)...)
				if r.code != tc.code {
					t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", command[0], r.code, tc.code, r.stdout, r.stderr)
				}
				oneErrorLine(t, command[0], r)
				for _, w := range tc.wants {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("%s: stderr lacks %q\nstderr: %s", command[0], w, r.stderr)
					}
				}
				secretFree(t, r, pw, wrong)
			}
		})
	}
}

// oneErrorLine is the one error line of r (check's closing count
// aside), failing the test when there are more or none.
func oneErrorLine(t *testing.T, command string, r result) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if strings.HasPrefix(l, "xmirror: ") && !strings.HasPrefix(l, "xmirror: check failed") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%s: %d error lines, want 1\nstderr: %s", command, len(lines), r.stderr)
	}
	return lines[0]
}

func hostOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestRedisPasswordNeverShown runs every command with the password in
// the URL, in the environment and in a file, at -v and with -o json, on
// success and on failure, and finds it in no output.
func TestRedisPasswordNeverShown(t *testing.T) {
	srv := testenv.TLSRedis(t)
	kc := testenv.Kafka(t)
	admin := srv.Admin(t, srv.URL)
	stream, back := tlsStream(t, admin), tlsStream(t, admin)
	topic := testenv.Topic(t, kc, 1)
	addEntries(t, admin, stream, 0, 5, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	r2kPw, k2rPw := srv.Password(t, testenv.TLSUserR2K), srv.Password(t, testenv.TLSUserK2R)
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(k2rPw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r2kName, k2rName := testenv.Name(t, "r"), testenv.Name(t, "k")
	t.Cleanup(func() {
		ctx := context.Background()
		admin.Do(ctx, admin.B().Del().Key(checkpoint.R2KKey(r2kName)).Build())
		admin.Do(ctx, admin.B().Del().Key(checkpoint.K2RKey(k2rName, back)).Build())
	})
	ca := []string{"--redis-ca", srv.CA()}
	runs := []struct {
		args []string
		env  []string
		code int
	}{
		{append([]string{"check", "-v", "-o", "json", "--redis", withUser(t, srv.URL, testenv.TLSUserR2K, r2kPw)}, ca...), nil, 0},
		{append([]string{"r2k", "-v", "-o", "json", "--stream", stream, "--topic", topic, "--name", r2kName, "--redis", withUser(t, srv.URL, testenv.TLSUserR2K, r2kPw)}, ca...), nil, 0},
		{append([]string{"k2r", "-v", "-o", "json", "--topic", topic, "--stream", back, "--name", k2rName, "--redis", srv.URL, "--redis-password-file", pwFile}, ca...),
			[]string{"XMIRROR_REDIS_USER=" + testenv.TLSUserK2R}, 0},
		{append([]string{"check", "-v", "-o", "json"}, ca...),
			[]string{"XMIRROR_REDIS=" + srv.URL, "XMIRROR_REDIS_USER=" + testenv.TLSUserR2K, "XMIRROR_REDIS_PASSWORD=" + r2kPw}, 0},
		// Failures: the r2k user may not write k2r's checkpoint, the k2r
		// user not read r2k's group; a password for another user.
		{append([]string{"k2r", "-v", "-o", "json", "--topic", topic, "--stream", back + "-x", "--redis", withUser(t, srv.URL, testenv.TLSUserR2K, r2kPw)}, ca...), nil, 1},
		{append([]string{"r2k", "-v", "-o", "json", "--stream", stream, "--topic", topic, "--redis", withUser(t, srv.URL, testenv.TLSUserK2R, r2kPw)}, ca...), nil, 1},
	}
	for _, run := range runs {
		r := xmirrorEnv(t, run.env, run.args...)
		if r.code != run.code {
			t.Fatalf("xmirror %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(run.args[:1], " "), r.code, run.code, r.stdout, r.stderr)
		}
		if run.args[0] != "check" && run.code == 0 {
			var s struct{ Entries int64 }
			if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Entries != 5 {
				t.Fatalf("%s: summary %q (%v), want 5 entries", run.args[0], r.stdout, err)
			}
		}
		secretFree(t, r, r2kPw, k2rPw)
	}
}

// TestRedisToKafkaWithoutXACKFailsNamingItAndLosesNothing: the user that
// lacks one permission of redis-to-kafka's (XACK) stops with one line
// naming it, acknowledges nothing, and a rerun as the user that has it
// mirrors every entry exactly once.
func TestRedisToKafkaWithoutXACKFailsNamingItAndLosesNothing(t *testing.T) {
	srv := testenv.TLSRedis(t)
	kc := testenv.Kafka(t)
	admin := srv.Admin(t, srv.URL)
	stream := tlsStream(t, admin)
	topic := testenv.Topic(t, kc, 1)
	name := testenv.Name(t, "r")
	t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
	const n = 20
	addEntries(t, admin, stream, 0, n, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	args := []string{"r2k", "--stream", stream, "--topic", topic, "--name", name, "--redis", srv.URL, "--redis-ca", srv.CA()}
	as := func(user string) []string {
		return []string{"XMIRROR_REDIS_USER=" + user, "XMIRROR_REDIS_PASSWORD_FILE=" + srv.PasswordFile(user)}
	}

	r := xmirrorEnv(t, as(testenv.TLSNoXack), args...)
	if r.code != 1 || !strings.Contains(r.stderr, "'xack' command") || !strings.Contains(r.stderr, "nothing was acknowledged") {
		t.Fatalf("exit %d, want 1 naming XACK\nstderr: %s", r.code, r.stderr)
	}
	pending, err := admin.Do(context.Background(), admin.B().Xpending().Key(stream).Group("xmirror:"+name).Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	if count, _ := pending[0].AsInt64(); count != n {
		t.Fatalf("%d entries pending after the refused run, want all %d", count, n)
	}

	r = xmirrorEnv(t, as(testenv.TLSUserR2K), args...)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\nstderr: %s", r.code, r.stderr)
	}
	recs := readTopic(t, topic)
	if len(recs) != n {
		t.Fatalf("topic holds %d records, want %d", len(recs), n)
	}
	for i, rec := range recs {
		if want := fmt.Sprintf(`{"value":"%d"}`, i); string(rec.Value) != want {
			t.Fatalf("record %d is %s, want %s", i, rec.Value, want)
		}
	}
}

// TestCheckReportsTLSAndUser: check says whether the connection is TLS,
// whether the certificate was verified and for which name, whether a
// client certificate was sent, and which user logged in.
func TestCheckReportsTLSAndUser(t *testing.T) {
	srv := testenv.TLSRedis(t)
	testenv.Kafka(t)
	env := []string{"XMIRROR_REDIS_USER=" + testenv.TLSUserR2K, "XMIRROR_REDIS_PASSWORD_FILE=" + srv.PasswordFile(testenv.TLSUserR2K)}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis", srv.MTLSURL, "--redis-ca", srv.CA(), "--redis-cert", srv.Cert(), "--redis-key", srv.Key()},
			"TLS 1.3, certificate verified for 127.0.0.1, client certificate sent; user xmirror-r2k, authenticated"},
		{[]string{"--redis", srv.URL, "--redis-tls-insecure", "--redis-tls-server-name", "localhost"},
			"TLS 1.3, certificate not verified for localhost; user xmirror-r2k, authenticated"},
	} {
		r := xmirrorEnv(t, env, append([]string{"check"}, tc.args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, tc.want) {
			t.Errorf("exit %d, want 0 and %q\nstdout: %s\nstderr: %s", r.code, tc.want, r.stdout, r.stderr)
		}
	}
}

// TestBothDirectionsFollowThroughMutualTLS: follow runs of both
// directions, as the least-privilege users over mutual TLS, mirror what is
// added while they run (their blocking reads go over TLS too) and stop
// cleanly on SIGTERM.
func TestBothDirectionsFollowThroughMutualTLS(t *testing.T) {
	srv := testenv.TLSRedis(t)
	kc := testenv.Kafka(t)
	admin := srv.Admin(t, srv.MTLSURL)
	stream, back := tlsStream(t, admin), tlsStream(t, admin)
	topic := testenv.Topic(t, kc, 1)
	r2kName, k2rName := testenv.Name(t, "r"), testenv.Name(t, "k")
	t.Cleanup(func() {
		ctx := context.Background()
		admin.Do(ctx, admin.B().Del().Key(checkpoint.R2KKey(r2kName)).Build())
		admin.Do(ctx, admin.B().Del().Key(checkpoint.K2RKey(k2rName, back)).Build())
	})
	start := func(user string, args ...string) *started {
		cmd := xmirrorCmd(t, append(args, "--follow", "--redis", srv.MTLSURL, "--redis-ca", srv.CA(), "--redis-cert", srv.Cert(), "--redis-key", srv.Key())...)
		cmd.Env = append(cmd.Env, "XMIRROR_REDIS_USER="+user, "XMIRROR_REDIS_PASSWORD_FILE="+srv.PasswordFile(user))
		return startXmirrorCmd(t, cmd)
	}
	r2k := start(testenv.TLSUserR2K, "r2k", "--stream", stream, "--topic", topic, "--name", r2kName)
	k2r := start(testenv.TLSUserK2R, "k2r", "--topic", topic, "--stream", back, "--name", k2rName)
	const n = 30
	addEntries(t, admin, stream, 0, n, func(i int) []string { return []string{"value", strconv.Itoa(i)} })
	testenv.Wait(t, 60*time.Second, "the entries back in "+back, func() bool {
		got, err := admin.Do(context.Background(), admin.B().Xlen().Key(back).Build()).AsInt64()
		return err == nil && got == n
	})
	for _, s := range []*started{r2k, k2r} {
		if code, _ := s.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM, want 0\nstderr: %s", code, s.stderr.String())
		}
	}
	got, err := admin.Do(context.Background(), admin.B().Xrange().Key(back).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if e.FieldValues["value"] != strconv.Itoa(i) {
			t.Fatalf("entry %d is %v, want value %d", i, e.FieldValues, i)
		}
	}
	if recs := readTopic(t, topic); len(recs) != n {
		t.Fatalf("topic holds %d records, want %d", len(recs), n)
	}
}
