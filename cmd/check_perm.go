package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/k2r"
	"github.com/xmirror/xmirror/mirror/r2k"
	"github.com/xmirror/xmirror/mirror/setting"
)

// The directions check --for takes.
const (
	forRedisToKafka = "redis-to-kafka"
	forKafkaToRedis = "kafka-to-redis"
)

// checkForFlags are check's flags that name a mirror, as the direction's
// command takes them, so that check can tell whether its user may run it.
type checkForFlags struct {
	direction        string
	streams, topics  []string
	name, group      string
	createTopic      bool
	claimIdle        time.Duration
	trimSource       bool
	deadLetterStream string
}

func (f *checkForFlags) bind(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.direction, "for", "", "also check that the user may run this mirror: redis-to-kafka or kafka-to-redis (with the flags below as that command takes them)")
	fs.StringArrayVarP(&f.streams, "stream", "s", nil, "with --for: redis-to-kafka's source stream (repeat for several), or kafka-to-redis's destination stream template")
	fs.StringArrayVarP(&f.topics, "topic", "t", nil, "with --for: redis-to-kafka's topic template, or kafka-to-redis's topic (repeat for several)")
	fs.StringVar(&f.name, "name", "", "with --for: the mirror's name (default: derived as the direction's command derives it)")
	fs.StringVar(&f.group, "group", "", "with --for redis-to-kafka: the consumer group (default xmirror:<name>)")
	fs.BoolVar(&f.createTopic, "create-topic", false, "with --for redis-to-kafka: the mirror creates missing topics (needs Create on them)")
	fs.DurationVar(&f.claimIdle, "claim-idle", 0, "with --for redis-to-kafka: the mirror takes over idle entries (needs XAUTOCLAIM and XCLAIM)")
	fs.BoolVar(&f.trimSource, "trim-source", false, "with --for redis-to-kafka: the mirror trims its streams (needs XTRIM)")
	fs.StringVar(&f.deadLetterStream, "dead-letter-stream", "", "with --for: the mirror runs with --on-error dead-letter into this stream (needs XADD on it)")
}

// checkFor is the mirror check --for describes: what it needs of each
// server.
type checkFor struct {
	direction string
	name      string
	redis     []endpoint.RedisCommand
	kafka     []endpoint.KafkaPermission
	// leaseKind is the kind of the mirror's lease; a transactional ID is
	// probed only while no run holds it.
	leaseKind string
}

