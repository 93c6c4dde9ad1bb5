package mirror

import (
	"fmt"
	"testing"
)

func TestObserversCallsEveryObserverInTurn(t *testing.T) {
	var calls []string
	watch := func(name string) *Observer {
		return &Observer{
			Started:   func(Start) { calls = append(calls, name+" started") },
			Committed: func(Commit) { calls = append(calls, name+" committed") },
			InFlight:  func(d int) { calls = append(calls, fmt.Sprintf("%s in flight %+d", name, d)) },
		}
	}
	if Observers() != nil || Observers(nil, nil) != nil {
		t.Fatal("no observers joined should be nil")
	}
	one := watch("a")
	if Observers(nil, one) != one {
		t.Fatal("one observer joined should be itself")
	}
	o := Observers(watch("a"), nil, watch("b"))
	o.started(Start{})
	o.committed(Commit{})
	o.retrying(Retry{}) // neither watches retries: no call, no panic
	o.inFlight(-2)
	want := []string{"a started", "b started", "a committed", "b committed", "a in flight -2", "b in flight -2"}
	if len(calls) != len(want) {
		t.Fatalf("calls = %q, want %q", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("calls = %q, want %q", calls, want)
		}
	}
}
