#!/bin/sh
# banger build script: opencode, the AI coding agent's server, on port 4096.
#
# Installs Node.js (from the Debian mirror, unless npm is there already),
# opencode-ai from npm, a launcher that picks the opencode build this CPU can
# run, and opencode.service running `opencode serve --hostname 0.0.0.0
# --port 4096` as root in /root. It is what `banger image create --with
# opencode` does in its chroot; `banger image build NAME --from IMAGE --with
# opencode` runs this script as root in the builder VM, and it works as a
# plain --script too.
#
# apt and npm use $http_proxy / $https_proxy when they are set. A host behind
# a TLS-inspecting proxy passes its CA bundle as $BANGER_HOST_CA (banger does
# that by itself for --with opencode).
#
# $BANGER_STEP splits the script for image create, which must not run npm's
# third-party code as root on the host: "deps" installs Node.js only, banger
# then runs npm itself in a sandbox and puts opencode-ai into /usr/local,
# and "config" does the rest (no npm, no opencode run). Unset: everything.
set -eu
export DEBIAN_FRONTEND=noninteractive
step=${BANGER_STEP:-all}

if [ "$step" != config ] && ! command -v npm >/dev/null 2>&1; then
	apt-get update -q
	apt-get install -y -q --no-install-recommends nodejs npm
fi
[ "$step" = deps ] && exit 0
if [ "$step" = all ]; then
	if [ -n "${BANGER_HOST_CA:-}" ] && [ -s "$BANGER_HOST_CA" ]; then
		export NODE_EXTRA_CA_CERTS="$BANGER_HOST_CA"
	fi
	npm install -g --no-fund --no-audit --no-update-notifier opencode-ai
fi

mkdir -p /usr/local/sbin /etc/systemd/system
cat >/usr/local/sbin/banger-opencode <<'LAUNCHER'
#!/bin/sh
# banger: pick the opencode build this CPU can run.
mods=/usr/local/lib/node_modules/opencode-ai/node_modules
bin=/usr/local/bin/opencode
if ! grep -qw avx2 /proc/cpuinfo && [ -x "$mods/opencode-linux-x64-baseline/bin/opencode" ]; then
	bin="$mods/opencode-linux-x64-baseline/bin/opencode"
fi
exec "$bin" "$@"
LAUNCHER
chmod 0755 /usr/local/sbin/banger-opencode
[ "$step" = all ] && /usr/local/sbin/banger-opencode --version

cat >/etc/systemd/system/opencode.service <<'UNIT'
[Unit]
Description=opencode server (banger)
After=network-online.target local-fs.target
Wants=network-online.target
# It answers only with the VM's password (HTTP basic auth, user opencode):
# banger's daemon writes OPENCODE_SERVER_PASSWORD=... to this root-only file
# on /run through the guest agent at each boot, then starts the service.
ConditionPathExists=/run/banger/opencode.env

[Service]
User=root
WorkingDirectory=/root
Environment=HOME=/root
EnvironmentFile=/run/banger/opencode.env
ExecStart=/usr/local/sbin/banger-opencode serve --hostname 0.0.0.0 --port 4096
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable opencode.service
rm -rf /root/.npm
