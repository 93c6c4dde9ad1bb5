package endpoint

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

func TestParseRedisURL(t *testing.T) {
	cases := []struct {
		url      string
		addr     string
		db       int
		tls      bool
		redacted string
		wantErr  string
	}{
		{url: "redis://127.0.0.1:6379/0", addr: "127.0.0.1:6379", redacted: "redis://127.0.0.1:6379/0"},
		{url: "redis://cache/3", addr: "cache:6379", db: 3, redacted: "redis://cache/3"},
		{url: "rediss://u:secret@cache:6380", addr: "cache:6380", tls: true, redacted: "rediss://u:xxxxx@cache:6380"},
		{url: "redis://:secret@h:1/2", addr: "h:1", db: 2, redacted: "redis://:xxxxx@h:1/2"},
		{url: "", wantErr: "empty"},
		{url: "localhost:6379", wantErr: `scheme "localhost"`},
		{url: "http://h:1", wantErr: `scheme "http"`},
		{url: "redis://", wantErr: "no host"},
		{url: "redis://h:1/x", wantErr: "database"},
		{url: "redis://h:1/1/2", wantErr: "path"},
		{url: "redis://u:p@h:1:%zz", wantErr: "malformed"},
		// Parameters: only those xmirror applies, each checked; any
		// other is refused by name rather than ignored.
		{url: "redis://h:1/0?bogus=1", wantErr: "unknown parameter(s) bogus; xmirror takes only db, dial_timeout"},
		{url: "redis://u:secret@h:1/0?zz=1&addr=h2:1&master_set=m", wantErr: "unknown parameter(s) addr, master_set, zz;"},
		{url: "redis://h:1?client_cache=0", wantErr: "unknown parameter(s) client_cache"},
		{url: "redis://h:1?max_retries=0", wantErr: "unknown parameter(s) max_retries"},
		{url: "redis://h:1?db=2", addr: "h:1", db: 2, redacted: "redis://h:1?db=2"},
		{url: "redis://h:1/2?db=2", addr: "h:1", db: 2, redacted: "redis://h:1/2?db=2"},
		{url: "redis://h:1/1?db=2", wantErr: "the database is given twice"},
		{url: "redis://h:1?db=1&db=2", wantErr: "parameter db is given 2 times"},
		{url: "redis://h:1?dial_timeout=2s&write_timeout=3s&client_name=x&protocol=2", addr: "h:1", redacted: "redis://h:1?dial_timeout=2s&write_timeout=3s&client_name=x&protocol=2"},
		{url: "redis://h:1?dial_timeout=0s", wantErr: "dial_timeout=\"0s\" must be a positive duration"},
		{url: "redis://h:1?write_timeout=soon", wantErr: "write_timeout=\"soon\" must be a positive duration"},
		{url: "redis://h:1?protocol=4", wantErr: "protocol=\"4\" must be 2"},
		{url: "redis://h:1?skip_verify=true", wantErr: "skip_verify applies only to TLS"},
		{url: "rediss://h:1?skip_verify=true", addr: "h:1", tls: true, redacted: "rediss://h:1?skip_verify=true"},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			r, err := ParseRedisURL(tc.url)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") || (strings.Contains(tc.url, ":p@") && strings.Contains(err.Error(), ":p@")) {
					t.Fatalf("error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Addr() != tc.addr || r.Option.SelectDB != tc.db || (r.Option.TLSConfig != nil) != tc.tls || r.Redacted() != tc.redacted {
				t.Fatalf("got addr %s db %d tls %v redacted %s", r.Addr(), r.Option.SelectDB, r.Option.TLSConfig != nil, r.Redacted())
			}
			if r.Option.Dialer.Timeout == 0 || r.Option.ConnWriteTimeout == 0 {
				t.Fatal("connection attempts must be bounded in time")
			}
		})
	}
}

func TestParseBrokers(t *testing.T) {
	cases := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "127.0.0.1:9092", want: "127.0.0.1:9092"},
		{in: "k1:9092, k2:9093,", want: "k1:9092,k2:9093"},
		{in: "kafka", want: "kafka:9092"},
		{in: "[::1]:9092", want: "[::1]:9092"},
		{in: "", wantErr: "empty"},
		{in: " , ", wantErr: "empty"},
		{in: "PLAINTEXT://k:9092", wantErr: "without a scheme"},
		{in: "k:port", wantErr: "port must be"},
		{in: "k:0", wantErr: "port must be"},
		{in: ":9092", wantErr: "no host"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			k, err := ParseBrokers(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || k.String() != tc.want {
				t.Fatalf("got %q, %v; want %q", k.String(), err, tc.want)
			}
		})
	}
}

// A closed port must fail fast and name the endpoint; no server needed.
func TestConnectToAClosedPortFailsFastNamingIt(t *testing.T) {
	r, err := ParseRedisURL("redis://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	_, err = r.Connect(context.Background(), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v", err)
	}
	k, _ := ParseBrokers("127.0.0.1:1")
	_, err = k.Connect(context.Background(), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("took %s", took)
	}
}

func TestRedisURLParametersAreApplied(t *testing.T) {
	r, err := ParseRedisURL("rediss://h:1/0?dial_timeout=2s&write_timeout=3s&client_name=mirror-7&protocol=2&skip_verify=true")
	if err != nil {
		t.Fatal(err)
	}
	o := r.Option
	if o.Dialer.Timeout != 2*time.Second || o.ConnWriteTimeout != 3*time.Second || o.ClientName != "mirror-7" || !o.AlwaysRESP2 || !o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("parameters not applied: dial %s write %s name %q resp2 %v skip_verify %v", o.Dialer.Timeout, o.ConnWriteTimeout, o.ClientName, o.AlwaysRESP2, o.TLSConfig.InsecureSkipVerify)
	}
}

func TestKafkaExplainHintsATopicDeletedAndCreatedAgain(t *testing.T) {
	k := Kafka{Brokers: []string{"b:9092"}}
	msg := k.Explain(fmt.Errorf("list offsets of topic t: %w", kerr.UnknownTopicID)).Error()
	if !strings.Contains(msg, "kafka b:9092") || !strings.Contains(msg, "deleted and created again") || !strings.Contains(msg, "UNKNOWN_TOPIC_ID") {
		t.Fatalf("%q: want the broker, the error and the hint", msg)
	}
}
