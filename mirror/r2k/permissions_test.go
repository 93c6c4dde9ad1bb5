package r2k_test

import (
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
