// Package endpoint turns the connection strings a user types (a Redis URL, a
// Kafka broker list) into client options, with time bounds on every
// connection attempt and passwords redacted from everything shown.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
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

// RedisOptions are the TLS and authentication settings given beside a
// Redis URL. Each one names the field its messages name it by.
type RedisOptions struct {
	// CAFile holds the PEM certificates of the CAs that sign the server's
	// certificate, in place of the system's roots ({RedisCA}).
	CAFile string
	// CertFile and KeyFile are the client's certificate and key, for a
	// server that verifies clients (mutual TLS; {RedisCert}, {RedisKey}).
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must hold, when it
	// is not the URL's host ({RedisTLSServerName}).
	ServerName string
	// Insecure skips the verification of the server's certificate: for
	// tests only ({RedisTLSInsecure}).
	Insecure bool
	// User is the ACL user when the URL names none.
	User string
	// Password is the password when neither the URL nor PasswordFile
	// gives one.
	Password string
	// PasswordFile holds the password (one line; a final line break is
	// not part of it), when the URL gives none ({RedisPasswordFile}).
	PasswordFile string
}

// ParseRedisURL parses redis://[user:password@]host:port[/db] or rediss:// for
// TLS. The result is validated but not dialled.
func ParseRedisURL(raw string) (Redis, error) { return ParseRedis(raw, RedisOptions{}) }

// ParseRedis parses a Redis URL as ParseRedisURL does and applies o: the
// TLS settings (only with rediss://) and the user and password the URL
// does not give. A password given both in the URL and in a file is
// refused. The files are read now, so a wrong path is an error here.
func ParseRedis(raw string, o RedisOptions) (Redis, error) {
	r, err := parseRedisURL(raw)
	if err != nil {
		return r, err
	}
	if err := r.apply(o); err != nil {
		return Redis{}, fmt.Errorf("redis %s: %w", r.Redacted(), err)
	}
	return r, nil
}

func (o RedisOptions) tlsFiles() tlsFiles {
	return tlsFiles{CAFile: o.CAFile, CertFile: o.CertFile, KeyFile: o.KeyFile, ServerName: o.ServerName, Insecure: o.Insecure}
}

// apply sets o's TLS and authentication settings on r's options.
func (r *Redis) apply(o RedisOptions) error {
	opt := &r.Option
	files := o.tlsFiles()
	if opt.TLSConfig == nil {
		if set := files.given(redisTLSFields); len(set) > 0 {
			return setting.Errorf("{" + set[0] + "} applies only to TLS; use a rediss:// URL in {Redis}")
		}
	} else {
		cfg, err := files.config(opt.TLSConfig, redisTLSFields)
		if err != nil {
			return err
		}
		opt.TLSConfig = cfg
	}
	if opt.Username == "" {
		opt.Username = o.User
	}
	switch {
	case o.PasswordFile != "" && opt.Password != "":
		return setting.Errorf("the password is given twice, in {Redis} and in {RedisPasswordFile}; give it once")
	case o.PasswordFile != "":
		f, err := newSecretFile(o.PasswordFile, "RedisPasswordFile", "password")
		if err != nil {
			return err
		}
		opt.Password = f.get()
		// Read again when it changed, so a rotated password is used from
		// the next connection on.
		user := opt.Username
		opt.AuthCredentialsFn = func(rueidis.AuthCredentialsContext) (rueidis.AuthCredentials, error) {
			return rueidis.AuthCredentials{Username: user, Password: f.get()}, nil
		}
	case opt.Password == "":
		opt.Password = o.Password
	}
	return nil
}

// TLS says whether the connection is made with TLS.
func (r Redis) TLS() bool { return r.Option.TLSConfig != nil }

// Insecure says whether the server's certificate goes unverified.
func (r Redis) Insecure() bool { return r.TLS() && r.Option.TLSConfig.InsecureSkipVerify }

// URLHasPassword says whether the URL itself holds a password.
func (r Redis) URLHasPassword() bool {
	u, err := url.Parse(r.URL)
	if err != nil || u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}

