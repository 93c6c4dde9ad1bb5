package cmd

import (
	"github.com/spf13/cobra"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror/setting"
)

// Environment variables that stand in for the connection flags.
const (
	envRedis   = "XMIRROR_REDIS"
	envBrokers = "XMIRROR_BROKERS"
)

// connFlags are the connection flags of a command that talks to Redis,
// Kafka or both.
type connFlags struct {
	redis   string
	brokers string
}

func (f *connFlags) bind(c *cobra.Command, redis, kafka bool) {
	if redis {
		c.Flags().StringVar(&f.redis, "redis", endpoint.DefaultRedisURL, "Redis URL, redis://[user:password@]host:port[/db] or rediss:// for TLS (env "+envRedis+")")
	}
	if kafka {
		c.Flags().StringVar(&f.brokers, "brokers", endpoint.DefaultBrokers, "Kafka bootstrap brokers, host:port[,host:port...] (env "+envBrokers+")")
	}
}

// resolve applies the environment and parses the endpoints; a malformed one
// is a usage error.
func (f *connFlags) resolve(a *app, c *cobra.Command, redis, kafka bool) (endpoint.Redis, endpoint.Kafka, error) {
	var r endpoint.Redis
	var k endpoint.Kafka
	var err error
	if redis {
		if r, err = endpoint.ParseRedisURL(a.envOr(c, "redis", envRedis, f.redis)); err != nil {
			return r, k, usageError(err)
		}
	}
	if kafka {
		if k, err = endpoint.ParseBrokers(a.envOr(c, "brokers", envBrokers, f.brokers)); err != nil {
			return r, k, usageError(err)
		}
	}
	return r, k, nil
}

// connFlagNames names the endpoints' fields of a mirror's Config as the
// connection flags.
var connFlagNames = map[string]string{
	"Redis": "--redis",
	"Kafka": "--brokers",
}

// connText is err's text with the settings it names written as flags.
func connText(err error) string { return setting.Render(err, flagNames(nil)) }
