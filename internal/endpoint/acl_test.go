package endpoint_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

func TestKafkaPermissionsOfPlainBrokerProbe(t *testing.T) {
	cl := testenv.Kafka(t)
	topic := testenv.Topic(t, cl, 1)
	id := testenv.Name(t, "txn")
	perms := []endpoint.KafkaPermission{
		{Resource: endpoint.KafkaTopic, Name: topic, Operation: endpoint.KafkaDescribe},
		{Resource: endpoint.KafkaTopic, Name: topic, Operation: endpoint.KafkaWrite},
		{Resource: endpoint.KafkaTopic, Name: topic + "-missing", Operation: endpoint.KafkaCreate, IfMissing: true},
		{Resource: endpoint.KafkaTopic, Name: topic + "-missing", Operation: endpoint.KafkaWrite},
		{Resource: endpoint.KafkaCluster, Operation: endpoint.KafkaCreate},
		{Resource: endpoint.KafkaTransactionalID, Name: id, Operation: endpoint.KafkaWrite},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, r := range endpoint.CheckKafkaPermissions(ctx, cl, perms, true, "") {
		t.Logf("%+v", r)
	}
	d, err := kadm.NewClient(cl).DescribeTransactions(ctx, id)
	t.Logf("describe txn: %+v %v", d, err)
}
