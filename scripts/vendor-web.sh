#!/usr/bin/env bash
# vendor-web.sh — refresh the web UI's vendored xterm.js from npm.
#
# The files land in internal/web/assets/vendor/ and are committed, so building
# banger never needs npm or a JS build step. Run this only to upgrade:
#
#   scripts/vendor-web.sh                 # the versions pinned below
#   XTERM_VERSION=6.1.0 scripts/vendor-web.sh
set -euo pipefail

XTERM_VERSION=${XTERM_VERSION:-6.0.0}
FIT_VERSION=${FIT_VERSION:-0.11.0}

root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/internal/web/assets/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

command -v npm >/dev/null || { echo "vendor-web.sh: npm not found (apt-get install npm)" >&2; exit 1; }
(cd "$tmp" && npm pack --silent "@xterm/xterm@$XTERM_VERSION" "@xterm/addon-fit@$FIT_VERSION" >/dev/null)
mkdir -p "$tmp/xterm" "$tmp/fit"
tar -xzf "$tmp"/xterm-xterm-"$XTERM_VERSION".tgz -C "$tmp/xterm"
tar -xzf "$tmp"/xterm-addon-fit-"$FIT_VERSION".tgz -C "$tmp/fit"

mkdir -p "$dest"
install -m 0644 "$tmp/xterm/package/lib/xterm.mjs" "$dest/xterm.mjs"
install -m 0644 "$tmp/xterm/package/css/xterm.css" "$dest/xterm.css"
install -m 0644 "$tmp/xterm/package/LICENSE" "$dest/LICENSE.xterm"
install -m 0644 "$tmp/fit/package/lib/addon-fit.mjs" "$dest/addon-fit.mjs"
install -m 0644 "$tmp/fit/package/LICENSE" "$dest/LICENSE.addon-fit"
# The .mjs files end with a sourceMappingURL to maps we do not ship.
sed -i '/^\/\/# sourceMappingURL=/d' "$dest/xterm.mjs" "$dest/addon-fit.mjs"
cat > "$dest/VERSIONS" <<EOV
@xterm/xterm $XTERM_VERSION
@xterm/addon-fit $FIT_VERSION
EOV
echo "vendored @xterm/xterm $XTERM_VERSION and @xterm/addon-fit $FIT_VERSION into $dest"