func parseRedisURL(raw string) (Redis, error) {
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
	if (u.User == nil && strings.Contains(raw, "@")) || u.Fragment != "" || strings.HasSuffix(raw, "#") {
		// A password holding ?, # or / unencoded ends the URL's host
		// early: the rest would become a path, parameters or a fragment,
		// and the password go unused (or shown).
		return Redis{}, fmt.Errorf("redis URL %q: its user or password holds a character that ends the host (?, # or /); percent-encode them in the URL (%%3F, %%23, %%2F; %%40 for an @ elsewhere), or give the password in a file or the environment", redactURL(raw))
	}
	if u.Scheme != "unix" && u.Host == "" {
		return Redis{}, fmt.Errorf("redis URL %q has no host; use redis://host:port[/db]", redactURL(raw))
	}
	if err := checkRedisQuery(u); err != nil {
		return Redis{}, fmt.Errorf("redis URL %q: %w", redactURL(raw), err)
	}
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		// The parser's text may quote a part of the URL: mask any word
		// that could hold credentials.
		words := strings.Fields(strings.TrimPrefix(err.Error(), "redis: "))
		for i, w := range words {
			words[i] = maskCredentials(w)
		}
		return Redis{}, fmt.Errorf("redis URL %q: %s", redactURL(raw), strings.Join(words, " "))
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
			// Quoted when it holds what a message cannot show as it
			// is (a line break given as %0A, say).
			if q := strconv.Quote(k); q[1:len(q)-1] != k || k == "" {
				k = q
			}
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
	if hint := tlsHint(err, redisTLSFields, r.TLS() && len(r.Option.TLSConfig.Certificates) > 0); hint != "" {
		// The hint names settings as {Field}: part of the format.
		return setting.Errorf("redis %s: "+strings.ReplaceAll(hint, "%", "%%")+" (%w)", r.Addr(), err)
	}
	msg := err.Error()
	var hint string
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "invalid password"), strings.Contains(msg, "AUTH failed"):
		return setting.Errorf("redis %s: authentication refused for user %s: wrong password, or no such user, or the user is off; check the user and password ({Redis}, {RedisPasswordFile} or the environment) (%w)", r.Addr(), r.user(), err)
	case strings.Contains(msg, "NOAUTH"):
		return setting.Errorf("redis %s: the server requires a password; give the user and password ({Redis}, {RedisPasswordFile} or the environment) (%w)", r.Addr(), err)
	case strings.Contains(msg, "NOPERM"):
		return setting.Errorf("redis %s: user %s may not run a command xmirror needs on connecting; grant it (see the README's least-privilege ACL rules) (%w)", r.Addr(), r.user(), err)
	case strings.Contains(msg, "connection refused"):
		hint = "connection refused; is redis-server running there?"
	case strings.Contains(msg, "no such host"):
		hint = "unknown host; check the URL"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "i/o timeout"):
		if r.TLS() {
			hint = "timed out; a server that does not speak TLS never answers the TLS handshake: is it a plain port (use redis://), or is the server down?"
		} else {
			hint = "timed out; is the server up, and is it perhaps a TLS port (use rediss://)?"
		}
	case strings.Contains(msg, "EOF"), strings.Contains(msg, "connection reset"):
		if !r.TLS() {
			hint = "connection closed by the server; is it a Redis server, or does it expect TLS (use rediss://)?"
		} else if len(r.Option.TLSConfig.Certificates) == 0 {
			return setting.Errorf("redis %s: connection closed by the server right after the TLS handshake; a server that requires a client certificate does that: give one with {RedisCert} and {RedisKey} (%w)", r.Addr(), err)
		} else {
			hint = "connection closed by the server right after the TLS handshake; does it accept this client certificate, and is it a Redis server?"
		}
	case strings.Contains(msg, "unexpected"), strings.Contains(msg, "protocol"), strings.Contains(msg, "unknown"):
		hint = "the server did not answer like Redis; is the port right?"
	}
	if hint == "" {
		return fmt.Errorf("redis %s: %w", r.Addr(), err)
	}
	return fmt.Errorf("redis %s: %s (%w)", r.Addr(), hint, err)
}

// user names the ACL user a connection logs in as, for messages.
func (r Redis) user() string {
	if r.Option.Username == "" {
		return "default"
	}
	return fmt.Sprintf("%q", r.Option.Username)
}

// redactURL hides the password of a URL, keeping everything else.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Opaque == "" && u.User != nil && u.Host != "" && strings.Count(raw, "@") == 1 {
		return u.Redacted()
	}
	// Not a URL with an authority (a scheme mistyped or missing, a
	// malformed one): hide all before the last @, which could be
	// credentials, keeping a scheme.
	return maskCredentials(raw)
}

// maskCredentials hides what comes before the last @ of s (after a
// scheme://), where credentials would be.
func maskCredentials(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	if scheme := strings.Index(s, "://"); scheme >= 0 && scheme < at {
		return s[:scheme+3] + "xxxxx" + s[at:]
	}
	return "xxxxx" + s[at:]
}
