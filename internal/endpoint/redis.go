// Package endpoint turns the connection strings a user types (a Redis URL, a
// Kafka broker list) into client options, with time bounds on every
// connection attempt and passwords redacted from everything shown.
package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/mirror/setting"
)

// DefaultRedisURL is where a local redis-server listens out of the box.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// DefaultDialTimeout bounds each TCP connect (and TLS handshake): long enough
// for a slow network, short enough that a wrong address fails fast.
const DefaultDialTimeout = 5 * time.Second

// Redis is a parsed Redis URL.
type Redis struct {
	// URL is the URL as given, for error messages use Redacted.
	URL    string
	Option rueidis.ClientOption
}

// ParseRedisURL parses redis://[user:password@]host:port[/db] or rediss:// for
// TLS. The result is validated but not dialled.
func ParseRedisURL(raw string) (Redis, error) {
	if raw == "" {
		return Redis{}, errors.New("redis URL is empty; use redis://host:port[/db]")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Redis{}, fmt.Errorf("redis URL %q is malformed; use redis://[user:password@]host:port[/db]", redactURL(raw))
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return Redis{}, fmt.Errorf("redis URL %q has scheme %q; use redis:// (or rediss:// for TLS)", redactURL(raw), u.Scheme)
	}
	if u.Scheme != "unix" && u.Host == "" {
		return Redis{}, fmt.Errorf("redis URL %q has no host; use redis://host:port[/db]", redactURL(raw))
	}
	if err := checkRedisQuery(u); err != nil {
		return Redis{}, fmt.Errorf("redis URL %q: %w", redactURL(raw), err)
	}
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		return Redis{}, fmt.Errorf("redis URL %q: %s", redactURL(raw), strings.TrimPrefix(err.Error(), "redis: "))
	}
	if opt.SelectDB < 0 {
		return Redis{}, fmt.Errorf("redis URL %q: database number must be 0 or more", redactURL(raw))
	}
	if opt.Dialer.Timeout == 0 {
		opt.Dialer.Timeout = DefaultDialTimeout
	}
	if opt.ConnWriteTimeout == 0 {
		// A stalled server must be noticed in seconds, not after the
		// minutes TCP keep-alive takes by default.
		opt.ConnWriteTimeout = 10 * time.Second
	}
	// xmirror never uses client-side caching; disabling it also lets the
	// client talk to servers that lack RESP3.
	opt.DisableCache = true
	return Redis{URL: raw, Option: opt}, nil
}

// redisParams are the URL parameters xmirror applies (through rueidis's
// URL parser), each checked here; any other parameter is refused rather
// than ignored. Several addresses (addr) and Sentinel (master_set) are
// not supported; xmirror never caches (client_cache) and retries by itself
// (max_retries).
var redisParams = []string{"db", "dial_timeout", "write_timeout", "client_name", "protocol", "skip_verify"}

