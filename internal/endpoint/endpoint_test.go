package endpoint

import (
	"context"
	"strings"
	"testing"
	"time"
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
