package cmd_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// kafkaAuth is how xmirror is told to reach the secured broker as user
// through mech: flags and environment, each mechanism another way of
// giving its secret (a variable, a file, all settings from the
// environment).
func kafkaAuth(t *testing.T, k testenv.KafkaSecure, mech testenv.Mechanism, user string) (flags, env []string) {
	t.Helper()
	switch mech {
	case testenv.MechPlain:
		return []string{"--brokers", k.SASLBrokers, "--kafka-ca", k.CA(), "--kafka-sasl-mechanism", "PLAIN", "--kafka-user", user},
			[]string{"XMIRROR_KAFKA_PASSWORD=" + k.Password(t, user)}
	case testenv.MechScramSHA256:
		return []string{"--brokers", k.SASLBrokers, "--kafka-ca", k.CA(), "--kafka-sasl-mechanism", "scram-sha-256",
			"--kafka-user", user, "--kafka-password-file", k.PasswordFile(user)}, nil
	case testenv.MechScramSHA512:
		return nil, []string{"XMIRROR_BROKERS=" + k.SASLBrokers, "XMIRROR_KAFKA_CA=" + k.CA(), "XMIRROR_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
			"XMIRROR_KAFKA_USER=" + user, "XMIRROR_KAFKA_PASSWORD_FILE=" + k.PasswordFile(user)}
	case testenv.MechOAuthBearer:
		if user == testenv.KafkaUserR2K {
			return []string{"--brokers", k.OAuthBrokers, "--kafka-ca", k.CA(), "--kafka-sasl-mechanism", "OAUTHBEARER", "--kafka-token-file", k.TokenFile(user)}, nil
		}
		return []string{"--brokers", k.OAuthBrokers, "--kafka-ca", k.CA(), "--kafka-sasl-mechanism", "OAUTHBEARER"},
			[]string{"XMIRROR_KAFKA_TOKEN=" + k.Token(t, user)}
	case testenv.MechMTLS:
		return []string{"--brokers", k.MTLSBrokers, "--kafka-ca", k.CA(), "--kafka-cert", k.Cert(user), "--kafka-key", k.Key(user)}, nil
	}
	t.Fatalf("no such mechanism %s", mech)
	return nil, nil
}

// redisAuth is how xmirror is told to reach the TLS Redis as user: over
// TLS with the password in the environment, or over mutual TLS with a
// password file.
func redisAuth(srv testenv.RedisTLS, t *testing.T, mutual bool, user string) (flags, env []string) {
	if mutual {
		return []string{"--redis", withUser(t, srv.MTLSURL, user, ""), "--redis-ca", srv.CA(), "--redis-cert", srv.Cert(),
			"--redis-key", srv.Key(), "--redis-password-file", srv.PasswordFile(user)}, nil
	}
	return []string{"--redis", srv.URL, "--redis-ca", srv.CA()},
		[]string{"XMIRROR_REDIS_USER=" + user, "XMIRROR_REDIS_PASSWORD=" + srv.Password(t, user)}
}

// secureRun is one xmirror command against the secured servers, as user of
// both (the least-privilege user of its direction).
type secureRun struct {
	t      *testing.T
	kafka  testenv.KafkaSecure
	redis  testenv.RedisTLS
	mech   testenv.Mechanism
	mutual bool
}

func (s secureRun) args(user string, kafkaUser string, args []string) ([]string, []string) {
	rf, re := redisAuth(s.redis, s.t, s.mutual, user)
	kf, ke := kafkaAuth(s.t, s.kafka, s.mech, kafkaUser)
	return append(append(args, rf...), kf...), append(re, ke...)
}

func (s secureRun) run(direction string, args ...string) result {
	s.t.Helper()
	user, kafkaUser := testenv.TLSUserR2K, testenv.KafkaUserR2K
	if direction == "k2r" {
		user, kafkaUser = testenv.TLSUserK2R, testenv.KafkaUserK2R
	}
	all, env := s.args(user, kafkaUser, append([]string{direction}, args...))
	return xmirrorEnv(s.t, env, all...)
}

func (s secureRun) start(direction string, args ...string) *started {
	s.t.Helper()
	user, kafkaUser := testenv.TLSUserR2K, testenv.KafkaUserR2K
	if direction == "k2r" {
		user, kafkaUser = testenv.TLSUserK2R, testenv.KafkaUserK2R
	}
	all, env := s.args(user, kafkaUser, append([]string{direction, "--follow"}, args...))
	cmd := xmirrorCmd(s.t, all...)
	cmd.Env = append(cmd.Env, env...)
	return startXmirrorCmd(s.t, cmd)
}

