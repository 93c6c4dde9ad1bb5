package endpoint_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// probeCommands write to keys that exist, so a run of any would show.
func probeCommands(key, stream string) []endpoint.RedisCommand {
	return []endpoint.RedisCommand{
		{Rule: "ping", Args: []string{"PING"}},
		{Rule: "multi", Args: []string{"MULTI"}},
		{Rule: "exec", Args: []string{"EXEC"}},
		{Rule: "watch", Args: []string{"WATCH", key}, Key: key, What: "key"},
		{Rule: "set", Args: []string{"SET", key, "changed"}, Key: key, What: "key"},
		{Rule: "xadd", Args: []string{"XADD", stream, "*", "f", "v"}, Key: stream, What: "stream"},
		{Rule: "xack", Args: []string{"XACK", stream, "g", "0-1"}, Key: stream, What: "stream"},
		{Rule: "del", Args: []string{"DEL", stream}, Key: stream, What: "stream"},
		{Rule: "get", Args: []string{"GET", "other-" + key}, Key: "other-" + key, What: "key"},
	}
}

// untouched fails the test unless key still holds "before" and stream its
// one entry: nothing a check queued ran.
func untouched(t *testing.T, admin rueidis.Client, key, stream string) {
	t.Helper()
	ctx := context.Background()
	if v, err := admin.Do(ctx, admin.B().Get().Key(key).Build()).ToString(); err != nil || v != "before" {
		t.Errorf("%s = %q (%v) after the check, want \"before\": a queued command ran", key, v, err)
	}
	if n, err := admin.Do(ctx, admin.B().Xlen().Key(stream).Build()).AsInt64(); err != nil || n != 1 {
		t.Errorf("XLEN %s = %d (%v) after the check, want 1: a queued command ran", stream, n, err)
	}
}

func setUpKeys(t *testing.T, admin rueidis.Client) (key, stream string) {
	t.Helper()
	ctx := context.Background()
	key, stream = testenv.Name(t, "k"), testenv.Stream(t, admin)
	t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(key).Build()) })
	if err := admin.Do(ctx, admin.B().Set().Key(key).Value("before").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, admin.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("f", "v").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	return key, stream
}

// TestRedisPermissionCheckRunsNothing: a user that may not run ACL
// DRYRUN is checked in a transaction that is discarded: each command is
// told allowed or refused (a command, or a key), and none of them ran,
// neither when all are allowed nor when MULTI or EXEC is refused.
func TestRedisPermissionCheckRunsNothing(t *testing.T) {
	admin := testenv.Redis(t)
	key, stream := setUpKeys(t, admin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cases := []struct {
		name   string
		rules  []string
		denied map[string]bool // rule -> key denied
		multi  bool            // MULTI refused: nothing but it can be told
	}{
		{"all allowed", []string{"-acl"}, map[string]bool{}, false},
		{"no xack, no other key", []string{"-acl", "-xack", "resetkeys", "~" + key, "~" + stream}, map[string]bool{"xack": false, "get": true}, false},
		{"no exec", []string{"-acl", "-exec"}, map[string]bool{"exec": false}, false},
		{"no multi", []string{"-acl", "-multi"}, map[string]bool{"multi": false}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := testenv.Name(t, "u")
			c := testenv.RedisUser(t, admin, user, tc.rules...)
			got, probe, err := endpoint.CheckRedisPermissions(ctx, c, user, probeCommands(key, stream))
			if err != nil {
				t.Fatal(err)
			}
			if probe != endpoint.ProbeMulti {
				t.Errorf("asked by %s, want %s", probe, endpoint.ProbeMulti)
			}
			for _, p := range got {
				keyDenied, denied := tc.denied[p.Command.Rule]
				switch {
				case tc.multi && p.Command.Rule != "multi":
					if p.Unchecked == "" {
						t.Errorf("%s: %+v, want not checked without MULTI", p.Command.Name(), p)
					}
				case denied:
					if p.OK || p.KeyDenied != keyDenied || p.Unchecked != "" {
						t.Errorf("%s: %+v, want refused (key refused: %v)", p.Command.Name(), p, keyDenied)
					}
				case !p.OK:
					t.Errorf("%s: %+v, want allowed", p.Command.Name(), p)
				}
			}
			untouched(t, admin, key, stream)
			if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
				t.Errorf("the client is unusable after the check: %v", err)
			}
		})
	}
}

