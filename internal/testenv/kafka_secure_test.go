package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// r2kTxnPrefix is the transactional ID prefix of redis-to-kafka
// (r2k.TransactionalIDPrefix), spelled out: these tests share no code with
// xmirror.
const r2kTxnPrefix = "xmirror-r2k:"

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// produceTxn produces n records to topic in one committed transaction of
// txnID as user through mech.
func produceTxn(t *testing.T, k KafkaSecure, mech Mechanism, user, txnID, topic string, n int) error {
	t.Helper()
	cl := k.Client(t, mech, user, kgo.TransactionalID(txnID), kgo.DefaultProduceTopic(topic))
	ctx := ctxFor(t, 30*time.Second)
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = kgo.StringRecord(fmt.Sprintf("%s %s %d", user, mech, i))
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		cl.EndTransaction(ctx, kgo.TryAbort)
		return err
	}
	return cl.EndTransaction(ctx, kgo.TryCommit)
}

// readCommitted reads partition 0 of topic from the start, read_committed,
// as user through mech, until it has n records or a fetch fails.
func readCommitted(t *testing.T, k KafkaSecure, mech Mechanism, user, topic string, n int) ([]*kgo.Record, error) {
	t.Helper()
	cl := k.Client(t, mech, user, kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	ctx := ctxFor(t, 30*time.Second)
	var recs []*kgo.Record
	for len(recs) < n {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return recs, fmt.Errorf("timed out with %d of %d records", len(recs), n)
		}
		if errs := f.Errors(); len(errs) > 0 {
			return recs, errs[0].Err
		}
		recs = append(recs, f.Records()...)
	}
	return recs, nil
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// Each listener and mechanism authenticates each user as User:<user>: the
// least-privilege users may write and read their sec- topics and nothing
// else (so they are neither ANONYMOUS nor a super user, and the mutual TLS
// listener maps CN=<user> to User:<user>), and the admin may everything.
func TestSecureKafkaEachMechanismAuthenticatesItsUser(t *testing.T) {
	k := SecureKafka(t)
	topic := k.Topic(t, 1)
	other := Name(t, "t") // outside sec-: no ACL of the least-privilege users covers it
	if _, err := k.Kadm(t).CreateTopic(ctxFor(t, 30*time.Second), 1, 1, nil, other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Kadm(t).DeleteTopics(context.Background(), other) })

	want := 0
	for _, mech := range Mechanisms {
		t.Run(string(mech), func(t *testing.T) {
			if err := produceTxn(t, k, mech, KafkaUserR2K, r2kTxnPrefix+Name(t, "m"), topic, 2); err != nil {
				t.Fatalf("%s as %s: transactional produce to %s: %v", mech, KafkaUserR2K, topic, err)
			}
			if err := produceTxn(t, k, mech, KafkaAdmin, "admin-"+Name(t, "m"), other, 1); err != nil {
				t.Fatalf("%s as %s: transactional produce to %s: %v", mech, KafkaAdmin, other, err)
			}
			want += 2
			for _, user := range []string{KafkaUserR2K, KafkaUserK2R, KafkaAdmin} {
				recs, err := readCommitted(t, k, mech, user, topic, want)
				if err != nil || len(recs) != want {
					t.Fatalf("%s as %s: read %s: %d records, %v; want %d", mech, user, topic, len(recs), err, want)
				}
			}
			// Not the admin, not ANONYMOUS: refused outside sec-.
			for _, user := range []string{KafkaUserR2K, KafkaUserK2R} {
				err := k.Client(t, mech, user).ProduceSync(ctxFor(t, 30*time.Second), &kgo.Record{Topic: other, Value: []byte("x")}).FirstErr()
				wantErr(t, fmt.Sprintf("%s as %s: produce to %s", mech, user, other), err, kerr.TopicAuthorizationFailed)
			}
		})
	}
}