// checkRedisQuery refuses unknown, repeated or malformed URL parameters,
// naming them.
func checkRedisQuery(u *url.URL) error {
	if u.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fmt.Errorf("malformed parameters after '?': %v", err)
	}
	var unknown []string
	for k := range q {
		if !slices.Contains(redisParams, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown parameter(s) %s; xmirror takes only %s (skip_verify with rediss://)", strings.Join(unknown, ", "), strings.Join(redisParams, ", "))
	}
	for _, k := range redisParams {
		if len(q[k]) > 1 {
			return fmt.Errorf("parameter %s is given %d times; give it once", k, len(q[k]))
		}
	}
	for _, k := range []string{"dial_timeout", "write_timeout"} {
		if !q.Has(k) {
			continue
		}
		if d, err := time.ParseDuration(q.Get(k)); err != nil || d <= 0 {
			return fmt.Errorf("parameter %s=%q must be a positive duration such as 5s", k, q.Get(k))
		}
	}
	if q.Has("protocol") && q.Get("protocol") != "2" && q.Get("protocol") != "3" {
		return fmt.Errorf("parameter protocol=%q must be 2 (RESP2) or 3 (RESP3)", q.Get("protocol"))
	}
	if q.Has("skip_verify") && u.Scheme != "rediss" {
		return fmt.Errorf("parameter skip_verify applies only to TLS (rediss://)")
	}
	if q.Has("db") {
		if path := strings.TrimPrefix(u.Path, "/"); path != "" && path != q.Get("db") {
			return fmt.Errorf("the database is given twice, /%s and db=%s; give it once", path, q.Get("db"))
		}
	}
	return nil
}

// Redacted is the URL with any password replaced, safe to log.
func (r Redis) Redacted() string { return redactURL(r.URL) }

// Addr is the first address the client dials, for messages.
func (r Redis) Addr() string {
	if len(r.Option.InitAddress) > 0 {
		return r.Option.InitAddress[0]
	}
	return r.Redacted()
}

// Connect dials Redis and checks it answers, within timeout. The error says
// which endpoint failed and, where it is recognisable, why.
func (r Redis) Connect(ctx context.Context, timeout time.Duration) (rueidis.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	opt := r.Option
	type result struct {
		c   rueidis.Client
		err error
	}
	// rueidis.NewClient dials without a context; run it aside so the
	// caller's deadline still bounds it.
	done := make(chan result, 1)
	go func() {
		c, err := rueidis.NewClient(opt)
		done <- result{c, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		go func() {
			if res := <-done; res.c != nil {
				res.c.Close()
			}
		}()
		return nil, fmt.Errorf("redis %s: no answer within %s; is the server up and the URL right?", r.Addr(), timeout)
	}
	if res.err != nil {
		return nil, r.explain(res.err)
	}
	if err := res.c.Do(ctx, res.c.B().Ping().Build()).Error(); err != nil {
		res.c.Close()
		return nil, r.explain(err)
	}
	return res.c, nil
}

// IsCluster says whether c talks to a Redis Cluster, which neither direction
// supports yet: a cluster client routes each command by its key's slot, and
// the mirrors send commands over several streams and their checkpoints at
// once, which a cluster refuses unless all share one slot. It is one when
// the client found one (rueidis reaches a cluster node through a cluster
// client), or when the server says so in INFO. A server that refuses INFO (an ACL) is judged by the
// client alone, which is what decides how commands are routed.
func IsCluster(ctx context.Context, c rueidis.Client) bool {
	if c.Mode() == rueidis.ClientModeCluster {
		return true
	}
	info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return false
	}
	for _, line := range strings.Split(info, "\n") {
		if strings.TrimSpace(line) == "redis_mode:cluster" {
			return true
		}
	}
	return false
}

// RefuseCluster returns an error naming the endpoint and the command when c
// talks to a Redis Cluster, which command does not support yet.
func (r Redis) RefuseCluster(ctx context.Context, c rueidis.Client, command string) error {
	if !IsCluster(ctx, c) {
		return nil
	}
	return setting.Errorf("redis %s is a Redis Cluster, which %s does not support yet; point {Redis} at a standalone Redis (a primary with replicas works)", r.Addr(), command)
}

// explain turns a client error into a one-line message with a hint.
func (r Redis) explain(err error) error {
	msg := err.Error()
	var hint string
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "invalid password"), strings.Contains(msg, "AUTH failed"):
		hint = "authentication refused; check the user and password in the URL"
	case strings.Contains(msg, "connection refused"):
		hint = "connection refused; is redis-server running there?"
	case strings.Contains(msg, "no such host"):
		hint = "unknown host; check the URL"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		hint = "the server does not speak TLS; use redis:// instead of rediss://"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "i/o timeout"):
		if r.Option.TLSConfig != nil {
			hint = "timed out; is the server up, and does it speak TLS (rediss://)?"
		} else {
			hint = "timed out; is the server up, and is it perhaps a TLS port (use rediss://)?"
		}
	case strings.Contains(msg, "EOF"), strings.Contains(msg, "connection reset"):
		if r.Option.TLSConfig == nil {
			hint = "connection closed by the server; is it a Redis server, or does it expect TLS (rediss://)?"
		} else {
			hint = "connection closed by the server; is it a Redis server with TLS?"
		}
	case strings.Contains(msg, "unexpected"), strings.Contains(msg, "protocol"), strings.Contains(msg, "unknown"):
		hint = "the server did not answer like Redis; is the port right?"
	case isTLSError(err):
		hint = "TLS handshake failed; check the certificate or use redis:// for a plain server"
	}
	if hint == "" {
		return fmt.Errorf("redis %s: %w", r.Addr(), err)
	}
	return fmt.Errorf("redis %s: %s (%w)", r.Addr(), hint, err)
}

func isTLSError(err error) bool {
	var rec tls.RecordHeaderError
	var cert *tls.CertificateVerificationError
	return errors.As(err, &rec) || errors.As(err, &cert)
}

// redactURL hides the password of a URL, keeping everything else.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Unparseable: hide anything that could be credentials.
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			if scheme := strings.Index(raw, "://"); scheme >= 0 && scheme < at {
				return raw[:scheme+3] + "xxxxx" + raw[at:]
			}
			return "xxxxx" + raw[at:]
		}
		return raw
	}
	return u.Redacted()
}
