package mirror

import "testing"

func TestObserversCallsEveryObserverInTurn(t *testing.T) {
	var calls []string
	watch := func(name string) *Observer {
		return &Observer{
			Started:   func(Start) { calls = append(calls, name+" started") },
			Committed: func(Commit) { calls = append(calls, name+" committed") },
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
	want := []string{"a started", "b started", "a committed", "b committed"}
	if len(calls) != len(want) {
		t.Fatalf("calls = %q, want %q", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("calls = %q, want %q", calls, want)
		}
	}
}