// TestRedisPermissionCheckByDryRun: a user that may run ACL DRYRUN asks
// it, for itself or another user, and it tells a refused command from a
// refused key.
func TestRedisPermissionCheckByDryRun(t *testing.T) {
	admin := testenv.Redis(t)
	key, stream := setUpKeys(t, admin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	user := testenv.Name(t, "u")
	testenv.RedisUser(t, admin, user, "-xack", "resetkeys", "~"+key, "~"+stream)
	got, probe, err := endpoint.CheckRedisPermissions(ctx, admin, user, probeCommands(key, stream))
	if err != nil {
		t.Fatal(err)
	}
	if probe != endpoint.ProbeDryRun {
		t.Errorf("asked by %s, want %s", probe, endpoint.ProbeDryRun)
	}
	for _, p := range got {
		switch p.Command.Rule {
		case "xack":
			if p.OK || p.KeyDenied {
				t.Errorf("XACK: %+v, want the command refused", p)
			}
		case "get":
			if p.OK || !p.KeyDenied {
				t.Errorf("GET: %+v, want the key refused", p)
			}
		default:
			if !p.OK {
				t.Errorf("%s: %+v, want allowed", p.Command.Name(), p)
			}
		}
	}
	untouched(t, admin, key, stream)
}

func TestAllowedByOperations(t *testing.T) {
	bit := func(ops ...int) int32 {
		var b int32
		for _, o := range ops {
			b |= 1 << o
		}
		return b
	}
	cases := []struct {
		bits        int32
		op          string
		allowed, ok bool
	}{
		{math.MinInt32, endpoint.KafkaWrite, false, false}, // not reported
		{bit(3, 8), endpoint.KafkaRead, true, true},
		{bit(3, 8), endpoint.KafkaWrite, false, true},
		{bit(8), endpoint.KafkaDescribe, true, true},
		{0, endpoint.KafkaDescribe, false, true},
		{bit(2), endpoint.KafkaCreate, true, true},                        // All
		{bit(3, 4, 5, 6, 7, 8, 10, 11), endpoint.KafkaCreate, true, true}, // a broker without authorizer: every operation of a topic
		{bit(4), "Frobnicate", false, false},
	}
	for _, tc := range cases {
		allowed, ok := endpoint.AllowedByOperations(tc.bits, tc.op)
		if allowed != tc.allowed || ok != tc.ok {
			t.Errorf("AllowedByOperations(%b, %s) = %v, %v; want %v, %v", tc.bits, tc.op, allowed, ok, tc.allowed, tc.ok)
		}
	}
}

// TestKafkaPermissionCheckOfABrokerWithoutAuthorizer: a broker without an
// authorizer reports every operation allowed; a missing topic's Create is
// validated, not done; the transactional ID's probe leaves no trace of
// the ID (no producer fenced, no transaction begun).
func TestKafkaPermissionCheckOfABrokerWithoutAuthorizer(t *testing.T) {
	cl := testenv.Kafka(t)
	topic := testenv.Topic(t, cl, 1)
	missing := topic + "-missing"
	id := testenv.Name(t, "txn")
	perms := []endpoint.KafkaPermission{
		{Resource: endpoint.KafkaTopic, Name: topic, Operation: endpoint.KafkaDescribe},
		{Resource: endpoint.KafkaTopic, Name: topic, Operation: endpoint.KafkaWrite},
		{Resource: endpoint.KafkaTopic, Name: topic, Operation: endpoint.KafkaRead},
		{Resource: endpoint.KafkaTopic, Name: topic, Operation: endpoint.KafkaCreate, IfMissing: true},
		{Resource: endpoint.KafkaTopic, Name: missing, Operation: endpoint.KafkaCreate, IfMissing: true},
		{Resource: endpoint.KafkaTopic, Name: missing, Operation: endpoint.KafkaWrite},
		{Resource: endpoint.KafkaCluster, Operation: endpoint.KafkaCreate},
		{Resource: endpoint.KafkaTransactionalID, Name: id, Operation: endpoint.KafkaWrite},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, r := range endpoint.CheckKafkaPermissions(ctx, cl, perms, true, "") {
		want := !(r.Name == missing && r.Operation == endpoint.KafkaWrite)
		if r.OK != want || (r.Unchecked != "") == want {
			t.Errorf("%+v: want ok %v", r, want)
		}
	}
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopics(ctx, missing)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := topics[missing]; ok && d.Err == nil {
		t.Errorf("topic %s was created by a check", missing)
	}
	txns, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d := txns[id]; !errors.Is(d.Err, kerr.TransactionalIDNotFound) {
		t.Errorf("transactional ID %s after the check: %+v, want none", id, d)
	}
	got := endpoint.CheckKafkaPermissions(ctx, cl, perms[7:], false, "the mirror is running")
	if got[0].OK || got[0].Unchecked != "not checked: the mirror is running" {
		t.Errorf("not probed: %+v", got[0])
	}
}