// checkBack fails the test unless stream holds exactly n entries, the i-th
// with order i and its binary value.
func checkBack(t *testing.T, admin rueidis.Client, stream string, n int) {
	t.Helper()
	got, err := admin.Do(context.Background(), admin.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%s holds %d entries, want %d", stream, len(got), n)
	}
	for i, e := range got {
		if e.FieldValues["order"] != strconv.Itoa(i) || e.FieldValues["bytes"] != "\x00\xff"+strconv.Itoa(i) {
			t.Fatalf("entry %d of %s is %v, want order %d", i, stream, e.FieldValues, i)
		}
	}
}

func orderFields(i int) []string {
	return []string{"order", strconv.Itoa(i), "bytes", "\x00\xff" + strconv.Itoa(i)}
}

// TestBothDirectionsThroughEachKafkaMechanism mirrors a stream of the TLS
// Redis into a topic of the secured broker and back, one-shot and then
// following, through each way of authenticating to Kafka (PLAIN, both
// SCRAMs, OAUTHBEARER, mutual TLS), as the least-privilege users of both
// servers. A plain client of the broker's super-user listener reads the
// topic; a plain Redis client reads the streams.
func TestBothDirectionsThroughEachKafkaMechanism(t *testing.T) {
	k := testenv.SecureKafka(t)
	srv := testenv.TLSRedis(t)
	for i, mech := range testenv.Mechanisms {
		t.Run(string(mech), func(t *testing.T) {
			s := secureRun{t: t, kafka: k, redis: srv, mech: mech, mutual: i%2 == 1}
			url := srv.URL
			if s.mutual {
				url = srv.MTLSURL
			}
			admin := srv.Admin(t, url)
			stream, back := tlsStream(t, admin), tlsStream(t, admin)
			topic := k.Topic(t, 2)
			r2kName, k2rName := testenv.Name(t, "r"), testenv.Name(t, "k")
			t.Cleanup(func() {
				ctx := context.Background()
				admin.Do(ctx, admin.B().Del().Key(checkpoint.R2KKey(r2kName)).Build())
				admin.Do(ctx, admin.B().Del().Key(checkpoint.K2RKey(k2rName, back)).Build())
			})
			const n, more = 40, 25
			addEntries(t, admin, stream, 0, n, orderFields)
			if r := s.run("r2k", "--stream", stream, "--topic", topic, "--name", r2kName, "--key-field", "order"); r.code != 0 {
				t.Fatalf("redis-to-kafka: exit %d\nstderr: %s", r.code, r.stderr)
			}
			if recs := k.ReadTopic(t, topic); len(recs) != n {
				t.Fatalf("topic holds %d records, want %d", len(recs), n)
			}
			if r := s.run("k2r", "--topic", topic, "--stream", back, "--name", k2rName); r.code != 0 {
				t.Fatalf("kafka-to-redis: exit %d\nstderr: %s", r.code, r.stderr)
			}
			// Two partitions: order holds per key, so sort by order.
			sortBack(t, admin, back, n)

			// Following: what is added while both run goes through.
			r2k := s.start("r2k", "--stream", stream, "--topic", topic, "--name", r2kName, "--key-field", "order")
			k2r := s.start("k2r", "--topic", topic, "--stream", back, "--name", k2rName)
			addEntries(t, admin, stream, n, more, orderFields)
			testenv.Wait(t, 60*time.Second, "the entries back in "+back, func() bool {
				got, err := admin.Do(context.Background(), admin.B().Xlen().Key(back).Build()).AsInt64()
				return err == nil && got >= n+more
			})
			for _, p := range []*started{r2k, k2r} {
				if code, _ := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
					t.Fatalf("exit %d after SIGTERM, want 0\nstderr: %s", code, p.stderr.String())
				}
			}
			if recs := k.ReadTopic(t, topic); len(recs) != n+more {
				t.Fatalf("topic holds %d records, want %d", len(recs), n+more)
			}
			sortBack(t, admin, back, n+more)
		})
	}
}

