package r2k_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/r2k"
)

// TestRedisPermissionsAreTheREADMEsACLRules pins the least-privilege rules
// the README gives to the commands and keys a run sends: a command the
// mirror starts to use, or a key it starts to touch, fails this test until
// the README says so.
func TestRedisPermissionsAreTheREADMEsACLRules(t *testing.T) {
	cfg := r2k.Defaults()
	cfg.Name, cfg.Streams = "orders>orders", []string{"orders", "orders-eu"}
	cfg.ClaimIdle, cfg.OnError, cfg.DeadLetterStream = time.Minute, mirror.OnErrorDeadLetter, "orders-dead"
	testenv.ACLRulesCover(t, "../../README.md", "xmirror-r2k", r2k.RedisPermissions(cfg))
}

// TestTrimSourceNeedsXtrimBesidesTheREADMEsRules pins what the README
// says of --trim-source: it needs +xtrim, on the streams, and no other
// rule besides those of the README's line (its script's TYPE, HGET,
// HINCRBY, XINFO GROUPS and XPENDING are granted there already).
func TestTrimSourceNeedsXtrimBesidesTheREADMEsRules(t *testing.T) {
	cfg := r2k.Defaults()
	cfg.Name, cfg.Streams = "orders>orders", []string{"orders", "orders-eu"}
	// As the README's line is pinned (above).
	cfg.ClaimIdle, cfg.OnError, cfg.DeadLetterStream = time.Minute, mirror.OnErrorDeadLetter, "orders-dead"
	rules := map[string]bool{}
	for _, c := range r2k.RedisPermissions(cfg) {
		rules[c.Rule] = true
	}
	cfg.TrimSource = true
	var extra []endpoint.RedisCommand
	for _, c := range r2k.RedisPermissions(cfg) {
		if !rules[c.Rule] {
			extra = append(extra, c)
		}
	}
	if len(extra) != 2 || extra[0].Rule != "xtrim" || extra[0].Key != "orders" || extra[1].Rule != "xtrim" || extra[1].Key != "orders-eu" {
		t.Fatalf("--trim-source adds %+v, want XTRIM on each stream", extra)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "With `--trim-source`, redis-to-kafka also needs `+xtrim`") {
		t.Fatal("the README's least-privilege rules do not say --trim-source needs +xtrim")
	}
}

func TestKafkaPermissionsOfADirection(t *testing.T) {
	cfg := r2k.Defaults()
	cfg.Name, cfg.Streams, cfg.Topic, cfg.CreateTopic = "m", []string{"a", "b"}, "all", true
	got := r2k.KafkaPermissions(cfg)
	want := []endpoint.KafkaPermission{
		{Resource: endpoint.KafkaTopic, Name: "all", Operation: endpoint.KafkaDescribe},
		{Resource: endpoint.KafkaTopic, Name: "all", Operation: endpoint.KafkaWrite},
		{Resource: endpoint.KafkaTopic, Name: "all", Operation: endpoint.KafkaRead},
		{Resource: endpoint.KafkaTopic, Name: "all", Operation: endpoint.KafkaDescribeConfigs},
		{Resource: endpoint.KafkaTopic, Name: "all", Operation: endpoint.KafkaCreate, IfMissing: true},
		{Resource: endpoint.KafkaTransactionalID, Name: "xmirror-r2k:m", Operation: endpoint.KafkaWrite},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}
