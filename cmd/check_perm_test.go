package cmd_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// checkAs runs check as user of the TLS Redis with args.
func checkAs(t *testing.T, srv testenv.RedisTLS, user string, args ...string) result {
	t.Helper()
	env := []string{"XMIRROR_REDIS_USER=" + user, "XMIRROR_REDIS_PASSWORD_FILE=" + srv.PasswordFile(user)}
	begin := time.Now()
	r := xmirrorEnv(t, env, append([]string{"check", "--redis", srv.URL, "--redis-ca", srv.CA(), "--timeout", "10s"}, args...)...)
	if took := time.Since(begin); took > 12*time.Second {
		t.Errorf("check took %s, beyond its --timeout", took)
	}
	return r
}

// missingLines are the lines of r naming a missing permission.
func missingLines(r result) []string {
	var out []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.Contains(l, " may not ") {
			out = append(out, l)
		}
	}
	return out
}

// TestCheckForADirectionTellsEachMissingPermission: check --for, as each
// least-privilege user of the TLS Redis, finds all it needs granted (exit
// 0); the user without XACK gets one line naming XACK on the stream and
// what to grant (exit 1); the redis-to-kafka user checked for
// kafka-to-redis gets a line per command it lacks.
func TestCheckForADirectionTellsEachMissingPermission(t *testing.T) {
	srv := testenv.TLSRedis(t)
	cl := testenv.Kafka(t)
	admin := srv.Admin(t, srv.URL)
	stream := tlsStream(t, admin)
	topic := testenv.Topic(t, cl, 1)
	r2kArgs := []string{"--for", "redis-to-kafka", "--stream", stream, "--create-topic", "--claim-idle", "1m"}
	k2rArgs := []string{"--for", "kafka-to-redis", "--topic", topic, "--stream", stream}

	r := checkAs(t, srv, testenv.TLSUserR2K, r2kArgs...)
	if r.code != 0 || !strings.Contains(r.stdout, "permissions of user xmirror-r2k asked (MULTI, discarded): all granted") {
		t.Errorf("as %s: exit %d, want 0 and all granted\nstdout: %s\nstderr: %s", testenv.TLSUserR2K, r.code, r.stdout, r.stderr)
	}
	r = checkAs(t, srv, testenv.TLSNoXack, r2kArgs...)
	want := "xmirror: redis " + hostOf(t, srv.URL) + ": user xmirror-r2k-noxack may not run XACK on stream " + stream + ": grant it (ACL SETUSER xmirror-r2k-noxack +xack ~" + stream + ")"
	if lines := missingLines(r); r.code != 1 || len(lines) != 1 || lines[0] != want {
		t.Errorf("as %s: exit %d, lines %q; want 1 and only %q\nstdout: %s", testenv.TLSNoXack, r.code, lines, want, r.stdout)
	}
	r = checkAs(t, srv, testenv.TLSUserK2R, k2rArgs...)
	if r.code != 0 || !strings.Contains(r.stdout, "permissions of user xmirror-k2r asked (MULTI, discarded): all granted") {
		t.Errorf("as %s: exit %d, want 0 and all granted\nstdout: %s\nstderr: %s", testenv.TLSUserK2R, r.code, r.stdout, r.stderr)
	}
	r = checkAs(t, srv, testenv.TLSUserR2K, k2rArgs...)
	lines := missingLines(r)
	if r.code != 1 || !strings.Contains(r.stderr, "may not run XRANGE on stream "+stream+": grant it (ACL SETUSER xmirror-r2k +xrange ~"+stream+")") {
		t.Errorf("as %s for kafka-to-redis: exit %d, want 1 and XRANGE named\nstderr: %s", testenv.TLSUserR2K, r.code, r.stderr)
	}
	for _, l := range lines {
		if !strings.Contains(l, "grant it (ACL SETUSER xmirror-r2k ") {
			t.Errorf("line without what to grant: %s", l)
		}
	}
	n, err := admin.Do(context.Background(), admin.B().Exists().Key(stream).Build()).AsInt64()
	if err != nil || n != 0 {
		t.Errorf("the check created stream %s (%d, %v)", stream, n, err)
	}
}

// TestCheckForARunningMirrorLeavesItsTransactionalIDAlone: while the
// mirror's lease is held, its transactional ID is not probed, and the
// report says so; -o json carries each side's permissions.
func TestCheckForARunningMirrorLeavesItsTransactionalIDAlone(t *testing.T) {
	srv := testenv.TLSRedis(t)
	testenv.Kafka(t)
	admin := srv.Admin(t, srv.URL)
	stream := tlsStream(t, admin)
	name := testenv.Name(t, "m")
	lease := checkpoint.LeaseKey(checkpoint.KindRedisToKafka, name)
	ctx := context.Background()
	if err := admin.Do(ctx, admin.B().Set().Key(lease).Value("someone").Px(time.Minute).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(lease).Build()) })
	args := []string{"--for", "redis-to-kafka", "--stream", stream, "--create-topic", "--name", name}
	r := checkAs(t, srv, testenv.TLSUserR2K, args...)
	if r.code != 0 || !strings.Contains(r.stdout, "Write on transactional-id xmirror-r2k:"+name+": not checked: the mirror is running") {
		t.Errorf("exit %d, want 0 and the transactional ID not checked\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = checkAs(t, srv, testenv.TLSNoXack, append(args, "-o", "json")...)
	var rep struct {
		For, Mirror string
		Redis       struct {
			TLSVersion  string `json:"tls_version"`
			Permissions []struct {
				Name, Grant, Note string
				OK                bool
			}
		}
		Kafka struct {
			Permissions []struct{ Name, Note string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if r.code != 1 || rep.For != "redis-to-kafka" || rep.Mirror != name || rep.Redis.TLSVersion != "TLS 1.3" {
		t.Errorf("exit %d, report %+v", r.code, rep)
	}
	var refused []string
	for _, p := range rep.Redis.Permissions {
		if !p.OK {
			refused = append(refused, p.Name+" / "+p.Grant)
		}
	}
	if len(refused) != 1 || refused[0] != "XACK on stream "+stream+" / ACL SETUSER xmirror-r2k-noxack +xack ~"+stream {
		t.Errorf("refused %q, want only XACK", refused)
	}
	if len(rep.Kafka.Permissions) == 0 {
		t.Errorf("no Kafka permissions in the report")
	}
}

func TestCheckForFlagsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--stream", "s"}, "--stream needs --for"},
		{[]string{"--for", "sideways"}, "--for must be redis-to-kafka or kafka-to-redis"},
		{[]string{"--for", "redis-to-kafka"}, "--stream is required"},
		{[]string{"--for", "kafka-to-redis", "--topic", "t", "--group", "g"}, "--group is for --for redis-to-kafka"},
		{[]string{"--for", "redis-to-kafka", "--stream", "s", "--topic", "a", "--topic", "b"}, "takes one --topic"},
		{[]string{"--for", "redis-to-kafka", "--stream", "s", "--topic", "{nope}"}, "--topic"},
		{[]string{"--for", "kafka-to-redis", "--topic", "t", "--stream", "{nope}"}, "--stream"},
		{[]string{"--for", "redis-to-kafka", "--stream", "s", "--claim-idle", "-1s"}, "--claim-idle must not be negative"},
	} {
		r := xmirror(t, append([]string{"check"}, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("check %q: exit %d, want 2 and %q\nstderr: %s", tc.args, r.code, tc.want, r.stderr)
		}
	}
}