// sortBack checks that stream holds entries 0 to n-1 exactly once each,
// with their values, in whatever order the partitions interleaved them.
func sortBack(t *testing.T, admin rueidis.Client, stream string, n int) {
	t.Helper()
	got, err := admin.Do(context.Background(), admin.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, e := range got {
		i, err := strconv.Atoi(e.FieldValues["order"])
		if err != nil || seen[i] || i >= n || e.FieldValues["bytes"] != "\x00\xff"+strconv.Itoa(i) {
			t.Fatalf("%s: unexpected or doubled entry %v", stream, e.FieldValues)
		}
		seen[i] = true
	}
	if len(seen) != n {
		t.Fatalf("%s holds %d distinct entries, want %d", stream, len(seen), n)
	}
}

// TestMissingKafkaPermissionIsNamedAndLosesNothing: each permission a
// direction needs, taken away from its least-privilege user for one topic
// (or its transactional ID), stops the run with one line naming the
// principal, the operation and the resource, with the kafka-acls.sh line
// that grants it; nothing is acknowledged or checkpointed that was not
// written, so a rerun once it is granted again mirrors every entry
// exactly once.
func TestMissingKafkaPermissionIsNamedAndLosesNothing(t *testing.T) {
	k := testenv.SecureKafka(t)
	srv := testenv.TLSRedis(t)
	const n = 30
	for _, tc := range []struct {
		name      string
		direction string
		op        kadm.ACLOperation
		create    bool // redis-to-kafka creates the topic
		txn       bool // the ACL is on the transactional ID
		want      string
	}{
		{"redis-to-kafka without WRITE", "r2k", kadm.OpWrite, false, false, `User:xmirror-r2k may not Write on topic "%s"`},
		{"redis-to-kafka without DESCRIBE", "r2k", kadm.OpDescribe, false, false, `User:xmirror-r2k may not Describe on topic "%s"`},
		{"redis-to-kafka --create-topic without CREATE", "r2k", kadm.OpCreate, true, false, `User:xmirror-r2k may not Create on topic "%s"`},
		{"redis-to-kafka without WRITE on its transactional ID", "r2k", kadm.OpWrite, false, true, `User:xmirror-r2k may not Write on transactional-id "xmirror-r2k:%s"`},
		{"redis-to-kafka without DESCRIBE_CONFIGS", "r2k", kadm.OpDescribeConfigs, false, false, `User:xmirror-r2k may not DescribeConfigs on topic "%s"`},
		{"kafka-to-redis without READ", "k2r", kadm.OpRead, false, false, `User:xmirror-k2r may not Read on topic "%s"`},
		{"kafka-to-redis without DESCRIBE", "k2r", kadm.OpDescribe, false, false, `User:xmirror-k2r may not Describe on topic "%s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := secureRun{t: t, kafka: k, redis: srv, mech: testenv.MechScramSHA512}
			admin := srv.Admin(t, srv.URL)
			stream, back := tlsStream(t, admin), tlsStream(t, admin)
			name := testenv.Name(t, "m")
			t.Cleanup(func() {
				ctx := context.Background()
				admin.Do(ctx, admin.B().Del().Key(checkpoint.R2KKey(name)).Build())
				admin.Do(ctx, admin.B().Del().Key(checkpoint.K2RKey(name, back)).Build())
			})
			var topic string
			if tc.create {
				topic = testenv.Name(t, "sec")
				t.Cleanup(func() { k.Kadm(t).DeleteTopics(context.Background(), topic) })
			} else {
				topic = k.Topic(t, 1)
			}
			addEntries(t, admin, stream, 0, n, orderFields)
			user := testenv.KafkaUserR2K
			r2kArgs := []string{"--stream", stream, "--topic", topic, "--name", name}
			if tc.create {
				r2kArgs = append(r2kArgs, "--create-topic")
			}
			args := r2kArgs
			if tc.direction == "k2r" {
				// The topic gets its records first, as the full user.
				if r := s.run("r2k", r2kArgs...); r.code != 0 {
					t.Fatalf("redis-to-kafka: exit %d\nstderr: %s", r.code, r.stderr)
				}
				user, args = testenv.KafkaUserK2R, []string{"--topic", topic, "--stream", back, "--name", name}
			}
			res := testenv.TopicACL(topic)
			want := fmt.Sprintf(tc.want, topic)
			if tc.txn {
				res, want = testenv.TransactionalIDACL("xmirror-r2k:"+name), fmt.Sprintf(tc.want, name)
			}
			k.Deny(t, user, []kadm.ACLOperation{tc.op}, res)
			r := s.run(tc.direction, args...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\nstderr: %s", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, want) || !strings.Contains(last, "grant it: kafka-acls.sh --bootstrap-server "+k.SASLBrokers+" --command-config <admin.properties> --add --allow-principal User:"+user+" --operation "+opName(tc.op)) {
				t.Fatalf("the error does not name the permission\n got %s\nwant %s ... grant it: kafka-acls.sh ...", last, want)
			}
			// Nothing acknowledged or stored that was not written.
			if tc.direction == "r2k" {
				if tc.create {
					if _, err := k.Kadm(t).ListTopics(context.Background(), topic); err != nil {
						t.Fatal(err)
					}
				} else if recs := k.ReadTopic(t, topic); len(recs) != 0 {
					t.Fatalf("topic holds %d records after the refusal, want 0", len(recs))
				}
			} else if got, _ := admin.Do(context.Background(), admin.B().Xlen().Key(back).Build()).AsInt64(); got != 0 {
				t.Fatalf("%s holds %d entries after the refusal, want 0", back, got)
			}

			k.Undeny(t, user, []kadm.ACLOperation{tc.op}, res)
			if r := s.run(tc.direction, args...); r.code != 0 {
				t.Fatalf("the rerun once granted: exit %d\nstderr: %s", r.code, r.stderr)
			}
			if tc.direction == "r2k" {
				recs := k.ReadTopic(t, topic)
				if len(recs) != n {
					t.Fatalf("topic holds %d records after the rerun, want %d", len(recs), n)
				}
				for i, rec := range recs {
					if !strings.Contains(string(rec.Value), fmt.Sprintf(`"order":"%d"`, i)) {
						t.Fatalf("record %d is %s", i, rec.Value)
					}
				}
			} else {
				checkBack(t, admin, back, n)
			}
		})
	}
}

// opName is an ACL operation as kafka-acls.sh spells it.
func opName(op kadm.ACLOperation) string {
	switch op {
	case kadm.OpWrite:
		return "Write"
	case kadm.OpRead:
		return "Read"
	case kadm.OpDescribe:
		return "Describe"
	case kadm.OpCreate:
		return "Create"
	case kadm.OpDescribeConfigs:
		return "DescribeConfigs"
	}
	return op.String()
}

// kafkaSecrets are every secret of the secured servers' users: the Kafka
// passwords and tokens, a line of each private key, the Redis passwords.
func kafkaSecrets(t *testing.T, k testenv.KafkaSecure, srv testenv.RedisTLS) []string {
	t.Helper()
	var secrets []string
	for _, u := range []string{testenv.KafkaAdmin, testenv.KafkaUserR2K, testenv.KafkaUserK2R} {
		secrets = append(secrets, k.Password(t, u), k.Token(t, u))
		key, err := os.ReadFile(k.Key(u))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(key), "\n")
		secrets = append(secrets, lines[1])
	}
	for _, u := range []string{testenv.TLSAdmin, testenv.TLSUserR2K, testenv.TLSUserK2R} {
		secrets = append(secrets, srv.Password(t, u))
	}
	key, err := os.ReadFile(srv.Key())
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, strings.Split(string(key), "\n")[1])
	return secrets
}

// TestKafkaTLSAndSASLFailuresAreOneLine: each way a secured Kafka
// connection fails is one line after the brokers, naming what to change,
// from every command, at -v and with -o json, and no output holds a
// secret.
func TestKafkaTLSAndSASLFailuresAreOneLine(t *testing.T) {
	k := testenv.SecureKafka(t)
	srv := testenv.TLSRedis(t)
	testenv.Redis(t)
	secrets := kafkaSecrets(t, k, srv)
	pw := k.Password(t, testenv.KafkaUserR2K)
	wrong := "wrong-" + pw[:6] + "-password"
	scram := func(password string) []string {
		return []string{"XMIRROR_KAFKA_SASL_MECHANISM=SCRAM-SHA-512", "XMIRROR_KAFKA_USER=" + testenv.KafkaUserR2K, "XMIRROR_KAFKA_PASSWORD=" + password}
	}
	expired := testenv.UnsecuredJWT(testenv.KafkaUserR2K, time.Now().Add(-time.Hour))
	mtls := func(cert, key string) []string {
		return []string{"--brokers", k.MTLSBrokers, "--kafka-ca", k.CA(), "--kafka-cert", cert, "--kafka-key", key}
	}
	for _, tc := range []struct {
		name  string
		args  []string
		env   []string
		code  int
		wants []string
	}{
		{"wrong password", []string{"--brokers", k.SASLBrokers, "--kafka-ca", k.CA()}, scram(wrong), 1,
			[]string{"kafka " + k.SASLBrokers + ": ", `authentication refused for user "xmirror-r2k" with SCRAM-SHA-512`, "--kafka-password-file"}},
		{"mechanism not enabled on the listener", []string{"--brokers", k.OAuthBrokers, "--kafka-ca", k.CA()}, scram(pw), 1,
			[]string{"kafka " + k.OAuthBrokers + ": ", "does not enable SASL SCRAM-SHA-512 on this listener", "--kafka-sasl-mechanism"}},
		{"expired token", []string{"--brokers", k.OAuthBrokers, "--kafka-ca", k.CA(), "--kafka-sasl-mechanism", "OAUTHBEARER"},
			[]string{"XMIRROR_KAFKA_TOKEN=" + expired}, 1,
			[]string{"kafka " + k.OAuthBrokers + ": ", "did not accept the OAUTHBEARER token"}},
		{"tls spoken to a plaintext listener", []string{"--brokers", k.AdminBrokers, "--kafka-tls"}, nil, 1,
			[]string{"kafka " + k.AdminBrokers + ": ", "as a plaintext listener does", "leave out --kafka-tls"}},
		{"plaintext spoken to a tls listener", []string{"--brokers", k.SASLBrokers}, nil, 1,
			[]string{"kafka " + k.SASLBrokers + ": ", "does this listener expect TLS (--kafka-tls)"}},
		{"unknown ca", []string{"--brokers", k.SASLBrokers, "--kafka-ca", k.OtherCA()}, scram(pw), 1,
			[]string{"kafka " + k.SASLBrokers + ": ", "a CA this host does not trust", "--kafka-ca"}},
		{"wrong host name", []string{"--brokers", k.SASLBrokers, "--kafka-ca", k.CA(), "--kafka-tls-server-name", "wrong.example"}, scram(pw), 1,
			[]string{"kafka " + k.SASLBrokers + ": ", `not for "wrong.example"`, "--kafka-tls-server-name"}},
		{"missing client certificate", []string{"--brokers", k.MTLSBrokers, "--kafka-ca", k.CA()}, nil, 1,
			[]string{"kafka " + k.MTLSBrokers + ": ", "requires a client certificate", "--kafka-cert and --kafka-key"}},
		{"expired client certificate", mtls(k.ExpiredCert(), k.ExpiredKey()), nil, 1,
			[]string{"kafka " + k.MTLSBrokers + ": ", "refused the client certificate (--kafka-cert): expired"}},
		{"client certificate of another ca", mtls(k.UntrustedCert(), k.UntrustedKey()), nil, 1,
			[]string{"kafka " + k.MTLSBrokers + ": ", "refused the client certificate (--kafka-cert)"}},
		{"a user without a mechanism", []string{"--brokers", k.SASLBrokers, "--kafka-user", "u"}, []string{"XMIRROR_KAFKA_PASSWORD=" + pw}, 2,
			[]string{"--kafka-user needs a SASL mechanism; set --kafka-sasl-mechanism"}},
		{"a certificate without its key", []string{"--brokers", k.MTLSBrokers, "--kafka-cert", k.Cert(testenv.KafkaUserR2K)}, nil, 2,
			[]string{"--kafka-cert needs --kafka-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, command := range [][]string{
				{"check", "--timeout", "8s", "-v", "-o", "json"},
				{"r2k", "--stream", "tls-none", "--allow-missing", "-v", "-o", "json"},
				{"k2r", "--topic", "sec-none", "--stream", "tls-none", "-v", "-o", "json"},
			} {
				r := xmirrorEnv(t, tc.env, append(command, tc.args...)...)
				if r.code != tc.code {
					t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", command[0], r.code, tc.code, r.stdout, r.stderr)
				}
				line := oneErrorLine(t, command[0], r)
				for _, w := range tc.wants {
					if !strings.Contains(line, w) {
						t.Errorf("%s: the error lacks %q\n%s", command[0], w, line)
					}
				}
				secretFree(t, r, append(secrets, wrong, expired)...)
			}
		})
	}
}

// TestKafkaSecretsNeverShown runs every command with the Kafka password in
// the environment and in a file, a token in the environment and in a
// file, client keys, and the Redis password in the URL, at -v and with -o
// json, on success and on a permission refused, and finds no secret in
// any output.
func TestKafkaSecretsNeverShown(t *testing.T) {
	k := testenv.SecureKafka(t)
	srv := testenv.TLSRedis(t)
	secrets := kafkaSecrets(t, k, srv)
	admin := srv.Admin(t, srv.URL)
	stream, back := tlsStream(t, admin), tlsStream(t, admin)
	topic := k.Topic(t, 1)
	addEntries(t, admin, stream, 0, 5, orderFields)
	r2kName, k2rName := testenv.Name(t, "r"), testenv.Name(t, "k")
	t.Cleanup(func() {
		ctx := context.Background()
		admin.Do(ctx, admin.B().Del().Key(checkpoint.R2KKey(r2kName)).Build())
		admin.Do(ctx, admin.B().Del().Key(checkpoint.K2RKey(k2rName, back)).Build())
	})
	redisR2K := []string{"--redis", withUser(t, srv.URL, testenv.TLSUserR2K, srv.Password(t, testenv.TLSUserR2K)), "--redis-ca", srv.CA()}
	redisK2R := []string{"--redis", withUser(t, srv.URL, testenv.TLSUserK2R, srv.Password(t, testenv.TLSUserK2R)), "--redis-ca", srv.CA()}
	for _, run := range []struct {
		mech      testenv.Mechanism
		user      string
		args      []string
		code      int
		wantError string
	}{
		{testenv.MechScramSHA512, testenv.KafkaUserR2K, append([]string{"check"}, redisR2K...), 0, ""},
		{testenv.MechPlain, testenv.KafkaUserR2K, append([]string{"check", "--for", "redis-to-kafka", "--stream", stream, "--topic", topic}, redisR2K...), 0, ""},
		{testenv.MechScramSHA256, testenv.KafkaUserR2K, append([]string{"r2k", "--stream", stream, "--topic", topic, "--name", r2kName}, redisR2K...), 0, ""},
		{testenv.MechOAuthBearer, testenv.KafkaUserK2R, append([]string{"k2r", "--topic", topic, "--stream", back, "--name", k2rName}, redisK2R...), 0, ""},
		{testenv.MechOAuthBearer, testenv.KafkaUserR2K, append([]string{"check"}, redisR2K...), 0, ""},
		{testenv.MechMTLS, testenv.KafkaUserK2R, append([]string{"check"}, redisK2R...), 0, ""},
		// Refusals: the kafka-to-redis user may not write, nor describe
		// a topic outside its ACLs.
		{testenv.MechScramSHA512, testenv.KafkaUserK2R, append([]string{"r2k", "--stream", stream, "--topic", topic, "--name", r2kName + "-x"}, redisR2K...), 1, "may not"},
		{testenv.MechOAuthBearer, testenv.KafkaUserK2R, append([]string{"k2r", "--topic", "other-" + topic, "--stream", back + "-x"}, redisK2R...), 1, "may not Describe"},
	} {
		flags, env := kafkaAuth(t, k, run.mech, run.user)
		args := append(append(append([]string{}, run.args...), "-v", "-o", "json"), flags...)
		if run.args[0] == "check" && len(run.args) > 1 && run.args[1] == "--for" {
			// The text report, too.
			args = append(append([]string{}, run.args...), append([]string{"-v"}, flags...)...)
		}
		r := xmirrorEnv(t, env, args...)
		if r.code != run.code {
			t.Fatalf("xmirror %s as %s via %s: exit %d, want %d\nstdout: %s\nstderr: %s", run.args[0], run.user, run.mech, r.code, run.code, r.stdout, r.stderr)
		}
		if run.wantError != "" && !strings.Contains(r.stderr, run.wantError) {
			t.Fatalf("xmirror %s: the error lacks %q\nstderr: %s", run.args[0], run.wantError, r.stderr)
		}
		secretFree(t, r, secrets...)
	}
}

// TestCheckForEachDirectionAgainstTheSecuredBroker: check --for reports
// the Kafka side's TLS and SASL, and asks the authorizer for each
// operation the direction needs: all granted to its least-privilege user;
// one denied is one line naming it, with the grant, and exit 1.
func TestCheckForEachDirectionAgainstTheSecuredBroker(t *testing.T) {
	k := testenv.SecureKafka(t)
	srv := testenv.TLSRedis(t)
	admin := srv.Admin(t, srv.URL)
	stream := tlsStream(t, admin)
	topic := k.Topic(t, 1)
	for _, tc := range []struct {
		direction, flag string
		mech            testenv.Mechanism
		line            string
		deny            kadm.ACLOperation
		want            string
	}{
		{"r2k", "redis-to-kafka", testenv.MechScramSHA512, "TLS 1.3, certificate verified for 127.0.0.1; SASL SCRAM-SHA-512 as xmirror-r2k, authenticated",
			kadm.OpWrite, "principal User:xmirror-r2k may not Write on topic " + topic + ": grant it (kafka-acls.sh --bootstrap-server " + k.SASLBrokers + " --command-config <admin.properties> --add --allow-principal User:xmirror-r2k --operation Write --topic " + topic + ")"},
		{"k2r", "kafka-to-redis", testenv.MechOAuthBearer, "TLS 1.3, certificate verified for 127.0.0.1; SASL OAUTHBEARER, authenticated",
			kadm.OpRead, "principal User:xmirror-k2r may not Read on topic " + topic},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			user, kafkaUser := testenv.TLSUserR2K, testenv.KafkaUserR2K
			if tc.direction == "k2r" {
				user, kafkaUser = testenv.TLSUserK2R, testenv.KafkaUserK2R
			}
			s := secureRun{t: t, kafka: k, redis: srv, mech: tc.mech}
			args, env := s.args(user, kafkaUser, []string{"check", "--for", tc.flag, "--stream", stream, "--topic", topic})
			r := xmirrorEnv(t, env, args...)
			if r.code != 0 || !strings.Contains(r.stdout, tc.line) || !strings.Contains(r.stdout, "all granted") {
				t.Fatalf("exit %d, want 0 with %q and all granted\nstdout: %s\nstderr: %s", r.code, tc.line, r.stdout, r.stderr)
			}
			k.Deny(t, kafkaUser, []kadm.ACLOperation{tc.deny}, testenv.TopicACL(topic))
			r = xmirrorEnv(t, env, args...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("with %v denied: exit %d, want 1 naming it\n want %s\nstderr: %s", tc.deny, r.code, tc.want, r.stderr)
			}
		})
	}
}

// TestKafkaPermissionRemovedDuringAFollowRun: an ACL taken away while
// a follow run mirrors stops it with the line naming the permission;
// what it had not written stays unacknowledged (redis-to-kafka) or
// unwritten (kafka-to-redis), and a rerun once the ACL is back mirrors
// every entry exactly once.
func TestKafkaPermissionRemovedDuringAFollowRun(t *testing.T) {
	k := testenv.SecureKafka(t)
	srv := testenv.TLSRedis(t)
	for _, tc := range []struct {
		name, direction string
		op              kadm.ACLOperation
		txn             bool // the ACL is on the transactional ID
		want            string
	}{
		{"redis-to-kafka without WRITE on the topic", "r2k", kadm.OpWrite, false, `User:xmirror-r2k may not Write on topic "%s"`},
		{"redis-to-kafka without WRITE on its transactional ID", "r2k", kadm.OpWrite, true, `User:xmirror-r2k may not Write on transactional-id "xmirror-r2k:%s"`},
		{"kafka-to-redis without READ", "k2r", kadm.OpRead, false, `User:xmirror-k2r may not Read on topic "%s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := secureRun{t: t, kafka: k, redis: srv, mech: testenv.MechScramSHA256}
			admin := srv.Admin(t, srv.URL)
			stream, back := tlsStream(t, admin), tlsStream(t, admin)
			topic := k.Topic(t, 1)
			name := testenv.Name(t, "m")
			t.Cleanup(func() {
				ctx := context.Background()
				admin.Do(ctx, admin.B().Del().Key(checkpoint.R2KKey(name)).Build())
				admin.Do(ctx, admin.B().Del().Key(checkpoint.K2RKey(name, back)).Build())
			})
			const n = 20
			r2kArgs := []string{"--stream", stream, "--topic", topic, "--name", name}
			k2rArgs := []string{"--topic", topic, "--stream", back, "--name", name}
			args, user := r2kArgs, testenv.KafkaUserR2K
			if tc.direction == "k2r" {
				args, user = k2rArgs, testenv.KafkaUserK2R
			}
			addEntries(t, admin, stream, 0, n, orderFields)
			if tc.direction == "k2r" {
				if r := s.run("r2k", r2kArgs...); r.code != 0 {
					t.Fatalf("redis-to-kafka: exit %d\nstderr: %s", r.code, r.stderr)
				}
			}
			p := s.start(tc.direction, args...)
			done := func() bool {
				if tc.direction == "r2k" {
					return len(k.ReadTopic(t, topic)) == n
				}
				got, err := admin.Do(context.Background(), admin.B().Xlen().Key(back).Build()).AsInt64()
				return err == nil && got == n
			}
			testenv.Wait(t, 60*time.Second, "the first entries mirrored", done)
			res, want := testenv.TopicACL(topic), fmt.Sprintf(tc.want, topic)
			if tc.txn {
				res, want = testenv.TransactionalIDACL("xmirror-r2k:"+name), fmt.Sprintf(tc.want, name)
			}
			k.Deny(t, user, []kadm.ACLOperation{tc.op}, res)
			// More to mirror, which it may not.
			addEntries(t, admin, stream, n, n, orderFields)
			if tc.direction == "k2r" {
				if r := s.run("r2k", r2kArgs...); r.code != 0 {
					t.Fatalf("redis-to-kafka: exit %d\nstderr: %s", r.code, r.stderr)
				}
			}
			select {
			case <-p.done:
			case <-time.After(90 * time.Second):
				t.Fatalf("the follow run did not stop on the refusal; stderr:\n%s", p.stderr.String())
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.stderr.String(), want) {
				t.Fatalf("exit %d, want 1 naming %q\nstderr: %s", code, want, p.stderr.String())
			}
			if tc.direction == "r2k" {
				pending, err := admin.Do(context.Background(), admin.B().Xpending().Key(stream).Group("xmirror:"+name).Build()).ToArray()
				if err != nil {
					t.Fatal(err)
				}
				// Read or not yet, none of the refused is acknowledged.
				if c, _ := pending[0].AsInt64(); c < 1 || c > n {
					t.Fatalf("%d entries pending after the refusal, want the (up to %d) read and not written", c, n)
				}
				if recs := k.ReadTopic(t, topic); len(recs) != n {
					t.Fatalf("topic holds %d records after the refusal, want %d", len(recs), n)
				}
			}
			k.Undeny(t, user, []kadm.ACLOperation{tc.op}, res)
			if r := s.run(tc.direction, args...); r.code != 0 {
				t.Fatalf("the rerun once granted: exit %d\nstderr: %s", r.code, r.stderr)
			}
			if tc.direction == "r2k" {
				if recs := k.ReadTopic(t, topic); len(recs) != 2*n {
					t.Fatalf("topic holds %d records, want %d", len(recs), 2*n)
				}
			} else {
				checkBack(t, admin, back, 2*n)
			}
		})
	}
}