// resolve builds the mirror's Config as its command would and lists what it
// needs; nil without --for. Flags that need --for, or that the direction
// has not, are usage errors, all reported at once.
func (f *checkForFlags) resolve(c *cobra.Command, redisEP endpoint.Redis, kafkaEP endpoint.Kafka) (*checkFor, error) {
	fs := c.Flags()
	var problems []string
	if f.direction == "" {
		for _, n := range []string{"stream", "topic", "name", "group", "create-topic", "claim-idle", "trim-source", "dead-letter-stream"} {
			if fs.Changed(n) {
				problems = append(problems, fmt.Sprintf("--%s needs --for redis-to-kafka or --for kafka-to-redis", n))
			}
		}
		if len(problems) > 0 {
			return nil, usageErrorf("%s", strings.Join(problems, "; "))
		}
		return nil, nil
	}
	problems = append(problems, emptyFlags(c, "name", "group", "dead-letter-stream")...)
	for _, s := range append(append([]string{}, f.streams...), f.topics...) {
		if s == "" {
			problems = append(problems, "--stream and --topic must not be empty")
			break
		}
	}
	var cf *checkFor
	var invalid error // the Config's problems, as its command finds them
	var names setting.Names
	switch f.direction {
	case forRedisToKafka:
		cfg := r2k.Defaults()
		cfg.Redis, cfg.Kafka = redisEP, kafkaEP
		cfg.Streams, cfg.Group, cfg.CreateTopic, cfg.ClaimIdle, cfg.TrimSource = f.streams, f.group, f.createTopic, f.claimIdle, f.trimSource
		switch len(f.topics) {
		case 0:
		case 1:
			cfg.Topic = f.topics[0]
		default:
			problems = append(problems, "--for redis-to-kafka takes one --topic (a template in which {stream} is the stream's name)")
		}
		if f.deadLetterStream != "" {
			cfg.OnError, cfg.DeadLetterStream = mirror.OnErrorDeadLetter, f.deadLetterStream
		}
		cfg.Name = f.name
		if !fs.Changed("name") {
			cfg.Name = r2k.DefaultName(cfg)
		}
		invalid, names = cfg.Validate(), flagNames(redisToKafkaFlags)
		if len(f.streams) == 0 {
			// check names the streams themselves: it has no patterns.
			invalid = withoutProblemsOf(invalid, "Streams")
			problems = append(problems, "--stream is required (repeat it for several)")
		}
		cf = &checkFor{direction: f.direction, name: cfg.Name, redis: r2k.RedisPermissions(cfg), kafka: r2k.KafkaPermissions(cfg), leaseKind: checkpoint.KindRedisToKafka}
	case forKafkaToRedis:
		cfg := k2r.Defaults()
		cfg.Redis, cfg.Kafka = redisEP, kafkaEP
		cfg.Topics = f.topics
		switch len(f.streams) {
		case 0:
		case 1:
			cfg.Stream = f.streams[0]
		default:
			problems = append(problems, "--for kafka-to-redis takes one --stream (a template in which {topic} and {partition} are replaced)")
		}
		for _, n := range []string{"group", "create-topic", "claim-idle", "trim-source"} {
			if fs.Changed(n) {
				problems = append(problems, fmt.Sprintf("--%s is for --for redis-to-kafka", n))
			}
		}
		if f.deadLetterStream != "" {
			cfg.OnError, cfg.DeadLetterStream = mirror.OnErrorDeadLetter, f.deadLetterStream
		}
		cfg.Name = f.name
		if !fs.Changed("name") {
			cfg.Name = k2r.DefaultName(cfg)
		}
		invalid, names = cfg.Validate(), flagNames(kafkaToRedisFlags)
		if len(f.topics) == 0 {
			invalid = withoutProblemsOf(invalid, "Topics")
			problems = append(problems, "--topic is required (repeat it for several)")
		}
		cf = &checkFor{direction: f.direction, name: cfg.Name, redis: k2r.RedisPermissions(cfg), kafka: k2r.KafkaPermissions(cfg), leaseKind: checkpoint.KindKafkaToRedis}
	default:
		return nil, usageErrorf("--for must be %s or %s, got %q", forRedisToKafka, forKafkaToRedis, f.direction)
	}
	if err := commandError(invalid, names, problems); err != nil {
		return nil, usageError(err)
	}
	return cf, nil
}

// withoutProblemsOf is a Config's error without the problems of field,
// which the check reports as its own.
func withoutProblemsOf(err error, field string) error {
	var ce *setting.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	kept := &setting.ConfigError{}
	for _, p := range ce.Problems {
		if p.Field != field {
			kept.Problems = append(kept.Problems, p)
		}
	}
	if len(kept.Problems) == 0 {
		return nil
	}
	return kept
}

// permissionReport is one permission of a check --for, for the report.
type permissionReport struct {
	// Name says what is needed: "XACK on stream orders", "Write on topic
	// orders".
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Grant is what grants it, when it is missing.
	Grant string `json:"grant,omitempty"`
	// Note says why it was not checked ("" when it was).
	Note string `json:"note,omitempty"`
}

// leaseState is what the Redis side learned of the mirror's lease, for the
// Kafka side: a transactional ID is probed only while no run holds it.
type leaseState struct {
	held, known bool
	why         string
}

