package hostcap

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
)

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, /dev/kvm, nft): run the tests as root")
	}
}

func testConfig(t *testing.T, stateDir string) config.Config {
	cfg := config.Default()
	cfg.StateDir = stateDir
	return cfg
}

// TestIntegrationProbe runs the real probe and checks each answer against
// the host's ground truth; on the banger development machine (nested PVM) it
// also checks the exact known facts.
func TestIntegrationProbe(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	start := time.Now()
	c := Probe(context.Background(), cfg)
	took := time.Since(start)
	t.Logf("Probe took %v", took)
	if took > time.Second { // budget is ~300 ms; the shared machine is noisy
		t.Errorf("Probe took %v, want well under a second", took)
	}

	if !c.Root.OK {
		t.Errorf("root: %+v", c.Root)
	}
	if c.DeviceMapper.OK && (!exists(devMapperControl) || !kernelHasDM()) {
		t.Errorf("device-mapper OK without %s or the kernel driver", devMapperControl)
	}
	if c.VhostVsock.OK != exists(devVhostVsock) {
		t.Errorf("vhost-vsock OK=%v but exists=%v", c.VhostVsock.OK, exists(devVhostVsock))
	}
	if c.Tun.OK != exists(devTun) {
		t.Errorf("tun OK=%v but exists=%v (%s)", c.Tun.OK, exists(devTun), c.Tun.Detail)
	}
	if c.KVM.NestedPVM != exists(sysKVMPVM) {
		t.Errorf("NestedPVM=%v but %s exists=%v", c.KVM.NestedPVM, sysKVMPVM, exists(sysKVMPVM))
	}
	if c.KVM.OK && !c.KVM.Present {
		t.Errorf("KVM OK but not present")
	}
	if c.HostTSCkHz < 100_000 {
		t.Errorf("HostTSCkHz = %d, want a plausible frequency", c.HostTSCkHz)
	}
	if !c.StateDir.OK || !c.StateDir.Exists || c.StateDir.Probed != dir {
		t.Errorf("state dir: %+v", c.StateDir)
	}
	if c.StateDir.FSType == "ext4" && c.Reflink.OK {
		t.Errorf("reflink OK on ext4")
	}
	if c.FreeDisk.Bytes == 0 {
		t.Errorf("free disk 0: %+v", c.FreeDisk)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil && !c.QEMU.OK {
		t.Errorf("qemu on PATH but not OK: %+v", c.QEMU)
	}
	for _, tool := range c.Tools {
		if !tool.OK && tool.Fix == "" {
			t.Errorf("tool %s missing without a fix", tool.Name)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".banger-*"))
	if len(leftovers) > 0 {
		t.Errorf("probe left temp files: %v", leftovers)
	}

	if !exists(sysKVMPVM) {
		return
	}
	// The development machine: nested PVM, no DM, no vhost-vsock, no
	// firecracker; TUN, loop, QEMU present; state dir on ext4.
	if c.KVM.OK || !c.KVM.Present || c.KVM.Detail != pvmDetail || c.KVM.Fix != kvmHWFix {
		t.Errorf("kvm on the PVM host: %+v", c.KVM)
	}
	for name, cp := range map[string]Cap{"device-mapper": c.DeviceMapper, "vhost-vsock": c.VhostVsock, "firecracker": c.Firecracker.Cap} {
		if cp.OK || cp.Fix == "" {
			t.Errorf("%s: want missing with a fix, got %+v", name, cp)
		}
	}
	for name, cp := range map[string]Cap{"tun": c.Tun, "loop": c.Loop, "bridge": c.Bridge, "nftables": c.Nftables, "qemu": c.QEMU.Cap, "qemu-img": c.QEMUImg.Cap} {
		if !cp.OK {
			t.Errorf("%s: want ok, got %+v", name, cp)
		}
	}
	if c.StateDir.FSType != "ext4" || c.Reflink.OK {
		t.Errorf("state dir in /tmp: fs %s reflink %v, want ext4 without reflink", c.StateDir.FSType, c.Reflink.OK)
	}
	if !strings.HasPrefix(c.DeviceMapper.Detail, "device-mapper missing") {
		t.Errorf("device-mapper detail %q", c.DeviceMapper.Detail)
	}
	eng, accel, reason, err := ChooseEngine(cfg, c)
	if err != nil || eng != "qemu" || accel != "tcg" {
		t.Errorf("engine = %s/%s (%s), %v; want qemu/tcg", eng, accel, reason, err)
	}
	d, pool, reason, err := ChooseDiskDriver(cfg, c, eng)
	if err != nil || d != "reflink" || !pool {
		t.Errorf("disk driver = %s pool=%v (%s), %v; want the reflink pool", d, pool, reason, err)
	}
	t.Logf("engine %s/%s; disk %s pool=%v: %s", eng, accel, d, pool, reason)
}

// TestProbeMissingStateDir probes a state dir that does not exist
// yet: the nearest parent is examined and nothing is created.
func TestProbeMissingStateDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "a", "b")
	sd, _, free := probeStateDir(dir)
	if !sd.OK || sd.Exists || sd.Probed != parent || free.Bytes == 0 {
		t.Errorf("state dir: %+v, free %+v", sd, free)
	}
	if !strings.Contains(sd.Detail, "not created yet") {
		t.Errorf("detail %q", sd.Detail)
	}
	if exists(filepath.Join(parent, "a")) {
		t.Errorf("probe created the state dir")
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 0 {
		t.Errorf("probe left %d entries in %s", len(ents), parent)
	}
}

