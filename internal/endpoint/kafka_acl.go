package endpoint

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka resources and operations a mirror needs, as Kafka's ACLs name them.
const (
	KafkaTopic           = "topic"
	KafkaCluster         = "cluster"
	KafkaTransactionalID = "transactional-id"

	KafkaDescribe = "Describe"
	KafkaRead     = "Read"
	KafkaWrite    = "Write"
	KafkaCreate   = "Create"
	// KafkaDescribeConfigs: redis-to-kafka reads its topics' limits and
	// timestamp settings.
	KafkaDescribeConfigs = "DescribeConfigs"
)

// kafkaOperations are the operations a KafkaPermission may name, with
// their codes in an authorized-operations bitfield (KIP-430: bit n set is
// operation n allowed).
var kafkaOperations = map[string]kmsg.ACLOperation{
	KafkaDescribe:        kmsg.ACLOperationDescribe,
	KafkaRead:            kmsg.ACLOperationRead,
	KafkaWrite:           kmsg.ACLOperationWrite,
	KafkaCreate:          kmsg.ACLOperationCreate,
	KafkaDescribeConfigs: kmsg.ACLOperationDescribeConfigs,
}

// A KafkaPermission is one operation a mirror needs on one resource.
type KafkaPermission struct {
	Resource  string // KafkaTopic, KafkaCluster or KafkaTransactionalID
	Name      string // the topic or transactional ID; "" for the cluster
	Operation string // KafkaDescribe, KafkaRead, KafkaWrite or KafkaCreate
	// IfMissing: needed only while the topic does not exist (Create).
	IfMissing bool
}

// KafkaPermissionResult is whether the client may do one KafkaPermission.
type KafkaPermissionResult struct {
	KafkaPermission
	OK bool
	// Unchecked, when not "", says why Kafka could not tell.
	Unchecked string
}

// notReported is the authorized-operations value of a broker that was
// not asked or does not tell (INT32_MIN, KIP-430).
const notReported = math.MinInt32

// AllowedByOperations says whether an authorized-operations bitfield
// allows op: told is false when the broker reported none.
func AllowedByOperations(bits int32, op string) (allowed, told bool) {
	if bits == notReported {
		return false, false
	}
	code, ok := kafkaOperations[op]
	if !ok {
		return false, false
	}
	if bits&(1<<uint(kmsg.ACLOperationAll)) != 0 {
		return true, true
	}
	return bits&(1<<uint(code)) != 0, true
}

// ResultFromOperations is whether the authorized operations bits of p's
// resource allow p.
func ResultFromOperations(p KafkaPermission, bits int32) KafkaPermissionResult {
	r := KafkaPermissionResult{KafkaPermission: p}
	ok, told := AllowedByOperations(bits, p.Operation)
	if !told {
		r.Unchecked = "not checked: the broker does not report authorized operations"
	}
	r.OK = ok
	return r
}

