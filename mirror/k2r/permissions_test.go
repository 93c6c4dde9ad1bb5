package k2r_test

import (
	"testing"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/k2r"
)

// TestRedisPermissionsAreTheREADMEsACLRules pins the least-privilege rules
// the README gives to the commands and keys a run sends.
func TestRedisPermissionsAreTheREADMEsACLRules(t *testing.T) {
	cfg := k2r.Defaults()
	cfg.Name, cfg.Topics, cfg.Stream = "orders>orders-{partition}", []string{"orders"}, "orders-{partition}"
	cfg.OnError, cfg.DeadLetterStream = mirror.OnErrorDeadLetter, "orders-dead"
	cmds := k2r.RedisPermissions(cfg)
	testenv.ACLRulesCover(t, "../../README.md", "xmirror-k2r", cmds)
	if got := k2r.DestinationStreams(cfg); len(got) != 1 || got[0] != "orders-0" {
		t.Errorf("destination streams %q, want [orders-0]", got)
	}
}

func TestKafkaPermissionsOfADirection(t *testing.T) {
	cfg := k2r.Defaults()
	cfg.Topics = []string{"a"}
	got := k2r.KafkaPermissions(cfg)
	want := []endpoint.KafkaPermission{
		{Resource: endpoint.KafkaTopic, Name: "a", Operation: endpoint.KafkaDescribe},
		{Resource: endpoint.KafkaTopic, Name: "a", Operation: endpoint.KafkaRead},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
