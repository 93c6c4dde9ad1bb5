package cmd

import (
	"errors"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror/setting"
)

// Environment variables that stand in for the connection flags, and the
// Redis user and password, which have no flag: a password in a flag would
// show in ps.
const (
	envRedis               = "XMIRROR_REDIS"
	envBrokers             = "XMIRROR_BROKERS"
	envRedisCA             = "XMIRROR_REDIS_CA"
	envRedisCert           = "XMIRROR_REDIS_CERT"
	envRedisKey            = "XMIRROR_REDIS_KEY"
	envRedisTLSServerName  = "XMIRROR_REDIS_TLS_SERVER_NAME"
	envRedisTLSInsecure    = "XMIRROR_REDIS_TLS_INSECURE"
	envRedisPasswordFile   = "XMIRROR_REDIS_PASSWORD_FILE"
	envRedisUser           = "XMIRROR_REDIS_USER"
	envRedisPassword       = "XMIRROR_REDIS_PASSWORD"
	redisPasswordAlternate = "XMIRROR_REDIS_PASSWORD, --redis-password-file or the URL in XMIRROR_REDIS"
)

// connFlags are the connection flags of a command that talks to Redis,
// Kafka or both.
type connFlags struct {
	redis   string
	brokers string

	redisCA, redisCert, redisKey string
	redisServerName              string
	redisInsecure                bool
	redisPasswordFile            string
}

func (f *connFlags) bind(c *cobra.Command, redis, kafka bool) {
	fs := c.Flags()
	if redis {
		fs.StringVar(&f.redis, "redis", endpoint.DefaultRedisURL, "Redis URL, redis://[user:password@]host:port[/db] or rediss:// for TLS (env "+envRedis+")")
		fs.StringVar(&f.redisCA, "redis-ca", "", "rediss://: PEM file of the CAs that sign the server's certificate, instead of the system's (env "+envRedisCA+")")
		fs.StringVar(&f.redisCert, "redis-cert", "", "rediss://: PEM file of the client certificate, for a server that verifies clients (mutual TLS; env "+envRedisCert+")")
		fs.StringVar(&f.redisKey, "redis-key", "", "rediss://: PEM file of --redis-cert's private key (env "+envRedisKey+")")
		fs.StringVar(&f.redisServerName, "redis-tls-server-name", "", "rediss://: the name the server's certificate must hold, when not the URL's host (env "+envRedisTLSServerName+")")
		fs.BoolVar(&f.redisInsecure, "redis-tls-insecure", false, "rediss://: do not verify the server's certificate; for tests only (env "+envRedisTLSInsecure+")")
		fs.StringVar(&f.redisPasswordFile, "redis-password-file", "", "file holding the Redis password on its first line, when the URL gives none (env "+envRedisPasswordFile+"; the user from the URL or "+envRedisUser+", a password also from "+envRedisPassword+")")
	}
	if kafka {
		fs.StringVar(&f.brokers, "brokers", endpoint.DefaultBrokers, "Kafka bootstrap brokers, host:port[,host:port...] (env "+envBrokers+")")
	}
}

// resolve applies the environment and parses the endpoints; a malformed one
// is a usage error. A password given on the command line and a server whose
// certificate goes unverified are warned about, once each.
func (f *connFlags) resolve(a *app, c *cobra.Command, redis, kafka bool) (endpoint.Redis, endpoint.Kafka, error) {
	var r endpoint.Redis
	var k endpoint.Kafka
	var err error
	if redis {
		o := endpoint.RedisOptions{
			CAFile:       a.envOr(c, "redis-ca", envRedisCA, f.redisCA),
			CertFile:     a.envOr(c, "redis-cert", envRedisCert, f.redisCert),
			KeyFile:      a.envOr(c, "redis-key", envRedisKey, f.redisKey),
			ServerName:   a.envOr(c, "redis-tls-server-name", envRedisTLSServerName, f.redisServerName),
			PasswordFile: a.envOr(c, "redis-password-file", envRedisPasswordFile, f.redisPasswordFile),
			User:         a.env.Getenv(envRedisUser),
			Password:     a.env.Getenv(envRedisPassword),
			Insecure:     f.redisInsecure,
		}
		if !c.Flags().Changed("redis-tls-insecure") {
			if v := a.env.Getenv(envRedisTLSInsecure); v != "" {
				if o.Insecure, err = strconv.ParseBool(v); err != nil {
					return r, k, usageErrorf("%s=%q must be true or false", envRedisTLSInsecure, v)
				}
			}
		}
		if r, err = endpoint.ParseRedis(a.envOr(c, "redis", envRedis, f.redis), o); err != nil {
			return r, k, usageError(errors.New(connText(err)))
		}
		log := a.logger()
		if c.Flags().Changed("redis") && r.URLHasPassword() {
			log.Warn("the Redis password in --redis can be seen by other users of this machine (ps); use " + redisPasswordAlternate + " instead")
		}
		if r.Insecure() {
			log.Warn("the Redis server's certificate is not verified (--redis-tls-insecure or skip_verify): anyone between here and " + r.Addr() + " can read and change the data; for tests only")
		}
	}
	if kafka {
		if k, err = endpoint.ParseBrokers(a.envOr(c, "brokers", envBrokers, f.brokers)); err != nil {
			return r, k, usageError(err)
		}
	}
	return r, k, nil
}

// connFlagNames names the endpoints' fields of a mirror's Config, and the
// Redis connection's settings, as the connection flags.
var connFlagNames = map[string]string{
	"Redis":              "--redis",
	"Kafka":              "--brokers",
	"RedisCA":            "--redis-ca",
	"RedisCert":          "--redis-cert",
	"RedisKey":           "--redis-key",
	"RedisTLSServerName": "--redis-tls-server-name",
	"RedisTLSInsecure":   "--redis-tls-insecure",
	"RedisPasswordFile":  "--redis-password-file",
}

// connText is err's text with the settings it names written as flags.
func connText(err error) string { return setting.Render(err, flagNames(nil)) }