// TestIntegrationReflinkXFS makes a loop-mounted XFS with reflink and checks
// that the probe sees it clone.
func TestIntegrationReflinkXFS(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"mkfs.xfs", "losetup", "mount", "umount"} {
		if _, err := lookTool(tool); err != nil {
			t.Skipf("%s not found: apt-get install xfsprogs mount", tool)
		}
	}
	if !exists(devLoopControl) {
		t.Skip("no /dev/loop-control: modprobe loop")
	}
	tmp := t.TempDir()
	img, mnt := filepath.Join(tmp, "xfs.img"), filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(320 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mustRun(t, "mkfs.xfs", "-q", "-m", "reflink=1", img)
	loop := strings.TrimSpace(mustRun(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	mustRun(t, "mount", loop, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})

	sd, rl, _ := probeStateDir(mnt)
	if sd.FSType != "xfs" || !rl.OK {
		t.Fatalf("xfs reflink: fs %s, reflink %+v", sd.FSType, rl)
	}
	// A state dir not created yet on that filesystem reflinks too.
	sd, rl, _ = probeStateDir(filepath.Join(mnt, "banger"))
	if sd.Exists || !rl.OK {
		t.Errorf("missing dir on xfs: %+v %+v", sd, rl)
	}
	ents, _ := os.ReadDir(mnt)
	if len(ents) != 0 {
		t.Errorf("probe left %d entries on the xfs", len(ents))
	}
	cfg := testConfig(t, mnt)
	c := Caps{StateDir: sd, Reflink: rl}
	if d, pool, _, err := ChooseDiskDriver(cfg, c, "qemu"); err != nil || d != "reflink" || pool {
		t.Errorf("disk driver on xfs = %s pool=%v, %v; want reflink in place", d, pool, err)
	}
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	p, err := lookTool(name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestProbeFirecrackerScripts runs stand-in firecracker binaries (shell
// scripts printing a version) through the real probe.
func TestProbeFirecrackerScripts(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, bin string
		ok        bool
		version   string
		detail    string
	}{
		{name: "new", bin: script("fc18", `echo "Firecracker v1.8.0"; echo; echo "Supported snapshot data format versions: v4.0.0"`), ok: true, version: "1.8.0"},
		{name: "old", bin: script("fc17", `echo "Firecracker v1.7.0"`), version: "1.7.0", detail: "older than 1.8.0"},
		{name: "broken", bin: script("fcbad", `echo boom >&2; exit 3`), detail: "does not run"},
		{name: "garbage", bin: script("fcjunk", `echo hello`), detail: "no version"},
		{name: "missing", bin: filepath.Join(dir, "nope"), detail: "not found at"},
		{name: "missing on path", bin: "banger-no-such-firecracker", detail: "looked for banger-no-such-firecracker on PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := probeFirecracker(context.Background(), tt.bin)
			if b.OK != tt.ok || b.Version != tt.version || !strings.Contains(b.Detail, tt.detail) {
				t.Errorf("got %+v", b)
			}
			if !b.OK && b.Fix != fcFix {
				t.Errorf("fix %q", b.Fix)
			}
		})
	}
}
