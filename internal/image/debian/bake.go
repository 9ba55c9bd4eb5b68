package debian

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/agent"
	"syscall"
)

// The bake step configures the debootstrapped tree for a banger guest
// without booting it. The guest contract it sets up:
//   - root is /dev/vda (ext4, rw), the work disk /dev/vdb is mounted on /root
//     (nofail), carrying root's dotfiles and ~/.ssh/authorized_keys;
//   - the address comes from ip= on the kernel command line
//     (systemd-network-generator + systemd-networkd; the kernel lacks IP_PNP),
//     the hostname from systemd.hostname=, DNS from banger.dns=IP[,IP];
//   - sshd takes keys only, with a per-VM ed25519 host key made on first boot;
//   - banger-agent starts from its udev rule when the agent channel exists.

// sshdConfig is a drop-in: sshd keeps the first value it reads, and
// Debian's sshd_config includes sshd_config.d/*.conf at the top.
const sshdConfig = `# banger: keys only, one ed25519 host key generated per VM on first boot
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
`

// sshHostKeyDropIn makes ssh.service create the host key before its config
// test (the list is reset so the key exists before `sshd -t`).
const sshHostKeyDropIn = `# banger: each VM gets its own host key on first boot; start once the work
# disk (root's authorized_keys) is mounted, or its mount has failed.
[Unit]
After=root.mount

[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || exec /usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
`

// dnsScript writes /etc/resolv.conf, /etc/hosts and /etc/hostname from the
// kernel command line: banger.dns=IP[,IP] and the hostname systemd set from
// systemd.hostname=.
const dnsScript = `#!/bin/sh
# banger: DNS servers and hosts entries from the kernel command line.
set -eu
set -f
dns=""
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	banger.dns=*) dns="${arg#banger.dns=}" ;;
	esac
done
host="$(cat /proc/sys/kernel/hostname)"
{
	echo "127.0.0.1 localhost"
	echo "::1 localhost ip6-localhost ip6-loopback"
	if [ -n "$host" ] && [ "$host" != "(none)" ]; then
		echo "127.0.1.1 $host.vm $host"
	fi
} >/etc/hosts.banger
mv /etc/hosts.banger /etc/hosts
if [ -n "$host" ] && [ "$host" != "(none)" ]; then
	echo "$host" >/etc/hostname
fi
if [ -z "$dns" ]; then
	exit 0
fi
{
	for ip in $(echo "$dns" | tr ',' ' '); do
		echo "nameserver $ip"
	done
	echo "search vm"
} >/etc/resolv.conf.banger
mv /etc/resolv.conf.banger /etc/resolv.conf
`

const dnsUnit = `[Unit]
Description=banger: DNS and hosts from the kernel command line
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=sysinit.target network-pre.target network-online.target nss-lookup.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/banger-dns

[Install]
WantedBy=sysinit.target
`

// fstab: udev announces /dev/vdb late under software emulation (20 s and
// more with several guests), hence the long device timeout; nofail keeps a
// VM without a work disk booting.
const fstab = `# banger: system disk and work disk
/dev/vda / ext4 defaults,errors=remount-ro 0 1
/dev/vdb /root ext4 defaults,nofail,x-systemd.device-timeout=60s 0 2
`

// enableUnits are enabled in the image.
var enableUnits = []string{"systemd-networkd.service", "systemd-network-generator.service", "banger-dns.service"}

// maskUnits would slow the boot, wait on the network, prompt on the
// console or run periodic jobs a disposable VM does not need.
var maskUnits = []string{
	"systemd-networkd-wait-online.service", "serial-getty@ttyS0.service", "getty@tty1.service",
	"systemd-firstboot.service", "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer",
	"e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer",
	"systemd-timesyncd.service", "getty-static.service", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
	"modprobe@dm_mod.service",
}

