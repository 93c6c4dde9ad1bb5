package k2r_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/xmirror/xmirror/internal/endpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/k2r"
)

// A kafka-to-redis mirror that follows a topic from code until it is
// interrupted: each partition into a stream of its own.
func ExampleNew() {
	cfg := k2r.Defaults()
	var err error
	if cfg.Redis, err = endpoint.ParseRedisURL("redis://127.0.0.1:6379/0"); err != nil {
		log.Fatal(err)
	}
	if cfg.Kafka, err = endpoint.ParseBrokers("127.0.0.1:9092"); err != nil {
		log.Fatal(err)
	}
	cfg.Topics = []string{"orders"}
	cfg.Stream = "{topic}-{partition}"
	cfg.Name = "orders-to-redis"
	cfg.Follow = true
	cfg.Observer = &mirror.Observer{
		Committed: func(c mirror.Commit) {
			for _, p := range c.Positions() {
				fmt.Printf("%s/%d at %d\n", p.Topic, p.Partition, p.Offset)
			}
		},
		Retrying: func(r mirror.Retry) { fmt.Println("retrying", r.Step, "in", r.Wait, ":", r.Err) },
	}

	m, err := k2r.New(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	stats, err := m.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) { // a follow run ends with ctx's error
		log.Fatal(err)
	}
	fmt.Printf("mirrored %d entries, %d already present\n", stats.Entries, stats.Present)
}
