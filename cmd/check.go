package cmd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/internal/endpoint"
)

// defaultCheckTimeout bounds the whole check, both servers together.
const defaultCheckTimeout = 10 * time.Second

type checkOptions struct {
	conn    connFlags
	forFlag checkForFlags
	timeout time.Duration
	output  string
}

func newCheckCmd(a *app) *cobra.Command {
	var o checkOptions
	c := &cobra.Command{
		Use:   "check",
		Short: "Check that Redis and Kafka are reachable and can run a mirror",
		Long: `Connects to Redis and to Kafka and reports what xmirror needs of each:

  Redis: version, mode (standalone or cluster), streams (5.0+) and
         XAUTOCLAIM (6.2+, used to take over entries of crashed consumers).
         A Redis Cluster is a problem: neither direction supports it yet.
  Kafka: cluster ID, brokers, and whether each API xmirror uses is supported.
  Over TLS: the version negotiated (TLS 1.3), whether the server's
  certificate was verified and for which name; the ACL user, and whether
  it authenticated.

--for redis-to-kafka|kafka-to-redis also checks that the connected users
may do everything that mirror does, doing none of it. Name the mirror as
its command does: --stream (redis-to-kafka: each source stream;
kafka-to-redis: the destination template), --topic (redis-to-kafka: the
template; kafka-to-redis: each topic), --name (default: derived as the
command derives it), --group, --create-topic, --claim-idle, --trim-source
and --dead-letter-stream as the mirror takes them.

  Redis: every command the mirror sends, on its real keys (streams,
         checkpoint, lease, gap hold, guard and order keys), asked with
         ACL DRYRUN; a user that may not run ACL DRYRUN (as a
         least-privilege user) is asked by queueing the commands in a
         transaction that EXEC discards, so none of them runs.
  Kafka: the authorized operations the brokers report (Describe, Write,
         Read on each topic; Create on a missing one with --create-topic,
         by a CreateTopics that only validates); redis-to-kafka's Write on
         its transactional ID xmirror-r2k:<name>, by an InitProducerID the
         coordinator refuses for its timeout, only while the mirror's lease
         is free ("not checked: the mirror is running" otherwise). A broker
         without an authorizer allows everything.

Each missing permission is one line naming it and what grants it (ACL
SETUSER ..., kafka-acls.sh ...). Exits 0 when both are fit, 1 with one
line per problem otherwise (within --timeout, never hanging), 2 on bad
flags.`,
		Example: `  xmirror check
  xmirror check --redis redis://:secret@cache:6379/2 --brokers kafka1:9092,kafka2:9092
  XMIRROR_REDIS=rediss://cache:6380 xmirror check -o json

  # may this user run the mirror of two streams, creating its topics?
  XMIRROR_REDIS_USER=xmirror-r2k xmirror check --for redis-to-kafka --stream orders --stream refunds --create-topic`,
		RunE: func(c *cobra.Command, _ []string) error {
			redisEP, kafkaEP, err := o.conn.resolve(a, c, true, true)
			if err != nil {
				return err
			}
			if o.timeout <= 0 {
				return usageErrorf("--timeout must be positive, got %s", o.timeout)
			}
			if o.output != "text" && o.output != "json" {
				return usageErrorf("--output must be text or json, got %q", o.output)
			}
			cf, err := o.forFlag.resolve(c, redisEP, kafkaEP)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), o.timeout)
			defer cancel()
			rep := runCheck(ctx, o.timeout, redisEP, kafkaEP, cf)
			if o.output == "json" {
				enc := json.NewEncoder(a.env.Stdout)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false)
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				rep.print(a)
			}
			if len(rep.Problems) > 0 {
				// One line per problem, then the failure itself.
				for _, p := range rep.Problems {
					fmt.Fprintf(a.env.Stderr, "xmirror: %s\n", p)
				}
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("check failed: %d problem(s)", len(rep.Problems))}
			}
			return nil
		},
	}
	o.conn.bind(c, true, true)
	o.forFlag.bind(c)
	c.Flags().DurationVar(&o.timeout, "timeout", defaultCheckTimeout, "give up on a server that has not answered within this time")
	c.Flags().StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	return c
}