func (bd *makeRun) bake(ctx context.Context) error {
	if err := bd.bakeAgent(); err != nil {
		return err
	}
	if err := bd.bakeSSH(); err != nil {
		return err
	}
	files := []struct {
		path string
		mode os.FileMode
		data string
	}{
		{"usr/local/sbin/banger-dns", 0o755, dnsScript},
		{"etc/systemd/system/banger-dns.service", 0o644, dnsUnit},
		{"etc/fstab", 0o644, fstab},
		{"etc/hosts", 0o644, "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"},
		{"etc/machine-id", 0o444, ""}, // empty: each VM makes its own on first boot
	}
	for _, f := range files {
		if err := writeFile(bd.root, f.path, f.mode, []byte(f.data)); err != nil {
			return err
		}
	}
	for _, p := range []string{"etc/hostname", "var/lib/dbus/machine-id"} { // the cmdline names the VM
		if err := os.Remove(filepath.Join(bd.root, p)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := bd.ch.run(ctx, nil, append([]string{"systemctl", "enable"}, enableUnits...)...); err != nil {
		return err
	}
	if err := bd.ch.run(ctx, nil, append([]string{"systemctl", "mask"}, maskUnits...)...); err != nil {
		return err
	}
	if err := bd.ch.run(ctx, nil, "systemctl", "set-default", "multi-user.target"); err != nil {
		return err
	}
	return bd.cleanTree(ctx)
}

// bakeAgent installs the guest agent and its unit and udev rule.
func (bd *makeRun) bakeAgent() error {
	data, err := os.ReadFile(bd.AgentBin)
	if err != nil {
		return fmt.Errorf("reading the agent binary: %w", err)
	}
	if err := writeFile(bd.root, strings.TrimPrefix(agent.AgentPath, "/"), 0o755, data); err != nil {
		return err
	}
	for _, f := range agent.GuestFiles() {
		if err := writeFile(bd.root, strings.TrimPrefix(f.Path, "/"), f.Mode, f.Data); err != nil {
			return err
		}
	}
	return nil
}

// bakeSSH authorizes the key for root, configures sshd and removes the host
// keys the package made at build time.
func (bd *makeRun) bakeSSH() error {
	if err := os.MkdirAll(filepath.Join(bd.root, "root/.ssh"), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(bd.root, "root/.ssh"), 0o700); err != nil {
		return err
	}
	key := strings.TrimSpace(bd.SSHPubKey) + "\n"
	if err := writeFile(bd.root, "root/.ssh/authorized_keys", 0o600, []byte(key)); err != nil {
		return err
	}
	if err := writeFile(bd.root, "etc/ssh/sshd_config.d/banger.conf", 0o644, []byte(sshdConfig)); err != nil {
		return err
	}
	if err := writeFile(bd.root, "etc/systemd/system/ssh.service.d/banger-hostkey.conf", 0o644,
		[]byte(sshHostKeyDropIn)); err != nil {
		return err
	}
	keys, _ := filepath.Glob(filepath.Join(bd.root, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	return nil
}

// cleanTree shrinks the tree, drops build-only files, leaves an empty
// resolv.conf for banger-dns to fill and unmounts the chroot.
func (bd *makeRun) cleanTree(ctx context.Context) error {
	if err := bd.ch.run(ctx, nil, "apt-get", "clean"); err != nil {
		return err
	}
	for _, pat := range []string{"var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/debconf/*-old",
		"var/lib/dpkg/*-old", "boot/initrd.img-*", "usr/sbin/policy-rc.d", "root/.npm", "tmp/*", "var/tmp/*"} {
		m, _ := filepath.Glob(filepath.Join(bd.root, pat))
		for _, p := range m {
			if filepath.Base(p) == "lock" || filepath.Base(p) == "partial" {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	if err := writeFile(bd.root, "etc/resolv.conf", 0o644, []byte("# written at boot by banger-dns\n")); err != nil {
		return err
	}
	return bd.ch.Close()
}

// writeFile writes data to root/rel with mode, replacing what was there
// (a symlink is replaced, never followed) and creating parent directories.
// A symlink among the parents is refused: it could point out of the tree.
func writeFile(root, rel string, mode os.FileMode, data []byte) error {
	p := filepath.Join(root, rel)
	if err := mkdirInRoot(root, filepath.Dir(rel)); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("replacing /%s: %w", rel, err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return fmt.Errorf("writing /%s: %w", rel, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing /%s: %w", rel, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mkdirInRoot creates root/rel's directories, refusing symlinked parents.
func mkdirInRoot(root, rel string) error {
	cur := root
	for _, part := range strings.Split(filepath.Clean(rel), string(filepath.Separator)) {
		if part == "." || part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		switch {
		case os.IsNotExist(err):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&os.ModeSymlink != 0:
			return fmt.Errorf("refusing to write through symlink %s", strings.TrimPrefix(cur, root))
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", strings.TrimPrefix(cur, root))
		}
	}
	return nil
}
