package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror/setting"
)

// DefaultBrokers is where a local single-node Kafka listens out of the box.
const DefaultBrokers = "127.0.0.1:9092"

// defaultKafkaPort is assumed for a broker given without a port, as kcat does.
const defaultKafkaPort = "9092"

// Kafka is a parsed broker list.
type Kafka struct {
	Brokers []string
}

// ParseBrokers parses a comma-separated list of host[:port].
func ParseBrokers(list string) (Kafka, error) {
	var brokers []string
	for _, b := range strings.Split(list, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if strings.Contains(b, "://") {
			return Kafka{}, fmt.Errorf("broker %q: give host:port without a scheme", b)
		}
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			// No port: take the default, as kcat and the Kafka tools do.
			host, port = b, defaultKafkaPort
			if inner, ok := strings.CutPrefix(b, "["); ok {
				// An IPv6 address in brackets, such as [::1].
				if host, ok = strings.CutSuffix(inner, "]"); !ok {
					return Kafka{}, fmt.Errorf("broker %q is not host:port", b)
				}
			} else if strings.Contains(b, ":") {
				return Kafka{}, fmt.Errorf("broker %q is not host:port", b)
			}
		}
		if strings.ContainsAny(host, "[]") || strings.ContainsFunc(host, unicode.IsSpace) {
			return Kafka{}, fmt.Errorf("broker %q: the host %q is not a host name or address", b, host)
		}
		if host == "" {
			return Kafka{}, fmt.Errorf("broker %q has no host", b)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Kafka{}, fmt.Errorf("broker %q: port must be a number from 1 to 65535", b)
		}
		brokers = append(brokers, net.JoinHostPort(host, port))
	}
	if len(brokers) == 0 {
		return Kafka{}, errors.New("broker list is empty; give host:port[,host:port...]")
	}
	return Kafka{Brokers: brokers}, nil
}

// String is the broker list as given to the client.
func (k Kafka) String() string { return strings.Join(k.Brokers, ",") }

// ClientOpts are the options every xmirror Kafka client starts from: the
// seed brokers and time bounds so an unreachable cluster fails instead of
// hanging.
func (k Kafka) ClientOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(k.Brokers...),
		kgo.DialTimeout(DefaultDialTimeout),
		kgo.ClientID("xmirror"),
		// A topic xmirror just created must be usable at once; franz-go
		// otherwise waits up to 5s before it refreshes its metadata.
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
}

// Connect builds a client and checks a broker answers within timeout.
func (k Kafka) Connect(ctx context.Context, timeout time.Duration, opts ...kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append(k.ClientOpts(), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", k, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, k.Explain(err)
	}
	return cl, nil
}

// Explain turns a client error into a one-line message naming the brokers,
// with a hint where the cause is recognisable.
func (k Kafka) Explain(err error) error {
	msg := err.Error()
	var hint string
	switch {
	case strings.Contains(msg, "connection refused"):
		hint = "connection refused; is the broker running there?"
	case strings.Contains(msg, "no such host"):
		hint = "unknown host; check {Kafka}"
	case errors.As(err, new(*kgo.ErrFirstReadEOF)), strings.Contains(msg, "EOF"):
		hint = "the server closed the connection at once; is it a Kafka broker, and does it expect TLS or SASL?"
	case errors.Is(err, kerr.UnknownTopicID):
		hint = "a topic was deleted and created again meanwhile (its topic ID changed); run again"
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState):
		hint = "authentication refused"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "i/o timeout"):
		hint = "no answer in time; is it a Kafka broker, reachable from here?"
	case strings.Contains(msg, "invalid large response size"), strings.Contains(msg, "response"):
		hint = "the server did not answer like Kafka; is the port right?"
	}
	if hint == "" {
		return fmt.Errorf("kafka %s: %w", k, err)
	}
	// The hint is the format: it may name a setting ({Kafka}), and holds
	// no verb.
	return setting.Errorf("kafka %s: "+hint+" (%w)", k, err)
}