type redisReport struct {
	URL string `json:"url"`
	OK  bool   `json:"ok"`
	// TLS is "verified" or "not verified" (the server's certificate), ""
	// without TLS; ServerName is the name its certificate must hold.
	TLS        string `json:"tls,omitempty"`
	TLSVersion string `json:"tls_version,omitempty"`
	ServerName string `json:"tls_server_name,omitempty"`
	ClientCert bool   `json:"tls_client_certificate,omitempty"`
	// User is the ACL user logged in as ("default" without one).
	User string `json:"user"`
	// Authenticated says whether a password was given and accepted.
	Authenticated bool   `json:"authenticated"`
	Version       string `json:"version,omitempty"`
	Mode          string `json:"mode,omitempty"`
	Streams       bool   `json:"streams"`
	XAutoClaim    bool   `json:"xautoclaim"`
	// With --for: each command the mirror sends, on each key, and how
	// the server was asked (ACL DRYRUN, or a transaction discarded).
	Permissions      []permissionReport `json:"permissions,omitempty"`
	PermissionsProbe string             `json:"permissions_probe,omitempty"`
}

type kafkaReport struct {
	Brokers   []string          `json:"bootstrap"`
	OK        bool              `json:"ok"`
	ClusterID string            `json:"cluster_id,omitempty"`
	Members   []string          `json:"brokers,omitempty"`
	APIs      map[string]string `json:"apis,omitempty"`
	// TLS is "verified" or "not verified" (the brokers' certificates), ""
	// without TLS; ServerName is the name the first broker's certificate
	// must hold.
	TLS        string `json:"tls,omitempty"`
	TLSVersion string `json:"tls_version,omitempty"`
	ServerName string `json:"tls_server_name,omitempty"`
	ClientCert bool   `json:"tls_client_certificate,omitempty"`
	// SASL is the mechanism ("" without SASL), User its user (none for
	// OAUTHBEARER); Authenticated says the brokers accepted it.
	SASL          string `json:"sasl_mechanism,omitempty"`
	User          string `json:"sasl_user,omitempty"`
	Authenticated bool   `json:"authenticated"`
	// With --for: who the brokers know the client as, and each operation
	// the mirror needs.
	Principal   string             `json:"principal,omitempty"`
	Permissions []permissionReport `json:"permissions,omitempty"`
}

type checkReport struct {
	// For is the direction checked with --for, Mirror its name.
	For      string      `json:"for,omitempty"`
	Mirror   string      `json:"mirror,omitempty"`
	Redis    redisReport `json:"redis"`
	Kafka    kafkaReport `json:"kafka"`
	Problems []string    `json:"problems"`
}

// kafkaAPIs are the requests xmirror sends, with the lowest version it
// relies on: redis-to-kafka's transactional production needs
// InitProducerID, FindCoordinator v1+ (a transaction coordinator),
// AddPartitionsToTxn, EndTxn and Produce v3+; its read_committed read-back
// needs Fetch v4+ and ListOffsets v2+.
var kafkaAPIs = []struct {
	key kmsg.Key
	min int16
}{
	{kmsg.Metadata, 1},
	{kmsg.Produce, 3},
	{kmsg.Fetch, 4},
	{kmsg.ListOffsets, 2},
	{kmsg.InitProducerID, 0},
	{kmsg.FindCoordinator, 1},
	{kmsg.AddPartitionsToTxn, 0},
	{kmsg.EndTxn, 0},
	{kmsg.CreateTopics, 0},
}

func runCheck(ctx context.Context, timeout time.Duration, r endpoint.Redis, k endpoint.Kafka, cf *checkFor) checkReport {
	rep := checkReport{
		Redis:    redisReport{URL: r.Redacted(), User: r.Option.Username},
		Kafka:    kafkaReport{Brokers: k.Brokers},
		Problems: []string{},
	}
	if rep.Redis.User == "" {
		rep.Redis.User = "default"
	}
	if r.TLS() {
		rep.Redis.TLS, rep.Redis.ServerName = "verified", r.Option.TLSConfig.ServerName
		rep.Redis.ClientCert = len(r.Option.TLSConfig.Certificates) > 0
		if r.Insecure() {
			rep.Redis.TLS = "not verified"
		}
	}
	if cf != nil {
		rep.For, rep.Mirror = cf.direction, cf.name
	}
	// The Redis side tells the Kafka side whether the mirror runs (its
	// lease), once, whatever happens.
	lease := make(chan leaseState, 1)
	redisDone := make(chan []string, 1)
	go func() { redisDone <- checkRedis(ctx, timeout, r, &rep.Redis, cf, lease) }()
	kafkaProblems := checkKafka(ctx, timeout, k, &rep.Kafka, cf, lease)
	rep.Problems = append(rep.Problems, <-redisDone...)
	rep.Problems = append(rep.Problems, kafkaProblems...)
	return rep
}

