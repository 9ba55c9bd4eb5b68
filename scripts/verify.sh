#!/usr/bin/env bash
# verify.sh — banger's live smoke test, with a leak audit.
#
# In a network namespace of its own (so the host's interfaces, routes and
# firewall are never touched) it starts a daemon, creates a VM from the cached
# test image, waits for daemon-observable readiness, runs `cat /etc/hostname`
# over ssh and a command through the guest agent, deletes the VM, and audits
# what is left: pool taps (tap-pool-*), the storage pool's loop device and
# mount, the bridge and banger's nft base chains are capacity; any other
# banger tap, loop device, dm target, nft rule, engine process, mount or VM
# dir is a leak and fails the run.
#
# One bounded deadline (VERIFY_DEADLINE seconds, default 300) covers boot and
# SSH; on timeout it dumps the VM's record, serial log tail, engine log,
# handles, tap state, sockets and banger's nft rules.
#
# VERIFY_PLANT_LEAK=tap|loop plants a leak (a stray tap in the namespace, a
# loop device on a file in the state dir) just before the audit, to prove
# the audit catches it: the run must then fail naming it.
#
# Needs root, bin/ built (make build) and the test image (make test-image).
set -uo pipefail
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=$root/bin
deadline=${VERIFY_DEADLINE:-300}
[ "$(id -u)" -eq 0 ] || { echo "verify.sh needs root" >&2; exit 1; }
[ -x "$bin/banger" ] || { echo "verify.sh: $bin/banger missing: run make build" >&2; exit 1; }

imgdir=$(go run ./internal/testimage/cmd/build-test-image 2>/dev/null) || {
	echo "verify.sh: no test image: run make test-image" >&2
	exit 1
}
id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
ns=bgr-v$id
state=/tmp/bgr-v$id
name=verify-$id
t0=$(date +%s)
fail=0

