package checkpoint

import "testing"

func TestLeaseValueRoundTrips(t *testing.T) {
	tests := []struct {
		value string
		want  process
	}{
		{"web-1:4242:0a1b2c3d start=98765 boot=6f1c1d34-1c6a-4b8e-9a0e-3f0c2b9d1e77 pidns=4026531836",
			process{host: "web-1", pid: 4242, nonce: "0a1b2c3d", start: 98765, boot: "6f1c1d34-1c6a-4b8e-9a0e-3f0c2b9d1e77", pidns: "4026531836"}},
		// What older versions wrote: shown, never taken over.
		{"web-1:4242:0a1b2c3d", process{host: "web-1", pid: 4242, nonce: "0a1b2c3d"}},
		{"a:b:7:ff start=1 boot=x pidns=y", process{host: "a:b", pid: 7, nonce: "ff", start: 1, boot: "x", pidns: "y"}},
		{"garbage", process{}},
		{"h:notapid:ff start=1 boot=x pidns=y", process{}},
		{"", process{}},
	}
	for _, tt := range tests {
		if got := parseHolder(tt.value); got != tt.want {
			t.Errorf("parseHolder(%q) = %+v, want %+v", tt.value, got, tt.want)
		}
	}
	p := process{host: "h", pid: 3, nonce: "ab", start: 9, boot: "b", pidns: "n"}
	if got := parseHolder(p.value()); got != p {
		t.Errorf("parseHolder(value()) = %+v, want %+v", got, p)
	}
	if v := (process{host: "h", pid: 3, nonce: "ab"}).value(); v != "h:3:ab" {
		t.Errorf("value without /proc = %q, want the old form h:3:ab", v)
	}
}

func TestLeaseIsTakenOverOnlyFromAGoneProcessOfThisHost(t *testing.T) {
	self := process{host: "h", pid: 10, nonce: "01", start: 500, boot: "B", pidns: "N"}
	gone := func(pid int, start uint64) bool { return pid == 20 || (pid == 10 && start != 500) }
	tests := []struct {
		name   string
		self   process
		holder process
		want   bool
		why    string
	}{
		{"gone, same host", self, process{host: "h", pid: 20, start: 7, boot: "B", pidns: "N"}, true, ""},
		{"earlier incarnation: same pid, other start", self, process{host: "h", pid: 10, start: 400, boot: "B", pidns: "N"}, true, ""},
		{"running, same host", self, process{host: "h", pid: 30, start: 7, boot: "B", pidns: "N"}, false, "pid 30 is running"},
		{"this very process", self, process{host: "h", pid: 10, start: 500, boot: "B", pidns: "N"}, false, "pid 10 is running"},
		{"other host", self, process{host: "g", pid: 20, start: 7, boot: "C", pidns: "N"}, false, "another host"},
		{"same hostname, other boot", self, process{host: "h", pid: 20, start: 7, boot: "C", pidns: "N"}, false, "another host"},
		{"container sharing the hostname", self, process{host: "h", pid: 20, start: 7, boot: "B", pidns: "M"}, false, "another host"},
		{"older xmirror", self, process{host: "h", pid: 20}, false, ""},
		{"no /proc here", process{host: "h", pid: 10}, process{host: "h", pid: 20, start: 7, boot: "B", pidns: "N"}, false, ""},
	}
	for _, tt := range tests {
		why, ok := tt.self.mayTakeOver(tt.holder, gone)
		if ok != tt.want || why != tt.why && !(tt.why != "" && len(why) >= len(tt.why) && why[:len(tt.why)] == tt.why) {
			t.Errorf("%s: mayTakeOver = %q, %v; want %q, %v", tt.name, why, ok, tt.why, tt.want)
		}
	}
}
