//go:build !linux

package checkpoint

// identify tells nothing where there is no Linux /proc: a lease is then
// never taken over, only left to expire.
func identify(pid int) (start uint64, boot, pidns string) { return 0, "", "" }

// processGone is never sure elsewhere than on Linux.
func processGone(pid int, start uint64) bool { return false }
