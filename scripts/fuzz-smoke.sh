#!/usr/bin/env bash
# Runs every fuzz target of the repository (each `func FuzzX` of a _test.go
# file) for a short, fixed number of inputs, one target at a time, as
# `go test -fuzz` requires; the committed seeds run first (they are also
# plain tests of `go test`). A failing input is written by go test to the
# package's testdata/fuzz/FuzzX/, to be fixed and committed as a seed.
#
#   scripts/fuzz-smoke.sh [-list]   -list: print "package target" and exit
#
# Environment:
#   GO          the go command (default go)
#   FUZZ_EXECS  inputs per target (default 10000). A count, not a duration:
#               with a duration (-fuzztime 4s) the Go 1.26 fuzzer can fail a
#               target with "context deadline exceeded" when its time runs
#               out (go.dev/issue/75804), which is no finding.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
execs=${FUZZ_EXECS:-10000}

# "<dir> <target>" for every fuzz target, in a stable order.
targets=$(git ls-files '*_test.go' | xargs grep -H '^func Fuzz[A-Za-z0-9_]*(' |
	sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|./\1 \2|' | sort)
if [ "${1:-}" = -list ]; then
	echo "$targets"
	exit 0
fi

# Milliseconds since the epoch.
now() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }
total=$(now)
n=0
while read -r pkg target; do
	start=$(now)
	if ! out=$("$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "${execs}x" "$pkg" 2>&1); then
		echo "$out"
		echo "fuzz-smoke: $target ($pkg) FAILED" >&2
		exit 1
	fi
	n=$((n + 1))
	printf 'fuzz-smoke: %-26s %-20s %6ss\n' "$target" "$pkg" "$(secs $(($(now) - start)))"
done <<<"$targets"
printf 'fuzz-smoke: %d targets, %d inputs each, %ss\n' "$n" "$execs" "$(secs $(($(now) - total)))"
