#!/usr/bin/env bash
# Installs the host packages banger needs (only those missing) and downloads
# the Go modules. Needs root for apt.
set -euo pipefail
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH
missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "banger needs these packages: ${missing[*]} — run: sudo make deps" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
	echo "Go is missing: install Go ≥ 1.24 (https://go.dev/dl) to /usr/local/go" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
go mod download