// checkRedisPermissions asks whether the user may run every command of
// the mirror; it returns one problem line per missing permission (a
// command, with the keys it was refused on, or a key refused whatever the
// command).
func checkRedisPermissions(ctx context.Context, cl rueidis.Client, ep endpoint.Redis, user string, cf *checkFor, rep *redisReport) []string {
	results, probe, err := endpoint.CheckRedisPermissions(ctx, cl, user, cf.redis)
	rep.PermissionsProbe = probe
	if err != nil {
		return []string{fmt.Sprintf("redis %s: could not check the permissions of user %s for %s: %v", ep.Addr(), user, cf.direction, err)}
	}
	var problems []string
	byRule := map[string][]endpoint.RedisCommand{}
	var rules []string
	byKey := map[string][]endpoint.RedisCommand{}
	var keys []string
	for _, r := range results {
		cmd := r.Command
		pr := permissionReport{Name: redisNeedName(cmd), OK: r.OK}
		switch {
		case r.OK:
		case r.Unchecked != "":
			pr.Note = r.Unchecked
			if !strings.HasPrefix(pr.Note, "not checked") {
				pr.Note = "not checked: " + pr.Note
			}
		case r.KeyDenied:
			pr.Grant = "ACL SETUSER " + user + " ~" + cmd.Pattern()
			if len(byKey[cmd.Key]) == 0 {
				keys = append(keys, cmd.Key)
			}
			byKey[cmd.Key] = append(byKey[cmd.Key], cmd)
		default:
			pr.Grant = redisGrant(user, []endpoint.RedisCommand{cmd})
			if len(byRule[cmd.Rule]) == 0 {
				rules = append(rules, cmd.Rule)
			}
			byRule[cmd.Rule] = append(byRule[cmd.Rule], cmd)
		}
		rep.Permissions = append(rep.Permissions, pr)
	}
	for _, rule := range rules {
		cmds := byRule[rule]
		problems = append(problems, fmt.Sprintf("redis %s: user %s may not run %s%s: grant it (%s)", ep.Addr(), user, cmds[0].Name(), onKeys(cmds), redisGrant(user, cmds)))
	}
	for _, k := range keys {
		cmds := byKey[k]
		var names []string
		for _, c := range cmds {
			names = append(names, c.Name())
		}
		problems = append(problems, fmt.Sprintf("redis %s: user %s may not touch %s %s (%s): grant it (ACL SETUSER %s ~%s)", ep.Addr(), user, cmds[0].What, k, strings.Join(names, ", "), user, cmds[0].Pattern()))
	}
	return problems
}

// redisNeedName is a command on its key: "XACK on stream orders".
func redisNeedName(c endpoint.RedisCommand) string {
	if c.Key == "" {
		return c.Name()
	}
	return fmt.Sprintf("%s on %s %s", c.Name(), c.What, c.Key)
}

// onKeys is " on stream a, stream b" for the keys of cmds ("" none).
func onKeys(cmds []endpoint.RedisCommand) string {
	var on []string
	for _, c := range cmds {
		if c.Key != "" {
			on = append(on, c.What+" "+c.Key)
		}
	}
	if len(on) == 0 {
		return ""
	}
	return " on " + strings.Join(on, ", ")
}

// redisGrant is the ACL SETUSER that grants cmds (one rule) on their keys.
func redisGrant(user string, cmds []endpoint.RedisCommand) string {
	g := "ACL SETUSER " + user + " +" + cmds[0].Rule
	for _, c := range cmds {
		if c.Key != "" {
			g += " ~" + c.Pattern()
		}
	}
	return g
}

// leaseOf says whether a run of cf holds its lease now.
func leaseOf(ctx context.Context, cl rueidis.Client, cf *checkFor) leaseState {
	key := checkpoint.LeaseKey(cf.leaseKind, cf.name)
	n, err := cl.Do(ctx, cl.B().Exists().Key(key).Build()).AsInt64()
	if err != nil {
		return leaseState{why: fmt.Sprintf("could not tell from Redis whether the mirror is running (EXISTS %s: %v)", key, err)}
	}
	return leaseState{held: n > 0, known: true}
}

