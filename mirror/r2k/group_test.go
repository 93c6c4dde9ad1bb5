package r2k

import (
	"strings"
	"testing"
)

func TestEachMirrorGetsAGroupOfItsOwnAndKeepsTheOneItHas(t *testing.T) {
	cases := []struct {
		name     string
		given    string
		recorded string
		found    bool
		legacy   bool
		want     string
		err      string
	}{
		{name: "new mirror", want: "xmirror:m"},
		{name: "new mirror with --group", given: "g", want: "g"},
		{name: "recorded group", recorded: "xmirror:m", found: true, want: "xmirror:m"},
		{name: "recorded group, same --group", given: "g", recorded: "g", found: true, want: "g"},
		{name: "recorded group, other --group", given: "h", recorded: "g", found: true, err: `reads through consumer group "g"`},
		{name: "checkpoint from before groups were recorded", found: true, want: "xmirror"},
		{name: "checkpoint from before, with --group", given: "g", found: true, want: "g"},
		{name: "no checkpoint, consumer in the old group", legacy: true, want: "xmirror"},
		{name: "no checkpoint, consumer in the old group, --group", given: "g", legacy: true, want: "g"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseGroup("m", tc.given, tc.recorded, tc.found, tc.legacy)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want an error saying %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
