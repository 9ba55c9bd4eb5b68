package firecracker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// testUID is the unprivileged id test VMs' Firecracker runs as.
const testUID = 2000000124

// jailEnv is a jailed engine on the fake jailer: the test binary as the
// jailer and (through a symlink, to prove the canonical exec name) as
// firecracker, a chroot base the jailed uid can walk to, and spec's tap
// made in a network namespace the jailer joins.
type jailEnv struct {
	e    *Engine
	spec vmm.Spec
	base string
	ns   string
}

func newJailEnv(t *testing.T) *jailEnv {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a real uid drop, device nodes, a tap in a network namespace): run as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun: modprobe tun")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The fake firecracker runs as the uid from inside the jail, found by
	// its host path (the fake cannot chroot): the path must be walkable.
	base := walkableDir(t)
	link := filepath.Join(t.TempDir(), "firecracker")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	ns := "banger-fc-" + strings.ToLower(randName())
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	spec := fakeSpec(t)
	// Owned by root, as netw makes them (netlink always sends TUNSETOWNER).
	mustRun(t, "ip", "-n", ns, "tuntap", "add", "dev", spec.Tap, "mode", "tap", "user", "0", "group", "0")
	t.Setenv(fakeJailerEnv, "1")
	e := New(Config{Binary: link, JailerBinary: exe, Version: "fake", ChrootBase: base, TapNetns: "/run/netns/" + ns})
	return &jailEnv{e: e, spec: spec, base: base, ns: "/run/netns/" + ns}
}

// walkableDir is an empty directory whose ancestors others may traverse.
// (short: the fake binds its API socket at the jail's host path, and a
// Unix socket path has at most 107 bytes).
func walkableDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "fcj")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (j *jailEnv) start(t *testing.T) vmm.Handles {
	t.Helper()
	h, err := j.e.Start(context.Background(), j.spec)
	if err != nil {
		t.Fatalf("jailed Start: %v", err)
	}
	t.Cleanup(func() { _ = j.e.Kill(context.Background(), h) })
	return h
}

// A jailed Firecracker runs as the VM's uid in the jail named after the
// canonical exec file, with its tap handed to that uid (the fake attaches
// to it as the uid, which the kernel refuses on a root-owned tap), its
// cgroup limits and its own pid; Stop leaves no jail.
func TestJailedStartRunsAsTheVMsUID(t *testing.T) {
	j := newJailEnv(t)
	h := j.start(t)
	exe, _ := os.Executable()
	want := filepath.Join(j.base, filepath.Base(exe), j.spec.Name)
	if h.Extra["jail_dir"] != want {
		t.Errorf("jail dir %q, want %q (the canonical exec file's name)", h.Extra["jail_dir"], want)
	}
	c, err := vmmtest.ReadConfinement(h.PID)
	if err != nil {
		t.Fatal(err)
	}
	if c.UIDs[0] != "2000000124" || c.GIDs[0] != "2000000124" || c.CapEff != "0000000000000000" || len(c.Groups) != 0 {
		t.Errorf("jailed firecracker runs as %+v", c)
	}
	if out, _ := exec.Command("ip", "-n", filepath.Base(j.ns), "-d", "link", "show", "dev", j.spec.Tap).Output(); !strings.Contains(string(out), "user 2000000124 group 2000000124") {
		t.Errorf("tap not handed to uid %d: %s", testUID, out)
	}
	if st, err := j.e.State(context.Background(), h); err != nil || st != vmm.StateRunning {
		t.Errorf("State = %q, %v", st, err)
	}
	if err := j.e.Stop(context.Background(), h, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.Extra["jail_dir"]); err == nil {
		t.Error("jail left after Stop")
	}
}

