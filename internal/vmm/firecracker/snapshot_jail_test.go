package firecracker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/mountinfo"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker/fctest"
	"banger/internal/vmm/vmmtest"
)

// shmDir is a directory on tmpfs (another filesystem than the jail's, so
// the memory file goes into a child's jail as a read-only bind mount).
func shmDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "banger-fcsnap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// jailedChild is a fork's spec with its own tap (made in the jail env's
// network namespace, root's like netw's) and its own uid.
func (j *jailEnv) child(t *testing.T, name, tap string, uid int) vmm.Spec {
	t.Helper()
	mustRun(t, "ip", "-n", filepath.Base(j.ns), "tuntap", "add", "dev", tap, "mode", "tap", "user", "0", "group", "0")
	return childSpec(t, j.spec, name, tap, uid)
}

// asUID runs a shell command as uid:uid with no supplementary groups.
func asUID(uid int, script string) ([]byte, error) {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	return cmd.CombinedOutput()
}

// The whole sequence under the (fake) jailer: the parent saves as its uid
// inside its jail, Save copies the files out; the child runs as its own
// uid in its own jail, with its own tap, and cannot write the memory file
// its siblings map (bind-mounted read-only here: the snapshot is on
// tmpfs). Killing the child leaves no jail and no mount.
func TestSnapshotForkJailed(t *testing.T) {
	j := newJailEnv(t)
	h := j.start(t)
	waitAgent(t, h.AgentSocket)
	snap := snapshotParent(t, j.e, j.spec, h, shmDir(t))
	for _, p := range []string{jailStateOut, jailMemOut} {
		if _, err := os.Lstat(filepath.Join(h.Extra["jail_dir"], "root", p)); err == nil {
			t.Errorf("%s left in the parent's jail after Save", p)
		}
	}
	uid := testUID + 1
	child := j.child(t, "fc2", "bgtap2", uid)
	ch := restoreChild(t, j.e, child, snap)
	c, err := vmmtest.ReadConfinement(ch.PID)
	if err != nil {
		t.Fatal(err)
	}
	if c.UIDs[0] != strconv.Itoa(uid) || c.CapEff != "0000000000000000" {
		t.Errorf("child firecracker runs as %+v, want uid %d", c, uid)
	}
	if out, _ := exec.Command("ip", "-n", filepath.Base(j.ns), "-d", "link", "show", "dev", child.Tap).Output(); !strings.Contains(string(out), "user "+strconv.Itoa(uid)) {
		t.Errorf("child's tap not handed to uid %d: %s", uid, out)
	}
	jailSnap := filepath.Join(ch.Extra["jail_dir"], "root", jailSnapDir)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(jailSnap, stateName), &st); err != nil || st.Uid != 0 || st.Gid != uint32(uid) || st.Mode&0o777 != 0o440 {
		t.Errorf("state in the jail: %+v, %v; want root:%d 0440", st, err, uid)
	}
	// The attack: the child's uid writes the shared memory template.
	mem := filepath.Join(jailSnap, memName)
	if m, _ := mountinfo.Under(ch.Extra["jail_dir"]); len(m) != 1 || m[0] != mem {
		t.Errorf("mounts in the child's jail = %v, want the read-only memory bind mount %s", m, mem)
	}
	if out, err := asUID(uid, "printf pwned | dd of="+mem+" conv=notrunc 2>&1"); err == nil {
		t.Errorf("uid %d wrote the memory template through its jail: %s", uid, out)
	} else {
		t.Logf("uid %d writing %s: %s", uid, mem, strings.TrimSpace(string(out)))
	}
	if out, err := asUID(uid, "head -c 16 "+mem); err != nil || !strings.HasPrefix(string(out), "fctest guest mem") {
		t.Errorf("uid %d cannot read its memory file: %q, %v", uid, out, err)
	}
	if got := sha(t, snap.Memory); got != snap.MemorySHA256 {
		t.Error("memory template changed")
	}
	if err := j.e.Kill(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ch.Extra["jail_dir"]); err == nil {
		t.Error("child's jail left after Kill")
	}
	if m, _ := mountinfo.Under(j.base); len(m) != 0 {
		t.Errorf("mounts left under the jail base: %v", m)
	}
	if _, err := os.Stat(snap.Memory); err != nil {
		t.Errorf("the snapshot's memory file went with the child: %v", err)
	}
}

// A compromised parent VMM keeps the files it wrote open and overwrites
// them after Save returned: the snapshot must not change (Save copies into
// new root-owned inodes). Against a Save that moved the jail's files out
// instead, the hashes no longer match 200ms later.
func TestAttackParentRewritesSnapshotAfterSave(t *testing.T) {
	j := newJailEnv(t)
	t.Setenv(fctest.EnvHostileSnapshot, "1")
	h := j.start(t)
	waitAgent(t, h.AgentSocket)
	snap := snapshotParent(t, j.e, j.spec, h, t.TempDir())
	time.Sleep(500 * time.Millisecond) // the fake writes 200ms after create
	if sha(t, snap.State) != snap.StateSHA256 || sha(t, snap.Memory) != snap.MemorySHA256 {
		t.Fatal("the parent's uid rewrote the snapshot after Save returned")
	}
	child := j.child(t, "fc2", "bgtap2", testUID+1)
	restoreChild(t, j.e, child, snap)
}

// Jailed refusals leave no jail: one refused before Firecracker starts,
// one refused by Firecracker itself.
func TestRestoreJailedRefusalsLeaveNoJail(t *testing.T) {
	j := newJailEnv(t)
	h := j.start(t)
	waitAgent(t, h.AgentSocket)
	snap := snapshotParent(t, j.e, j.spec, h, t.TempDir())
	child := j.child(t, "fc2", "bgtap2", testUID+1)
	jail := filepath.Join(filepath.Dir(h.Extra["jail_dir"]), child.Name)

	bad := snap
	bad.MemoryMiB = 256
	if _, err := j.e.Restore(context.Background(), child, bad); !api.IsFailedPrecondition(err) {
		t.Errorf("Restore of another shape = %v", err)
	}
	if _, err := os.Stat(jail); err == nil {
		t.Error("jail made for a refused restore")
	}
	garbage := snap
	garbage.State = filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage.State, []byte("garbage, not a snapshot"), 0o400)
	garbage.StateSize, garbage.StateSHA256 = 23, sha(t, garbage.State)
	_, err := j.e.Restore(context.Background(), child, garbage)
	if err == nil || !strings.Contains(err.Error(), "Magic value") {
		t.Fatalf("Restore of a garbage state = %v", err)
	}
	t.Logf("refused: %v", err)
	if _, err := os.Stat(jail); err == nil {
		t.Error("jail left after a refused load")
	}
	checkNoProcess(t, "\x00--id\x00"+child.Name+"\x00")
	if m, _ := mountinfo.Under(j.base); len(m) != 0 {
		t.Errorf("mounts left under the jail base: %v", m)
	}
}