// xmirror-r2k has exactly what redis-to-kafka does: find, create and
// describe the configs of sec- topics, produce in transactions of its own
// prefix, read back, list offsets; and no more.
func TestSecureKafkaR2KUserHasWhatRedisToKafkaNeeds(t *testing.T) {
	k := SecureKafka(t)
	const mech = MechScramSHA512
	adm := kadm.NewClient(k.Client(t, mech, KafkaUserR2K))
	ctx := ctxFor(t, time.Minute)

	topic := Name(t, "sec") // created by the user itself (--create-topic)
	resp, err := adm.CreateTopic(ctx, 2, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create %s as %s: %v", topic, KafkaUserR2K, err)
	}
	t.Cleanup(func() { k.Kadm(t).DeleteTopics(context.Background(), topic) })
	Wait(t, 30*time.Second, "topic "+topic, func() bool {
		d, err := adm.ListTopics(ctx, topic)
		return err == nil && d[topic].Err == nil && len(d[topic].Partitions) == 2
	})
	rc, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil || rc[0].Err != nil {
		t.Fatalf("describe configs of %s: %v %v", topic, err, rc)
	}
	if err := produceTxn(t, k, mech, KafkaUserR2K, r2kTxnPrefix+Name(t, "m"), topic, 3); err != nil {
		t.Fatalf("transactional produce: %v", err)
	}
	for name, list := range map[string]func(context.Context, ...string) (kadm.ListedOffsets, error){
		"start": adm.ListStartOffsets, "end": adm.ListEndOffsets, "committed": adm.ListCommittedOffsets,
	} {
		if o, err := list(ctx, topic); err != nil || o.Error() != nil {
			t.Errorf("list %s offsets of %s: %v %v", name, topic, err, o.Error())
		}
	}

	// No more than that.
	err = produceTxn(t, k, mech, KafkaUserR2K, "other:"+Name(t, "m"), topic, 1)
	wantErr(t, "a transactional ID outside "+r2kTxnPrefix, err, kerr.TransactionalIDAuthorizationFailed)
	resp, err = adm.CreateTopic(ctx, 1, 1, nil, Name(t, "t"))
	if err == nil {
		err = resp.Err
	}
	wantErr(t, "create a topic outside sec-", err, kerr.TopicAuthorizationFailed)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := adm.DescribeBrokerConfigs(ctx, brokers.NodeIDs()...)
	if err == nil && len(bc) > 0 {
		err = bc[0].Err
	}
	wantErr(t, "describe the broker's configs", err, kerr.ClusterAuthorizationFailed)
}

// xmirror-k2r has exactly what kafka-to-redis does: find and describe the
// configs of sec- topics, list offsets and fetch assigned partitions
// read_committed; it may not write, create or join a group.
func TestSecureKafkaK2RUserHasWhatKafkaToRedisNeeds(t *testing.T) {
	k := SecureKafka(t)
	const mech = MechMTLS
	topic := k.Topic(t, 1)
	if err := produceTxn(t, k, MechPlain, KafkaAdmin, "admin-"+Name(t, "m"), topic, 2); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(k.Client(t, mech, KafkaUserK2R))
	ctx := ctxFor(t, time.Minute)
	if d, err := adm.ListTopics(ctx, topic); err != nil || d[topic].Err != nil {
		t.Fatalf("list %s: %v %v", topic, err, d[topic].Err)
	}
	if rc, err := adm.DescribeTopicConfigs(ctx, topic); err != nil || rc[0].Err != nil {
		t.Fatalf("describe configs of %s: %v %v", topic, err, rc)
	}
	for name, list := range map[string]func(context.Context, ...string) (kadm.ListedOffsets, error){
		"start": adm.ListStartOffsets, "end": adm.ListEndOffsets, "committed": adm.ListCommittedOffsets,
	} {
		if o, err := list(ctx, topic); err != nil || o.Error() != nil {
			t.Errorf("list %s offsets of %s: %v %v", name, topic, err, o.Error())
		}
	}
	if recs, err := readCommitted(t, k, mech, KafkaUserK2R, topic, 2); err != nil || len(recs) != 2 {
		t.Fatalf("read %s: %d records, %v", topic, len(recs), err)
	}

	// An idempotent producer is refused before it writes (its
	// InitProducerID needs Write on some topic: ClusterAuthorizationFailed);
	// a plain one meets the topic's refusal.
	err := k.Client(t, mech, KafkaUserK2R).ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr()
	wantErr(t, "idempotent produce", err, kerr.ClusterAuthorizationFailed)
	err = k.Client(t, mech, KafkaUserK2R, kgo.DisableIdempotentWrite()).ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr()
	wantErr(t, "produce", err, kerr.TopicAuthorizationFailed)
	resp, err := adm.CreateTopic(ctx, 1, 1, nil, Name(t, "sec"))
	if err == nil {
		err = resp.Err
	}
	wantErr(t, "create a sec- topic", err, kerr.TopicAuthorizationFailed)
	groups, err := adm.DescribeGroups(ctx, Name(t, "g"))
	if err == nil {
		err = groups.Error()
	}
	wantErr(t, "describe a group", err, kerr.GroupAuthorizationFailed)
}

