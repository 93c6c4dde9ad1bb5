package r2k_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/r2k"
)

// A redis-to-kafka mirror run from code: the defaults, the endpoints, the
// streams and a name, an observer that prints progress, then New and Run.
// Run again, it goes on from its checkpoint.
func ExampleNew() {
	cfg := r2k.Defaults()
	var err error
	if cfg.Redis, err = endpoint.ParseRedisURL("redis://127.0.0.1:6379/0"); err != nil {
		log.Fatal(err)
	}
	if cfg.Kafka, err = endpoint.ParseBrokers("127.0.0.1:9092"); err != nil {
		log.Fatal(err)
	}
	cfg.Streams = []string{"orders", "payments"}
	cfg.Topic = "{stream}" // each stream into the topic of its name
	cfg.CreateTopic = true
	cfg.Name = r2k.DefaultName(cfg) // or a name of your own
	var total int64
	cfg.Observer = &mirror.Observer{
		Started: func(s mirror.Start) {
			total = s.Total
			fmt.Printf("mirroring %d entries\n", s.Total)
		},
		Committed: func(c mirror.Commit) {
			// Done counts entries written or not (skipped, say).
			t := c.Totals
			done := t.Entries + t.Skipped + t.DeadLettered + t.Present + t.Lost
			fmt.Printf("%d/%d\n", done, total)
		},
		Lease: func(e mirror.LeaseEvent) { fmt.Println("lease", e.Kind, e.Key) },
	}
	// cfg.Follow = true would mirror new entries too, until ctx ends.

	m, err := r2k.New(context.Background(), cfg)
	if err != nil {
		log.Fatal(err) // a *setting.ConfigError: every problem, by field name
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	stats, err := m.Run(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("mirrored %d entries (%d bytes) in %d batches, %.0f entries/s\n",
		stats.Entries, stats.Bytes, stats.Batches, stats.Rate())
}