say() { printf '[verify %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
B() { ip netns exec "$ns" "$bin/banger" --config "$state/config.toml" "$@"; }

cleanup() {
	B daemon stop >/dev/null 2>&1
	for p in $(pgrep -f "$state" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
	sleep 0.3
	umount -l "$state/pool" 2>/dev/null
	losetup --list --noheadings -O NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
		case "$file" in "$state"/*) [ "$file" = "$state/pool.img" ] || losetup -d "$dev" ;; esac
	done
	for dev in $(losetup -j "$state/pool.img" 2>/dev/null | cut -d: -f1); do losetup -d "$dev"; done
	rm -rf "$state"
	ip netns del "$ns" 2>/dev/null
}
trap cleanup EXIT

dump() {
	echo "======== diagnostics for $name ========"
	echo "== vm record"; B vm show "$name" --json 2>&1
	local dir
	dir=$(B vm show "$name" --json 2>/dev/null | sed -n 's/.*"vm_dir": *"\([^"]*\)".*/\1/p' | head -1)
	if [ -n "$dir" ]; then
		echo "== handles ($dir/handles.json)"; cat "$dir/handles.json" 2>&1
		echo "== serial log tail"; tail -n 60 "$dir/serial.log" 2>&1
		echo "== engine log"; tail -n 40 "$dir/engine.log" 2>&1
		echo "== sockets"; ls -la "$dir" 2>&1
	fi
	echo "== taps"; ip -n "$ns" -d link show 2>&1 | grep -A2 -E 'tap|banger' | head -40
	echo "== nft (banger's tables)"; ip netns exec "$ns" nft list table inet banger 2>&1; ip netns exec "$ns" nft list table bridge banger 2>&1
	echo "== daemon log tail"; tail -n 40 "$state/bangerd.log" 2>&1
}

ip netns add "$ns" && ip -n "$ns" link set lo up || { echo "cannot create netns" >&2; exit 1; }
mkdir -p "$state" && chmod 700 "$state"
# `ip netns exec` gives the daemon a private mount namespace; mount its XFS
# pool here in the host's, as it stays mounted on a host after the first start.
truncate -s 16G "$state/pool.img" && mkfs.xfs -q -m reflink=1 "$state/pool.img" &&
	mkdir -p "$state/pool" && mount -o loop "$state/pool.img" "$state/pool" || { echo "cannot make the storage pool" >&2; exit 1; }
cat >"$state/config.toml" <<EOF
state_dir = "$state"
socket_path = "$state/bangerd.sock"
tap_pool_size = 2
ready_timeout = "${deadline}s"
memory = "512MiB"
vcpus = 1
disk_size = "1GiB"
default_image = "test"
agent_bin = "$bin/banger-agent"
ssh_key_path = "$(dirname "$(dirname "$imgdir")")/ssh/id_ed25519"
EOF

say "daemon up"
B daemon start >/dev/null || { echo "FAIL: daemon start"; exit 1; }
B daemon status >/dev/null || { echo "FAIL: daemon status"; exit 1; }
B image register test --kernel "$imgdir/vmlinuz" --initrd "$imgdir/initrd.img" --rootfs "$imgdir/rootfs.ext4" \
	--work-seed "$imgdir/work-seed.ext4" --vmlinux "$imgdir/vmlinux" >/dev/null || { echo "FAIL: image register"; exit 1; }
nft_base=$( (ip netns exec "$ns" nft -a list table inet banger; ip netns exec "$ns" nft -a list table bridge banger) 2>/dev/null | grep -c 'handle' || true)

say "create $name (deadline ${deadline}s for boot and ssh)"
end=$((t0 + deadline + 30))
if ! timeout "$deadline" ip netns exec "$ns" "$bin/banger" --config "$state/config.toml" vm create --name "$name" >/dev/null; then
	echo "FAIL: vm create did not finish"; dump; exit 1
fi
say "wait for daemon-observable readiness"
until B vm show "$name" --json 2>/dev/null | grep -q '"state": *"running"'; do
	[ "$(date +%s)" -lt "$end" ] || { echo "FAIL: never running"; dump; exit 1; }
	sleep 1
done
say "ssh cat /etc/hostname"
got=""
until got=$(timeout 30 ip netns exec "$ns" "$bin/banger" --config "$state/config.toml" vm ssh "$name" -- cat /etc/hostname 2>/dev/null) && [ -n "$got" ]; do
	[ "$(date +%s)" -lt "$end" ] || { echo "FAIL: ssh never answered"; dump; exit 1; }
	sleep 1
done
[ "$got" = "$name" ] || { echo "FAIL: hostname over ssh is '$got', want '$name'"; dump; fail=1; }
say "agent exec"
out=$(B vm exec "$name" -- sh -c 'echo agent-$((6*7))') || { echo "FAIL: agent exec"; dump; fail=1; }
[ "$out" = "agent-42" ] || { echo "FAIL: agent exec printed '$out'"; fail=1; }
say "delete"
B vm delete "$name" >/dev/null || { echo "FAIL: vm delete"; dump; fail=1; }

case "${VERIFY_PLANT_LEAK:-}" in
"") ;;
tap) say "planting a leak: tap-leak0"; ip -n "$ns" tuntap add dev tap-leak0 mode tap ;;
loop) say "planting a leak: a loop device"; truncate -s 1M "$state/leak.img" && losetup -f "$state/leak.img" ;;
*) echo "VERIFY_PLANT_LEAK must be tap or loop" >&2; exit 2 ;;
esac
say "leak audit"
leaks=()
for t in $(ip -n "$ns" -br link 2>/dev/null | awk '{print $1}' | cut -d@ -f1); do
	case "$t" in tap-pool-*|lo|banger0) ;; *) leaks+=("interface $t");; esac
done
while read -r dev file; do
	[ -n "$dev" ] || continue
	case "$file" in "$state/pool.img") ;; "$state"*) leaks+=("loop $dev on $file");; esac
done < <(losetup --list --noheadings -O NAME,BACK-FILE 2>/dev/null)
if command -v dmsetup >/dev/null && [ -e /dev/mapper/control ]; then
	for d in $(dmsetup ls 2>/dev/null | awk '/^banger-/{print $1}'); do leaks+=("dm target $d"); done
fi
nft_now=$( (ip netns exec "$ns" nft -a list table inet banger; ip netns exec "$ns" nft -a list table bridge banger) 2>/dev/null | grep -c 'handle' || true)
[ "$nft_now" = "$nft_base" ] || leaks+=("nft rules: $nft_base objects after start, $nft_now now")
for p in $(pgrep -f "qemu-system.*$state|firecracker.*$state" 2>/dev/null); do leaks+=("engine process $p"); done
while read -r mnt; do
	[ "$mnt" = "$state/pool" ] || leaks+=("mount $mnt")
done < <(awk -v s="$state" 'index($2, s) == 1 {print $2}' /proc/mounts)
for d in "$state"/vms/* "$state"/pool/vms/*; do [ -e "$d" ] && leaks+=("vm dir $d"); done
if [ ${#leaks[@]} -gt 0 ]; then
	echo "FAIL: leaks:"; printf '  %s\n' "${leaks[@]}"; fail=1
fi
if [ $fail -eq 0 ]; then
	say "verify: 1 passed, 0 failed"
else
	say "verify: 0 passed, 1 failed"
fi
exit $fail
