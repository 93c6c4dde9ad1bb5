package endpoint

import (
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseBrokers: no broker list makes the parser panic; a refusal is one
// line; every broker accepted is a host and a port from 1 to 65535, and the
// list accepted, written out, parses back to itself.
func FuzzParseBrokers(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:9092", "k1:9092, k2:9093,", "kafka", "[::1]:9092", "[::1]", "::1", "", " , ",
		"PLAINTEXT://k:9092", "k:port", "k:0", "k:65536", ":9092", "[fe80::1%eth0]:9092", "k:+1", "k:09092",
		"a b:1", "k:\n1", "[]:1", "[k]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		k, err := ParseBrokers(list)
		if err != nil {
			if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("%q: error %q is not one line", list, msg)
			}
			return
		}
		if len(k.Brokers) == 0 {
			t.Fatalf("%q: accepted with no broker", list)
		}
		for _, b := range k.Brokers {
			host, port, err := net.SplitHostPort(b)
			n, perr := strconv.Atoi(port)
			if err != nil || host == "" || perr != nil || n < 1 || n > 65535 || strings.Contains(b, ",") {
				t.Fatalf("%q: accepted broker %q is not host:port", list, b)
			}
		}
		again, err := ParseBrokers(k.String())
		if err != nil || !reflect.DeepEqual(again, k) {
			t.Fatalf("%q parsed as %q, written as %q, parses as %q, %v", list, k.Brokers, k.String(), again.Brokers, err)
		}
	})
}

func TestParseBrokersTakesABracketedAddressWithoutPort(t *testing.T) {
	for in, want := range map[string]string{"[::1]": "[::1]:9092", "[::1]:9093": "[::1]:9093", "[k]": "k:9092", "k": "k:9092"} {
		if k, err := ParseBrokers(in); err != nil || k.String() != want {
			t.Errorf("%q: %q, %v; want %q", in, k.String(), err, want)
		}
	}
	for _, in := range []string{"[::1", "[ 0", "[a]b", "a b:1", "[ k]", "k\t:1", "a]:1"} {
		if k, err := ParseBrokers(in); err == nil {
			t.Errorf("%q accepted as %q", in, k.String())
		}
	}
}

// An unknown parameter in a Redis URL is refused by its name, with the
// ones xmirror takes, rather than ignored.
func TestRedisURLRefusesAnUnknownParameterByName(t *testing.T) {
	_, err := ParseRedisURL("redis://u:hunter22@h:6379/0?foo=1")
	if err == nil || !strings.Contains(err.Error(), "unknown parameter(s) foo;") || !strings.Contains(err.Error(), strings.Join(redisParams, ", ")) || strings.Contains(err.Error(), "hunter22") {
		t.Fatalf("err = %v, want foo named, the known parameters listed and no password", err)
	}
}

// A parameter name is shown quoted when it holds a line break or another
// byte a one-line message cannot show as it is.
func TestRedisURLQuotesAnUnknownParameterNameThatNeedsIt(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://h:1?%0A=1":       `unknown parameter(s) "\n";`,
		"redis://h:1?=1":          `unknown parameter(s) "";`,
		"redis://h:1?a%1Bb=1&c=2": `unknown parameter(s) "a\x1bb", c;`,
	} {
		_, err := ParseRedisURL(raw)
		if err == nil || !strings.Contains(err.Error(), want) || strings.ContainsAny(err.Error(), "\n\x1b") {
			t.Errorf("%s: %v, want %s", raw, err, want)
		}
	}
}
