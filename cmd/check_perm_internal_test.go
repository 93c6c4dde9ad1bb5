package cmd

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
	"github.com/xmirror/xmirror/mirror/r2k"
)

// TestKafkaPermissionLinesFromAuthorizedOperations: the authorized
// operations a broker reports for a topic become one line per operation
// the mirror needs and lacks, each with the kafka-acls.sh command that
// grants it; a broker that reports none is not taken for a refusal.
func TestKafkaPermissionLinesFromAuthorizedOperations(t *testing.T) {
	ep, err := endpoint.ParseBrokers("kafka1:9092")
	if err != nil {
		t.Fatal(err)
	}
	cfg := r2k.Defaults()
	cfg.Name, cfg.Streams, cfg.Topic = "m", []string{"orders"}, "orders"
	cf := &checkFor{direction: forRedisToKafka, name: cfg.Name, kafka: r2k.KafkaPermissions(cfg)}
	const describe, read, write, describeConfigs = 1 << 8, 1 << 3, 1 << 4, 1 << 10
	cases := []struct {
		name      string
		bits      int32
		principal string
		want      []string
	}{
		{"all", describe | read | write | describeConfigs, "", nil},
		{"describe only", describe | describeConfigs, "", []string{
			"kafka kafka1:9092: the client's principal may not Write on topic orders: grant it (kafka-acls.sh --bootstrap-server kafka1:9092 --add --allow-principal 'User:<principal>' --operation Write --topic orders)",
			"kafka kafka1:9092: the client's principal may not Read on topic orders: grant it (kafka-acls.sh --bootstrap-server kafka1:9092 --add --allow-principal 'User:<principal>' --operation Read --topic orders)",
		}},
		{"no read, a known user", describe | write | describeConfigs, "mirror", []string{
			"kafka kafka1:9092: principal User:mirror may not Read on topic orders: grant it (kafka-acls.sh --bootstrap-server kafka1:9092 --add --allow-principal User:mirror --operation Read --topic orders)",
		}},
		{"not reported", -1 << 31, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var results []endpoint.KafkaPermissionResult
			for _, p := range cf.kafka {
				if p.Resource == endpoint.KafkaTopic {
					results = append(results, endpoint.ResultFromOperations(p, tc.bits))
				} else {
					results = append(results, endpoint.KafkaPermissionResult{KafkaPermission: p, OK: true})
				}
			}
			got, perms, _ := kafkaPermissionLines(ep, cf, tc.principal, results)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if len(perms) != len(cf.kafka) {
				t.Errorf("%d permissions reported, want %d", len(perms), len(cf.kafka))
			}
			for _, p := range perms {
				if tc.bits == -1<<31 && p.Name != "Write on transactional-id xmirror-r2k:m" && p.Note == "" {
					t.Errorf("%+v: want not checked", p)
				}
			}
		})
	}
	// The transactional ID refused.
	results := []endpoint.KafkaPermissionResult{{KafkaPermission: endpoint.KafkaPermission{Resource: endpoint.KafkaTransactionalID, Name: "xmirror-r2k:a>b", Operation: endpoint.KafkaWrite}}}
	got, _, _ := kafkaPermissionLines(ep, cf, "", results)
	want := "kafka kafka1:9092: the client's principal may not Write on transactional-id xmirror-r2k:a>b: grant it (kafka-acls.sh --bootstrap-server kafka1:9092 --add --allow-principal 'User:<principal>' --operation Write --transactional-id 'xmirror-r2k:a>b')"
	if len(got) != 1 || got[0] != want {
		t.Errorf("lines %q, want %q", got, want)
	}
}

// TestCheckForInProcess runs check --for inside the test's process (so
// -race sees both sides at once) against the local servers, as their
// default user, which may run ACL DRYRUN.
func TestCheckForInProcess(t *testing.T) {
	testenv.Redis(t)
	testenv.Kafka(t)
	env := map[string]string{"XMIRROR_REDIS": testenv.RedisURL(), "XMIRROR_BROKERS": testenv.Brokers()}
	stream := testenv.Name(t, "s")
	var stdout, stderr bytes.Buffer
	code := Execute(context.Background(), Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }},
		[]string{"check", "--for", "redis-to-kafka", "--stream", stream, "--create-topic", "--claim-idle", "1m"})
	if code != 0 || !strings.Contains(stdout.String(), "asked (ACL DRYRUN): all granted") {
		t.Errorf("exit %d, want 0 and all granted by ACL DRYRUN\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
}