func checkRedis(ctx context.Context, timeout time.Duration, ep endpoint.Redis, rep *redisReport, cf *checkFor, lease chan<- leaseState) []string {
	told := leaseState{why: "could not tell from Redis whether the mirror is running"}
	defer func() { lease <- told }()
	cl, err := ep.Connect(ctx, timeout)
	if err != nil {
		return []string{connText(err)}
	}
	defer cl.Close()
	if ep.TLS() {
		if st, err := ep.TLSState(ctx, timeout); err == nil {
			rep.TLSVersion = tls.VersionName(st.Version)
		}
	}
	info, err := cl.Do(ctx, cl.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return []string{fmt.Sprintf("redis %s: INFO failed: %v", ep.Addr(), err)}
	}
	fields := parseInfo(info)
	rep.Version = fields["redis_version"]
	rep.Mode = fields["redis_mode"]
	if rep.Mode == "" {
		rep.Mode = "standalone"
	}
	if endpoint.IsCluster(ctx, cl) {
		rep.Mode = "cluster"
	}
	major, minor := parseVersion(rep.Version)
	rep.Authenticated = ep.Option.Password != ""
	rep.Streams = major >= 5
	rep.XAutoClaim = major > 6 || (major == 6 && minor >= 2)
	var problems []string
	if !rep.Streams {
		problems = append(problems, fmt.Sprintf("redis %s: version %s has no streams; xmirror needs Redis 5.0 or later (6.2+ recommended)", ep.Addr(), rep.Version))
	} else if !rep.XAutoClaim {
		problems = append(problems, fmt.Sprintf("redis %s: version %s lacks XAUTOCLAIM; xmirror needs Redis 6.2 or later", ep.Addr(), rep.Version))
	}
	if rep.Mode == "cluster" {
		problems = append(problems, fmt.Sprintf("redis %s is a Redis Cluster, which neither redis-to-kafka nor kafka-to-redis supports yet; point --redis at a standalone Redis (a primary with replicas works)", ep.Addr()))
	}
	if cf != nil {
		told = leaseOf(ctx, cl, cf)
		problems = append(problems, checkRedisPermissions(ctx, cl, ep, rep.User, cf, rep)...)
	}
	rep.OK = len(problems) == 0
	return problems
}

func checkKafka(ctx context.Context, timeout time.Duration, ep endpoint.Kafka, rep *kafkaReport, cf *checkFor, lease <-chan leaseState) []string {
	if ep.TLS() {
		rep.TLS, rep.ServerName = "verified", ep.TLSConfig().ServerName
		if rep.ServerName == "" {
			rep.ServerName, _, _ = net.SplitHostPort(ep.Brokers[0])
		}
		rep.ClientCert = len(ep.TLSConfig().Certificates) > 0
		if ep.Insecure() {
			rep.TLS = "not verified"
		}
	}
	rep.SASL, rep.User = ep.SASLMechanism(), ep.User()
	cl, err := ep.Connect(ctx, timeout)
	if err != nil {
		return []string{connText(err)}
	}
	defer cl.Close()
	// A broker answered the ping, past the SASL exchange.
	rep.Authenticated = rep.SASL != ""
	if ep.TLS() {
		if st, err := ep.TLSState(ctx, timeout); err == nil {
			rep.TLSVersion = tls.VersionName(st.Version)
		}
	}
	adm := kadm.NewClient(cl)
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return []string{connText(ep.Explain(fmt.Errorf("metadata: %w", err)))}
	}
	rep.ClusterID = meta.Cluster
	for _, b := range meta.Brokers {
		rep.Members = append(rep.Members, fmt.Sprintf("%d@%s:%d", b.NodeID, b.Host, b.Port))
	}
	versions, err := adm.ApiVersions(ctx)
	if err != nil {
		return []string{connText(ep.Explain(fmt.Errorf("api versions: %w", err)))}
	}
	var problems []string
	rep.APIs = map[string]string{}
	for _, bv := range versions.Sorted() {
		if bv.Err != nil {
			problems = append(problems, fmt.Sprintf("kafka broker %d: api versions: %v", bv.NodeID, bv.Err))
			continue
		}
		for _, api := range kafkaAPIs {
			name := kmsg.NameForKey(int16(api.key))
			minV, maxV, ok := bv.KeyVersions(int16(api.key))
			switch {
			case !ok:
				rep.APIs[name] = "missing"
				problems = append(problems, fmt.Sprintf("kafka broker %d: does not support %s, which xmirror needs", bv.NodeID, name))
			case maxV < api.min:
				rep.APIs[name] = fmt.Sprintf("v%d-v%d (too old)", minV, maxV)
				problems = append(problems, fmt.Sprintf("kafka broker %d: %s only up to v%d, xmirror needs v%d; upgrade the broker", bv.NodeID, name, maxV, api.min))
			default:
				rep.APIs[name] = fmt.Sprintf("v%d-v%d", minV, maxV)
			}
		}
	}
	if cf != nil {
		problems = append(problems, checkKafkaPermissions(ctx, cl, ep, cf, lease, rep)...)
	}
	rep.OK = len(problems) == 0
	return problems
}