// kafkaPrincipal is the principal the brokers know the client as, for
// kafka-acls.sh, without its "User:" (see endpoint.Kafka.Principal).
func kafkaPrincipal(ep endpoint.Kafka) string { return strings.TrimPrefix(ep.Principal(), "User:") }

// checkKafkaPermissions asks whether the client may do every operation
// of the mirror; it returns one problem line per missing one.
func checkKafkaPermissions(ctx context.Context, cl *kgo.Client, ep endpoint.Kafka, cf *checkFor, lease <-chan leaseState, rep *kafkaReport) []string {
	probeTxn, why := false, ""
	for _, p := range cf.kafka {
		if p.Resource != endpoint.KafkaTransactionalID {
			continue
		}
		var ls leaseState
		select {
		case ls = <-lease:
		case <-ctx.Done():
			ls = leaseState{why: "no answer from Redis in time on whether the mirror is running"}
		}
		switch {
		case !ls.known:
			why = ls.why
		case ls.held:
			why = "the mirror is running"
		default:
			probeTxn = true
		}
		break
	}
	principal := kafkaPrincipal(ep)
	results := endpoint.CheckKafkaPermissions(ctx, cl, cf.kafka, probeTxn, why)
	problems, perms, who := kafkaPermissionLines(ep, cf, principal, results)
	rep.Principal, rep.Permissions = who, perms
	return problems
}

// kafkaPermissionLines are the problem lines and the report of the
// results of cf's Kafka permissions: one line per missing permission,
// with the kafka-acls.sh command that grants it to principal ("" when
// unknown), and one per topic that does not exist.
func kafkaPermissionLines(ep endpoint.Kafka, cf *checkFor, principal string, results []endpoint.KafkaPermissionResult) (problems []string, perms []permissionReport, who string) {
	who = "the client's principal"
	if principal != "" {
		who = "principal User:" + principal
		if note := ep.PrincipalNote(); note != "" {
			who += " (" + note + ")"
		}
	} else {
		principal = "<principal>"
	}
	created := map[string]bool{}
	for _, p := range cf.kafka {
		if p.IfMissing {
			created[p.Name] = true
		}
	}
	for _, r := range results {
		pr := permissionReport{Name: kafkaNeedName(r.KafkaPermission), OK: r.OK, Note: r.Unchecked}
		switch {
		case r.OK:
		case strings.Contains(r.Unchecked, "does not exist yet") && created[r.Name]:
			pr.Note = "not checked: the mirror creates the topic (--create-topic)"
		case strings.Contains(r.Unchecked, "does not exist yet"):
			problems = append(problems, fmt.Sprintf("kafka %s: topic %q does not exist; create it%s", ep, r.Name, map[bool]string{true: ", or pass --create-topic", false: ""}[cf.direction == forRedisToKafka]))
		case r.Unchecked == "":
			pr.Grant = kafkaGrant(ep, principal, r.KafkaPermission)
			problems = append(problems, fmt.Sprintf("kafka %s: %s may not %s: grant it (%s)", ep, who, kafkaNeedName(r.KafkaPermission), pr.Grant))
		}
		perms = append(perms, pr)
	}
	return dedupe(problems), perms, who
}

// kafkaNeedName is an operation on its resource: "Write on topic orders".
func kafkaNeedName(p endpoint.KafkaPermission) string {
	if p.Resource == endpoint.KafkaCluster {
		return p.Operation + " on the cluster"
	}
	return fmt.Sprintf("%s on %s %s", p.Operation, p.Resource, p.Name)
}

// kafkaGrant is the kafka-acls.sh command that grants p.
func kafkaGrant(ep endpoint.Kafka, principal string, p endpoint.KafkaPermission) string {
	return endpoint.GrantCommand(ep.Brokers[0], ep.TLS() || ep.SASLMechanism() != "", "User:"+principal, p.Operation, p.Resource, p.Name)
}

// dedupe drops repeated lines, keeping the first of each.
func dedupe(lines []string) []string {
	seen := map[string]bool{}
	out := lines[:0]
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}
