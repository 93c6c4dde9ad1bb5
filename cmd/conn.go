package cmd

import (
	"errors"
	"strconv"
	"strings"

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

	envKafkaTLS           = "XMIRROR_KAFKA_TLS"
	envKafkaCA            = "XMIRROR_KAFKA_CA"
	envKafkaCert          = "XMIRROR_KAFKA_CERT"
	envKafkaKey           = "XMIRROR_KAFKA_KEY"
	envKafkaTLSServerName = "XMIRROR_KAFKA_TLS_SERVER_NAME"
	envKafkaTLSInsecure   = "XMIRROR_KAFKA_TLS_INSECURE"
	envKafkaSASLMechanism = "XMIRROR_KAFKA_SASL_MECHANISM"
	envKafkaUser          = "XMIRROR_KAFKA_USER"
	envKafkaPassword      = "XMIRROR_KAFKA_PASSWORD"
	envKafkaPasswordFile  = "XMIRROR_KAFKA_PASSWORD_FILE"
	envKafkaToken         = "XMIRROR_KAFKA_TOKEN"
	envKafkaTokenFile     = "XMIRROR_KAFKA_TOKEN_FILE"
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

	kafkaTLS, kafkaInsecure      bool
	kafkaCA, kafkaCert, kafkaKey string
	kafkaServerName              string
	kafkaMechanism, kafkaUser    string
	kafkaPasswordFile            string
	kafkaTokenFile               string

	// logAttrs are added to the warnings resolve logs: a mirror's name.
	logAttrs []any
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
		fs.BoolVar(&f.kafkaTLS, "kafka-tls", false, "connect to Kafka with TLS, verified against the system's CAs unless --kafka-ca; any other --kafka-tls-*/ca/cert/key flag implies it (env "+envKafkaTLS+")")
		fs.StringVar(&f.kafkaCA, "kafka-ca", "", "PEM file of the CAs that sign the brokers' certificates, instead of the system's (env "+envKafkaCA+")")
		fs.StringVar(&f.kafkaCert, "kafka-cert", "", "PEM file of the client certificate, for brokers that verify clients (mutual TLS; env "+envKafkaCert+")")
		fs.StringVar(&f.kafkaKey, "kafka-key", "", "PEM file of --kafka-cert's private key (env "+envKafkaKey+")")
		fs.StringVar(&f.kafkaServerName, "kafka-tls-server-name", "", "the name the brokers' certificates must hold, when not the host dialled (env "+envKafkaTLSServerName+")")
		fs.BoolVar(&f.kafkaInsecure, "kafka-tls-insecure", false, "do not verify the brokers' certificates; for tests only (env "+envKafkaTLSInsecure+")")
		fs.StringVar(&f.kafkaMechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (env "+envKafkaSASLMechanism+")")
		fs.StringVar(&f.kafkaUser, "kafka-user", "", "SASL user for PLAIN and SCRAM (env "+envKafkaUser+")")
		fs.StringVar(&f.kafkaPasswordFile, "kafka-password-file", "", "file holding the SASL password on its first line, read again when it changes (env "+envKafkaPasswordFile+"; the password also from "+envKafkaPassword+")")
		fs.StringVar(&f.kafkaTokenFile, "kafka-token-file", "", "OAUTHBEARER: file holding the token, read again when it changes so a refreshed token is used (env "+envKafkaTokenFile+"; a static token from "+envKafkaToken+")")
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
		if o.Insecure, err = a.envBool(c, "redis-tls-insecure", envRedisTLSInsecure, f.redisInsecure); err != nil {
			return r, k, err
		}
		if r, err = endpoint.ParseRedis(a.envOr(c, "redis", envRedis, f.redis), o); err != nil {
			return r, k, usageError(errors.New(connText(err)))
		}
		log := a.logger().With(f.logAttrs...)
		if c.Flags().Changed("redis") && r.URLHasPassword() {
			log.Warn("the Redis password in --redis can be seen by other users of this machine (ps); use " + redisPasswordAlternate + " instead")
		}
		if r.Insecure() {
			log.Warn("the Redis server's certificate is not verified (--redis-tls-insecure or skip_verify): anyone between here and " + r.Addr() + " can read and change the data; for tests only")
		}
	}
	if kafka {
		o := endpoint.KafkaOptions{
			CAFile:        a.envOr(c, "kafka-ca", envKafkaCA, f.kafkaCA),
			CertFile:      a.envOr(c, "kafka-cert", envKafkaCert, f.kafkaCert),
			KeyFile:       a.envOr(c, "kafka-key", envKafkaKey, f.kafkaKey),
			ServerName:    a.envOr(c, "kafka-tls-server-name", envKafkaTLSServerName, f.kafkaServerName),
			SASLMechanism: a.envOr(c, "kafka-sasl-mechanism", envKafkaSASLMechanism, f.kafkaMechanism),
			User:          a.envOr(c, "kafka-user", envKafkaUser, f.kafkaUser),
			PasswordFile:  a.envOr(c, "kafka-password-file", envKafkaPasswordFile, f.kafkaPasswordFile),
			TokenFile:     a.envOr(c, "kafka-token-file", envKafkaTokenFile, f.kafkaTokenFile),
			Password:      a.env.Getenv(envKafkaPassword),
			Token:         strings.TrimSpace(a.env.Getenv(envKafkaToken)),
		}
		if o.TLS, err = a.envBool(c, "kafka-tls", envKafkaTLS, f.kafkaTLS); err != nil {
			return r, k, err
		}
		if o.Insecure, err = a.envBool(c, "kafka-tls-insecure", envKafkaTLSInsecure, f.kafkaInsecure); err != nil {
			return r, k, err
		}
		if k, err = endpoint.ParseKafka(a.envOr(c, "brokers", envBrokers, f.brokers), o); err != nil {
			return r, k, usageError(errors.New(connText(err)))
		}
		log := a.logger().With(f.logAttrs...)
		if k.Insecure() {
			log.Warn("the Kafka brokers' certificates are not verified (--kafka-tls-insecure): anyone between here and " + k.String() + " can read and change the data; for tests only")
		}
		if k.SASLMechanism() == endpoint.SASLPlain && !k.TLS() {
			log.Warn("SASL PLAIN without TLS sends the Kafka password in clear to " + k.String() + "; add --kafka-tls (or --kafka-ca) if the listener is SASL_SSL")
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
	"KafkaTLS":           "--kafka-tls",
	"KafkaCA":            "--kafka-ca",
	"KafkaCert":          "--kafka-cert",
	"KafkaKey":           "--kafka-key",
	"KafkaTLSServerName": "--kafka-tls-server-name",
	"KafkaTLSInsecure":   "--kafka-tls-insecure",
	"KafkaSASLMechanism": "--kafka-sasl-mechanism",
	"KafkaUser":          "--kafka-user",
	"KafkaPassword":      envKafkaPassword,
	"KafkaPasswordFile":  "--kafka-password-file",
	"KafkaToken":         envKafkaToken,
	"KafkaTokenFile":     "--kafka-token-file",
}

// envBool is a boolean flag, or its environment variable when the flag is
// not given; a variable that is not a boolean is a usage error.
func (a *app) envBool(c *cobra.Command, flag, envVar string, value bool) (bool, error) {
	if c.Flags().Changed(flag) {
		return value, nil
	}
	v := strings.TrimSpace(a.env.Getenv(envVar))
	if v == "" {
		return value, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, usageErrorf("%s=%q must be true or false", envVar, v)
	}
	return b, nil
}

// connText is err's text with the settings it names written as flags.
func connText(err error) string { return setting.Render(err, flagNames(nil)) }