func (rep checkReport) print(a *app) {
	if a.global.quiet {
		return
	}
	w := a.env.Stdout
	mark := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "FAIL"
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(w, "redis  %-4s %s\n", mark(rep.Redis.OK), rep.Redis.URL)
	if rep.Redis.Version != "" {
		fmt.Fprintf(w, "       version %s, mode %s, streams: %s, XAUTOCLAIM: %s\n", rep.Redis.Version, rep.Redis.Mode, yes(rep.Redis.Streams), yes(rep.Redis.XAutoClaim))
		tlsLine := "no TLS"
		if rep.Redis.TLS != "" {
			version := rep.Redis.TLSVersion
			if version == "" {
				version = "TLS"
			}
			tlsLine = fmt.Sprintf("%s, certificate %s for %s", version, rep.Redis.TLS, rep.Redis.ServerName)
			if rep.Redis.ClientCert {
				tlsLine += ", client certificate sent"
			}
		}
		auth := "no password"
		if rep.Redis.Authenticated {
			auth = "authenticated"
		}
		fmt.Fprintf(w, "       %s; user %s, %s\n", tlsLine, rep.Redis.User, auth)
		if rep.For != "" {
			printPermissions(w, rep.For, rep.Mirror, "user "+rep.Redis.User, rep.Redis.PermissionsProbe, rep.Redis.Permissions)
		}
	}
	fmt.Fprintf(w, "kafka  %-4s %s\n", mark(rep.Kafka.OK), strings.Join(rep.Kafka.Brokers, ","))
	if rep.Kafka.ClusterID != "" {
		fmt.Fprintf(w, "       cluster %s, brokers %s\n", rep.Kafka.ClusterID, strings.Join(rep.Kafka.Members, " "))
		var apis []string
		for _, api := range kafkaAPIs {
			name := kmsg.NameForKey(int16(api.key))
			apis = append(apis, name+" "+rep.Kafka.APIs[name])
		}
		fmt.Fprintf(w, "       apis: %s\n", strings.Join(apis, ", "))
		tlsLine := "no TLS"
		if rep.Kafka.TLS != "" {
			version := rep.Kafka.TLSVersion
			if version == "" {
				version = "TLS"
			}
			tlsLine = fmt.Sprintf("%s, certificate %s for %s", version, rep.Kafka.TLS, rep.Kafka.ServerName)
			if rep.Kafka.ClientCert {
				tlsLine += ", client certificate sent"
			}
		}
		auth := "no SASL"
		switch {
		case rep.Kafka.SASL != "" && rep.Kafka.User != "":
			auth = fmt.Sprintf("SASL %s as %s, authenticated", rep.Kafka.SASL, rep.Kafka.User)
		case rep.Kafka.SASL != "":
			auth = fmt.Sprintf("SASL %s, authenticated", rep.Kafka.SASL)
		}
		fmt.Fprintf(w, "       %s; %s\n", tlsLine, auth)
		if rep.For != "" {
			printPermissions(w, rep.For, rep.Mirror, rep.Kafka.Principal, "authorized operations", rep.Kafka.Permissions)
		}
	}
}

// parseInfo reads the key:value lines of an INFO reply.
func parseInfo(info string) map[string]string {
	fields := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			fields[k] = v
		}
	}
	return fields
}

// parseVersion reads "7.0.15" as 7, 0; anything unreadable as 0, 0.
func parseVersion(v string) (major, minor int) {
	fmt.Sscanf(v, "%d.%d", &major, &minor)
	return major, minor
}

// printPermissions is the report's line on a side's permissions for the
// mirror of check --for, then one line per permission not checked (the
// missing ones are the problems printed after the report).
func printPermissions(w io.Writer, direction, name, who, probe string, perms []permissionReport) {
	missing, unchecked := 0, 0
	for _, p := range perms {
		switch {
		case p.Note != "":
			unchecked++
		case !p.OK:
			missing++
		}
	}
	verdict := "all granted"
	if missing > 0 {
		verdict = fmt.Sprintf("%d missing", missing)
	}
	if unchecked > 0 {
		verdict += fmt.Sprintf(", %d not checked", unchecked)
	}
	fmt.Fprintf(w, "       %s mirror %q: %d permissions of %s asked (%s): %s\n", direction, name, len(perms), who, probe, verdict)
	for _, p := range perms {
		if p.Note != "" {
			fmt.Fprintf(w, "         %s: %s\n", p.Name, p.Note)
		}
	}
}
