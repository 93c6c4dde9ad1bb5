package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// env holds the suite's own clients of the shared servers. They are plain
// rueidis and franz-go clients: nothing here shares code with xmirror.
type env struct {
	redis   rueidis.Client
	brokers []string
	kafka   *kgo.Client
	adm     *kadm.Client
	logDir  string
}

func (e *env) close() {
	e.redis.Close()
	e.kafka.Close()
}

// newRedis is a plain client; its short write timeout makes a paused
// server an error after a few seconds rather than a hang.
func newRedis(url string) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opt.DisableCache = true
	opt.Dialer.Timeout = 2 * time.Second
	opt.ConnWriteTimeout = 3 * time.Second
	return rueidis.NewClient(opt)
}

// preflight checks that everything the chosen scenarios need is there, and
// says what is missing and how to get it.
func preflight(ctx context.Context, cfg config) (*env, error) {
	if st, err := os.Stat(cfg.bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("the xmirror binary %s is missing or not executable; build it with `make build` or point -bin at it", cfg.bin)
	}
	var needRedisServer, needBroker []string
	for _, s := range cfg.scenarios {
		if s.ownRedis {
			needRedisServer = append(needRedisServer, s.name)
		}
		if s.controlsKafka {
			needBroker = append(needBroker, s.name)
		}
	}
	if len(needRedisServer) > 0 {
		if _, err := exec.LookPath("redis-server"); err != nil {
			return nil, fmt.Errorf("scenarios %s run their own redis-server, which is not installed (apt-get install redis-server, or scripts/services.sh up)", strings.Join(needRedisServer, ","))
		}
	}

	rc, err := newRedis(cfg.redisURL)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = rc.Do(pctx, rc.B().Ping().Build()).Error()
		cancel()
		if err != nil {
			rc.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("Redis at %s does not answer: %v; start it with scripts/services.sh up (or set REDIS_URL / -redis)", redact(cfg.redisURL), err)
	}
	brokers := strings.Split(cfg.brokers, ",")
	kc, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DialTimeout(3*time.Second))
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = kc.Ping(pctx)
		cancel()
		if err != nil {
			kc.Close()
		}
	}
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("Kafka at %s does not answer: %v; start it with scripts/services.sh up (or set KAFKA_BROKERS / -brokers)", cfg.brokers, err)
	}
	e := &env{redis: rc, brokers: brokers, kafka: kc, adm: kadm.NewClient(kc)}
	if len(needBroker) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := servicesCmd(pctx, cfg, "pid", "kafka").CombinedOutput()
		cancel()
		if err != nil {
			e.close()
			return nil, fmt.Errorf("scenarios %s stop and pause the Kafka broker, so it must be one started by %s (`%s pid kafka` says: %s); run `scripts/services.sh up`, or leave them out with -scenarios",
				strings.Join(needBroker, ","), cfg.services, cfg.services, strings.TrimSpace(string(out)))
		}
	}
	if e.logDir, err = os.MkdirTemp("", "xmirror-faults-"); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// kafkaPid asks services.sh for the broker's pid.
func kafkaPid(ctx context.Context, cfg config) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := servicesCmd(ctx, cfg, "pid", "kafka").Output()
	if err != nil {
		return 0, fmt.Errorf("%s pid kafka: %v", cfg.services, err)
	}
	var pid int
	if _, err := fmt.Sscan(string(out), &pid); err != nil {
		return 0, fmt.Errorf("%s pid kafka printed %q", cfg.services, out)
	}
	return pid, nil
}

// redact hides a password in a Redis URL.
func redact(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return u
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	return scheme + "://" + user + ":xxxxx@" + rest[at+1:]
}
