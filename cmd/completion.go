package cmd

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/internal/endpoint"
)

// completionTimeout bounds what a completion asks of the servers: a shell
// waiting on a Tab must not hang when a server is down.
const completionTimeout = 2 * time.Second

// completionEnums are the values of the flags that take one of a few.
var completionEnums = map[string][]string{
	"format":               {"json", "raw"},
	"on-error":             {"fail", "skip", "dead-letter"},
	"on-gap":               {"fail", "skip"},
	"on-topic-recreated":   {"fail", "restart"},
	"timestamp":            {"id", "now"},
	"compression":          {"none", "gzip", "snappy", "lz4", "zstd"},
	"kafka-sasl-mechanism": {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"},
	"output":               {"text", "json"},
	"progress":             {progressAuto, progressBar, progressLog, progressNone},
	"log-format":           {"text", "json"},
	"log-level":            {"debug", "info", "warn", "error"},
}

// completeEnums registers the completions of c's enum flags (its own and
// those it has from its parents); start's values depend on the direction.
func completeEnums(c *cobra.Command, start ...string) {
	for flag, values := range completionEnums {
		if c.Flags().Lookup(flag) != nil || c.PersistentFlags().Lookup(flag) != nil {
			c.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	if len(start) > 0 {
		c.RegisterFlagCompletionFunc("start", cobra.FixedCompletions(start, cobra.ShellCompDirectiveNoFileComp))
	}
}

// completeStreams completes flag with the streams of the Redis the
// command's flags name, found with SCAN … TYPE stream within
// completionTimeout; nothing when Redis does not answer.
func completeStreams(a *app, c *cobra.Command, conn *connFlags, flag string) {
	c.RegisterFlagCompletionFunc(flag, func(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		redisEP, _, err := conn.resolve(a, c, true, false)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		return streamNames(ctx, redisEP, prefix), cobra.ShellCompDirectiveNoFileComp
	})
}

// completeTopics completes flag with the topics of the brokers the
// command's flags name, within completionTimeout.
func completeTopics(a *app, c *cobra.Command, conn *connFlags, flag string) {
	c.RegisterFlagCompletionFunc(flag, func(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		_, kafkaEP, err := conn.resolve(a, c, false, true)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		return topicNames(ctx, kafkaEP, prefix), cobra.ShellCompDirectiveNoFileComp
	})
}

// streamNames are the streams whose names start with prefix, at most a
// thousand (a shell shows no more), sorted.
func streamNames(ctx context.Context, ep endpoint.Redis, prefix string) []string {
	rc, err := ep.Connect(ctx, completionTimeout)
	if err != nil {
		return nil
	}
	defer rc.Close()
	var names []string
	// Every node: a cluster's streams are spread over its masters.
	for _, node := range rc.Nodes() {
		cursor := uint64(0)
		for len(names) < 1000 {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(globEscape(prefix)+"*").Count(1000).Type("stream").Build()).AsScanEntry()
			if err != nil {
				break
			}
			names = append(names, e.Elements...)
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// topicNames are the topics whose names start with prefix, sorted.
func topicNames(ctx context.Context, ep endpoint.Kafka, prefix string) []string {
	cl, err := ep.Connect(ctx, completionTimeout)
	if err != nil {
		return nil
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		return nil
	}
	var names []string
	for _, t := range topics.Names() {
		if strings.HasPrefix(t, prefix) {
			names = append(names, t)
		}
	}
	slices.Sort(names)
	return names
}

// globEscape escapes the characters SCAN MATCH reads as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
