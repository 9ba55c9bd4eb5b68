#!/usr/bin/env bash
# The demo: make the default image if it is missing, then run a real command
# in a fresh VM and print its output. Honours --config via $BANGER_CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
banger=bin/banger
image=${BANGER_DEMO_IMAGE:-default}

if [ "$(id -u)" -ne 0 ]; then
	echo "the demo needs root (it creates a bridge, taps and VMs): sudo make demo" >&2
	exit 1
fi
echo "== banger doctor" >&2
$banger doctor || true
if ! $banger image show "$image" >/dev/null 2>&1; then
	echo "== building the $image image from Debian (first run only, ~2-4 min)" >&2
	$banger image create "$image" --from-debian --with opencode || $banger image create "$image" --from-debian
fi
echo "== banger vm run --image $image -- uname -a" >&2
start=$(date +%s.%N)
$banger vm run --image "$image" -- uname -a
awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "== done in %.1fs (create, boot, run, delete)\n", e - s }' >&2