// CheckKafkaPermissions asks the brokers whether the client may do each of
// perms, doing none: a topic's authorized operations from Metadata
// (KIP-430), the cluster's from DescribeCluster, Create on a missing topic
// by a CreateTopics that only validates, and Write on a transactional ID
// by an InitProducerID whose transaction timeout the coordinator refuses
// (the ID's authorization is checked before the timeout, and a refused
// timeout touches no state). With probeTxn false a transactional ID is
// not asked, and txnWhy says why.
func CheckKafkaPermissions(ctx context.Context, cl *kgo.Client, perms []KafkaPermission, probeTxn bool, txnWhy string) []KafkaPermissionResult {
	out := make([]KafkaPermissionResult, len(perms))
	var topics []string
	seen := map[string]bool{}
	for i, p := range perms {
		out[i].KafkaPermission = p
		if p.Resource == KafkaTopic && !seen[p.Name] {
			seen[p.Name] = true
			topics = append(topics, p.Name)
		}
	}
	type topicOps struct {
		bits    int32
		missing bool
		err     error
	}
	ops := map[string]topicOps{}
	if len(topics) > 0 {
		req := kmsg.NewPtrMetadataRequest()
		req.IncludeTopicAuthorizedOperations = true
		req.AllowAutoTopicCreation = false // a check creates nothing
		for _, t := range topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
		resp, err := req.RequestWith(ctx, cl)
		for _, t := range topics {
			ops[t] = topicOps{bits: notReported, err: err}
		}
		if err == nil {
			for _, rt := range resp.Topics {
				if rt.Topic == nil {
					continue
				}
				o := topicOps{bits: rt.AuthorizedOperations}
				switch err := kerr.ErrorForCode(rt.ErrorCode); {
				case errors.Is(err, kerr.UnknownTopicOrPartition):
					o.missing = true
				case err != nil:
					o.err = err
				}
				ops[*rt.Topic] = o
			}
		}
	}
	clusterBits := int32(notReported)
	clusterAsked := false
	for i, p := range perms {
		r := &out[i]
		switch p.Resource {
		case KafkaTopic:
			o := ops[p.Name]
			switch {
			case errors.Is(o.err, kerr.TopicAuthorizationFailed):
				// Without Describe, Kafka tells nothing else of the topic.
				if p.Operation == KafkaDescribe {
					break
				}
				r.Unchecked = "not checked: Kafka tells nothing more of a topic without Describe"
			case o.err != nil:
				r.Unchecked = fmt.Sprintf("not checked: metadata of topic %q: %v", p.Name, o.err)
			case o.missing && p.IfMissing:
				if !clusterAsked {
					clusterBits, clusterAsked = clusterOperations(ctx, cl), true
				}
				if ok, told := AllowedByOperations(clusterBits, KafkaCreate); told && ok {
					r.OK = true
					break
				}
				r.OK, r.Unchecked = validateCreate(ctx, cl, p.Name)
			case o.missing:
				r.Unchecked = fmt.Sprintf("not checked: topic %q does not exist yet", p.Name)
			case p.IfMissing:
				r.OK = true // the topic exists: nothing to create
			default:
				*r = ResultFromOperations(p, o.bits)
			}
		case KafkaCluster:
			if !clusterAsked {
				clusterBits, clusterAsked = clusterOperations(ctx, cl), true
			}
			*r = ResultFromOperations(p, clusterBits)
		case KafkaTransactionalID:
			if !probeTxn {
				r.Unchecked = "not checked: " + txnWhy
				break
			}
			r.OK, r.Unchecked = probeTransactionalID(ctx, cl, p.Name)
		}
	}
	return out
}

// clusterOperations are the cluster's authorized operations, or
// notReported when the broker does not tell.
func clusterOperations(ctx context.Context, cl *kgo.Client) int32 {
	req := kmsg.NewPtrDescribeClusterRequest()
	req.IncludeClusterAuthorizedOperations = true
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || resp.ErrorCode != 0 {
		return notReported
	}
	return resp.ClusterAuthorizedOperations
}

// validateCreate asks whether topic may be created, creating nothing.
func validateCreate(ctx context.Context, cl *kgo.Client, topic string) (ok bool, unchecked string) {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.ValidateOnly = true
	req.TimeoutMillis = 5000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return false, fmt.Sprintf("not checked: create topic %q (validate only): %v", topic, err)
	}
	for _, t := range resp.Topics {
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case err == nil, errors.Is(err, kerr.TopicAlreadyExists):
			return true, ""
		case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
			return false, ""
		default:
			return false, fmt.Sprintf("not checked: create topic %q (validate only): %v", topic, err)
		}
	}
	return false, "not checked: no answer for the topic"
}

// invalidTxnTimeout is a transaction timeout every coordinator refuses
// (it must be positive) after checking the ID's authorization and before
// touching any state of the ID: no producer is fenced, no transaction
// aborted.
const invalidTxnTimeout = -1

// probeTransactionalID asks whether the client may write as id.
func probeTransactionalID(ctx context.Context, cl *kgo.Client, id string) (ok bool, unchecked string) {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = kmsg.StringPtr(id)
	req.TransactionTimeoutMillis = invalidTxnTimeout
	req.ProducerID, req.ProducerEpoch = -1, -1
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	switch {
	case errors.Is(err, kerr.InvalidTransactionTimeout):
		return true, ""
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return false, ""
	case err == nil:
		// A coordinator that took the timeout: the ID was initialised,
		// as the mirror's next run does anyway.
		return true, ""
	default:
		return false, fmt.Sprintf("not checked: InitProducerID for %q: %v", id, err)
	}
}