// A jailed VM cannot rewrite the shared kernel: it is not chowned, its
// mode and content stay, and the jailed uid's write through the jail fails.
func TestAttackJailedUIDCannotWriteSharedKernel(t *testing.T) {
	j := newJailEnv(t)
	var before unix.Stat_t
	if err := unix.Stat(j.spec.Vmlinux, &before); err != nil {
		t.Fatal(err)
	}
	content, _ := os.ReadFile(j.spec.Vmlinux)
	h := j.start(t)
	inJail := filepath.Join(h.Extra["jail_dir"], "root", jailKernel)
	cmd := exec.Command("/bin/sh", "-c", "echo pwned >> "+inJail)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testUID, Gid: testUID, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("uid %d wrote the shared kernel through the jail (%s)", testUID, out)
	}
	var after unix.Stat_t
	if err := unix.Stat(j.spec.Vmlinux, &after); err != nil {
		t.Fatal(err)
	}
	if after.Uid != before.Uid || after.Gid != before.Gid || after.Mode != before.Mode {
		t.Errorf("shared kernel changed owner/mode: %d:%d %o → %d:%d %o", before.Uid, before.Gid, before.Mode, after.Uid, after.Gid, after.Mode)
	}
	if now, _ := os.ReadFile(j.spec.Vmlinux); !bytes.Equal(now, content) {
		t.Error("shared kernel content changed")
	}
}

// Disks on another filesystem than the jail (the loop-backed XFS pool)
// cannot be hard-linked (EXDEV): they are bind-mounted, writable by the
// jailed uid, and unmounted when the VM stops; the disk stays.
func TestJailedDiskOnAnotherFilesystem(t *testing.T) {
	j := newJailEnv(t)
	other := t.TempDir()
	mustRun(t, "mount", "-t", "tmpfs", "-o", "size=4m", "banger-test", other)
	t.Cleanup(func() { _ = unix.Unmount(other, unix.MNT_DETACH) })
	for i := range j.spec.Disks {
		p := filepath.Join(other, j.spec.Disks[i].ID+".ext4")
		if err := os.WriteFile(p, []byte("disk"), 0o600); err != nil {
			t.Fatal(err)
		}
		j.spec.Disks[i].Path = p
	}
	if err := os.Link(j.spec.Disks[0].Path, filepath.Join(j.base, "probe")); !errors.Is(err, unix.EXDEV) {
		t.Fatalf("link across filesystems = %v, want EXDEV (the test's premise)", err)
	}
	h := j.start(t)
	if err := j.e.Kill(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.Extra["jail_dir"]); err == nil {
		t.Error("jail left after Kill")
	}
	for _, d := range j.spec.Disks {
		if b, err := os.ReadFile(d.Path); err != nil || string(b) != "disk" {
			t.Errorf("disk %s after Kill: %q, %v", d.Path, b, err)
		}
	}
}

// A jail left by an unclean exit (Firecracker SIGKILLed, no cleanup) does
// not stop the next start: the jailer's mknod would fail with EEXIST.
func TestJailedStartAfterUncleanExit(t *testing.T) {
	j := newJailEnv(t)
	h := j.start(t)
	_ = unix.Kill(h.PID, unix.SIGKILL)
	for i := 0; i < 100 && j.e.Alive(h); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(h.Extra["jail_dir"], "root", "dev", "kvm")); err != nil {
		t.Fatalf("no stale jail to test with: %v", err)
	}
	h2 := j.start(t)
	if err := j.e.Kill(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
}

// Without a jailer Firecracker is refused unless the config opts out.
func TestUnjailedNeedsOptOut(t *testing.T) {
	exe, _ := os.Executable()
	if info := New(Config{Binary: exe, Version: "fake"}).Info(); info.Available || !strings.Contains(info.Reason, "firecracker_unjailed") {
		t.Errorf("Info without a jailer = %+v", info)
	}
	if info := New(Config{Binary: exe, Version: "fake", Unjailed: true}).Info(); !info.Available {
		t.Errorf("Info with the opt-out = %+v", info)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func randName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
