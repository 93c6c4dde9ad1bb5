package cmd

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestFlagHelpEndsWithAWord catches a flag's help cut mid-sentence: it may
// not end on a dangling word ("the", "after the value's") or a comma.
func TestFlagHelpEndsWithAWord(t *testing.T) {
	dangling := []string{",", ":", "'s", " the", " a", " an", " of", " to", " after", " before", " with", " and", " or", " as", " in"}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		check := func(f *pflag.Flag) {
			u := strings.TrimSpace(f.Usage)
			if u == "" {
				t.Errorf("%s --%s: no help", c.CommandPath(), f.Name)
			}
			for _, d := range dangling {
				if strings.HasSuffix(u, d) {
					t.Errorf("%s --%s: help ends mid-sentence (%q): %q", c.CommandPath(), f.Name, d, u)
				}
			}
		}
		c.LocalFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewRootCommand(Env{Getenv: func(string) string { return "" }}))
}