// Deny takes one permission away from a least-privilege user for one topic
// and gives it back when the test ends; Grant and Revoke add and remove a
// permission on a topic outside sec-.
func TestSecureKafkaGrantDenyRevoke(t *testing.T) {
	k := SecureKafka(t)
	const mech = MechOAuthBearer
	topic := k.Topic(t, 1)
	if err := produceTxn(t, k, MechPlain, KafkaAdmin, "admin-"+Name(t, "m"), topic, 1); err != nil {
		t.Fatal(err)
	}
	read := []kadm.ACLOperation{kadm.OpRead}

	t.Run("deny", func(t *testing.T) {
		k.Deny(t, KafkaUserK2R, read, TopicACL(topic))
		_, err := readCommitted(t, k, mech, KafkaUserK2R, topic, 1)
		wantErr(t, "read with Read denied", err, kerr.TopicAuthorizationFailed)
	})
	// The Deny is gone with its subtest.
	if recs, err := readCommitted(t, k, mech, KafkaUserK2R, topic, 1); err != nil || len(recs) != 1 {
		t.Fatalf("read after the deny was removed: %d records, %v", len(recs), err)
	}

	other := Name(t, "t")
	if _, err := k.Kadm(t).CreateTopic(ctxFor(t, 30*time.Second), 1, 1, nil, other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Kadm(t).DeleteTopics(context.Background(), other) })
	if err := produceTxn(t, k, MechPlain, KafkaAdmin, "admin-"+Name(t, "m"), other, 1); err != nil {
		t.Fatal(err)
	}
	_, err := readCommitted(t, k, mech, KafkaUserK2R, other, 1)
	wantErr(t, "read "+other+" without an ACL", err, kerr.TopicAuthorizationFailed)
	k.Grant(t, KafkaUserK2R, []kadm.ACLOperation{kadm.OpDescribe, kadm.OpRead}, TopicACL(other))
	if recs, err := readCommitted(t, k, mech, KafkaUserK2R, other, 1); err != nil || len(recs) != 1 {
		t.Fatalf("read %s after Grant: %d records, %v", other, len(recs), err)
	}
	k.Revoke(t, KafkaUserK2R, []kadm.ACLOperation{kadm.OpDescribe, kadm.OpRead}, TopicACL(other))
	_, err = readCommitted(t, k, mech, KafkaUserK2R, other, 1)
	wantErr(t, "read "+other+" after Revoke", err, kerr.TopicAuthorizationFailed)
}

// The material for failure tests provokes what it is named for.
func TestSecureKafkaRefusesBadCredentials(t *testing.T) {
	k := SecureKafka(t)
	ping := func(opts ...kgo.Opt) error {
		cl, err := kgo.NewClient(append(opts, kgo.DialTimeout(3*time.Second))...)
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	for _, mech := range Mechanisms {
		if err := ping(k.ClientOpts(t, mech, KafkaUserR2K)...); err != nil {
			t.Fatalf("%s as %s: %v", mech, KafkaUserR2K, err)
		}
	}
	seeds := func(b string) kgo.Opt { return kgo.SeedBrokers(strings.Split(b, ",")...) }
	certTLS := func(cert, key string) *tls.Config {
		cfg := k.TLSConfig(t, "")
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
		return cfg
	}
	otherCA := k.TLSConfig(t, "")
	pem, err := os.ReadFile(k.OtherCA())
	if err != nil {
		t.Fatal(err)
	}
	otherCA.RootCAs = x509.NewCertPool()
	otherCA.RootCAs.AppendCertsFromPEM(pem)

	cases := []struct {
		name string
		opts []kgo.Opt
	}{
		{"wrong password", []kgo.Opt{seeds(k.SASLBrokers), kgo.DialTLSConfig(k.TLSConfig(t, "")),
			kgo.SASL(scram.Auth{User: KafkaUserR2K, Pass: "wrong"}.AsSha256Mechanism())}},
		{"expired token", []kgo.Opt{seeds(k.OAuthBrokers), kgo.DialTLSConfig(k.TLSConfig(t, "")),
			kgo.SASL(oauth.Auth{Token: UnsecuredJWT(KafkaUserR2K, time.Now().Add(-time.Hour))}.AsMechanism())}},
		{"PLAIN on the OAUTHBEARER listener", []kgo.Opt{seeds(k.OAuthBrokers), kgo.DialTLSConfig(k.TLSConfig(t, "")),
			kgo.SASL(plain.Auth{User: KafkaUserR2K, Pass: k.Password(t, KafkaUserR2K)}.AsMechanism())}},
		{"expired client certificate", []kgo.Opt{seeds(k.MTLSBrokers), kgo.DialTLSConfig(certTLS(k.ExpiredCert(), k.ExpiredKey()))}},
		{"untrusted client certificate", []kgo.Opt{seeds(k.MTLSBrokers), kgo.DialTLSConfig(certTLS(k.UntrustedCert(), k.UntrustedKey()))}},
		{"no client certificate", []kgo.Opt{seeds(k.MTLSBrokers), kgo.DialTLSConfig(k.TLSConfig(t, ""))}},
		{"server of an unknown authority", append(k.ClientOpts(t, MechPlain, KafkaUserR2K), kgo.DialTLSConfig(otherCA))},
		{"plaintext to a TLS listener", []kgo.Opt{seeds(k.SASLBrokers)}},
	}
	for _, c := range cases {
		if err := ping(c.opts...); err == nil {
			t.Errorf("%s: the broker was reached", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}
