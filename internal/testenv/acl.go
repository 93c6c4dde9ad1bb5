package testenv

import (
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/xmirror/xmirror/internal/endpoint"
)

// ACLRulesCover checks that the README's ACL SETUSER line for user grants
// exactly the commands of cmds (each +rule of the line is one of their
// Rules and each Rule is on the line) and key patterns each of their keys
// matches, none of them matching no key.
func ACLRulesCover(tb testing.TB, readme, user string, cmds []endpoint.RedisCommand) {
	tb.Helper()
	b, err := os.ReadFile(readme)
	if err != nil {
		tb.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "ACL SETUSER "+user+" ") {
			line = l
		}
	}
	if line == "" {
		tb.Fatalf("%s has no line ACL SETUSER %s", readme, user)
	}
	var rules, patterns []string
	for _, f := range strings.Fields(line) {
		switch {
		case strings.HasPrefix(f, "+"):
			rules = append(rules, f[1:])
		case strings.HasPrefix(f, "~"):
			patterns = append(patterns, f[1:])
		}
	}
	used := map[string]bool{}
	matched := map[string]bool{}
	for _, c := range cmds {
		used[c.Rule] = true
		if !slices.Contains(rules, c.Rule) {
			tb.Errorf("the mirror sends %s, which the README's rules for %s do not grant (+%s)", c.Name(), user, c.Rule)
		}
		if c.Key == "" {
			continue
		}
		found := false
		for _, p := range patterns {
			if ok, _ := path.Match(p, c.Key); ok {
				found, matched[p] = true, true
			}
		}
		if !found {
			tb.Errorf("%s touches %s %q, which no key pattern of the README's rules for %s matches", c.Name(), c.What, c.Key, user)
		}
	}
	for _, r := range rules {
		if !used[r] {
			tb.Errorf("the README grants %s +%s, which the mirror never sends", user, r)
		}
	}
	for _, p := range patterns {
		if !matched[p] {
			tb.Errorf("the README grants %s ~%s, which no key of the mirror matches", user, p)
		}
	}
}