// TestRedisToKafkaReadBackWithoutReadIsNamed: the read-back of what an
// interrupted run may have written needs Read on the topic; refused, the
// run stops naming it before it produces anything, and a rerun once
// granted mirrors the rest exactly once.
func TestRedisToKafkaReadBackWithoutReadIsNamed(t *testing.T) {
	k := testenv.SecureKafka(t)
	srv := testenv.TLSRedis(t)
	s := secureRun{t: t, kafka: k, redis: srv, mech: testenv.MechScramSHA512}
	admin := srv.Admin(t, srv.URL)
	stream := tlsStream(t, admin)
	topic := k.Topic(t, 1)
	name := testenv.Name(t, "m")
	t.Cleanup(func() { admin.Do(context.Background(), admin.B().Del().Key(checkpoint.R2KKey(name)).Build()) })
	const n = 10
	args := []string{"--stream", stream, "--topic", topic, "--name", name}
	addEntries(t, admin, stream, 0, n, orderFields)
	if r := s.run("r2k", args...); r.code != 0 {
		t.Fatalf("redis-to-kafka: exit %d\nstderr: %s", r.code, r.stderr)
	}
	// A record after the checkpoint, as another producer's: the next
	// start reads the topic back from the checkpoint.
	if err := k.Admin(t).ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("other")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	addEntries(t, admin, stream, n, n, orderFields)
	k.Deny(t, testenv.KafkaUserR2K, []kadm.ACLOperation{kadm.OpRead}, testenv.TopicACL(topic))
	r := s.run("r2k", args...)
	want := fmt.Sprintf(`User:xmirror-r2k may not Read on topic %q`, topic)
	if r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "--operation Read --topic "+topic) {
		t.Fatalf("exit %d, want 1 naming %s\nstderr: %s", r.code, want, r.stderr)
	}
	if recs := k.ReadTopic(t, topic); len(recs) != n+1 {
		t.Fatalf("topic holds %d records after the refusal, want %d", len(recs), n+1)
	}
	k.Undeny(t, testenv.KafkaUserR2K, []kadm.ACLOperation{kadm.OpRead}, testenv.TopicACL(topic))
	if r := s.run("r2k", args...); r.code != 0 {
		t.Fatalf("the rerun once granted: exit %d\nstderr: %s", r.code, r.stderr)
	}
	if recs := k.ReadTopic(t, topic); len(recs) != 2*n+1 {
		t.Fatalf("topic holds %d records, want %d", len(recs), 2*n+1)
	}
}
