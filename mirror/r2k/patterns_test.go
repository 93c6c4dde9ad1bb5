package r2k

import (
	"strings"
	"testing"

	"github.com/xmirror/xmirror/mirror/setting"
)

func TestConfigRefusesBadStreamPatterns(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"empty", func(c *Config) { c.StreamPatterns = []string{""} }, "StreamPatterns must not be empty"},
		{"twice", func(c *Config) { c.StreamPatterns = []string{"a*", "a*"} }, `stream pattern "a*" is given twice`},
		{"neither streams nor patterns", func(c *Config) { c.Streams = nil }, "Streams or StreamPatterns is required"},
		{"rescan", func(c *Config) { c.Rescan = -1 }, "Rescan must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Name, cfg.Redis.URL, cfg.Kafka.Brokers = "m", "redis://127.0.0.1:6379/0", []string{"127.0.0.1:9092"}
			cfg.Streams = []string{"orders"}
			tt.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(setting.Render(err, nil), tt.want) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
	cfg := Defaults()
	cfg.Name, cfg.Redis.URL, cfg.Kafka.Brokers = "m", "redis://127.0.0.1:6379/0", []string{"127.0.0.1:9092"}
	cfg.StreamPatterns = []string{"orders:*"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a pattern alone: %v", err)
	}
}

func TestDefaultNameWithStreamPatterns(t *testing.T) {
	cfg := Defaults()
	cfg.Streams = []string{"b", "a"}
	if got := DefaultName(cfg); got != "a,b>{stream}" {
		t.Errorf("without patterns: %q", got)
	}
	cfg.StreamPatterns = []string{"z*", "orders:*"}
	if got, want := DefaultName(cfg), "a,b,~orders:*,~z*>{stream}"; got != want {
		t.Errorf("DefaultName = %q, want %q", got, want)
	}
	cfg.Streams = nil
	if got, want := DefaultName(cfg), "~orders:*,~z*>{stream}"; got != want {
		t.Errorf("patterns only: DefaultName = %q, want %q", got, want)
	}
}
