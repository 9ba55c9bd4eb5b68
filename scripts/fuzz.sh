#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time each (default 10s).
# The committed seed corpora (testdata/fuzz/*) run as part of plain go test.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH
cd "$(dirname "$0")/.."
dur=${1:-10s}
n=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($dur)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$dur" "$pkg" >/tmp/banger-fuzz.log 2>&1 || {
			cat /tmp/banger-fuzz.log
			echo "FAIL: fuzz $pkg $target" >&2
			exit 1
		}
		n=$((n + 1))
	done
done
echo "fuzz: $n targets passed"
