// Package disktest is the conformance suite every disk.Driver runs
// (containerd's snapshots/testsuite is the model): real ext4 bases made
// with mkfs.ext4, real reads and writes through the disk's format, and a
// leak check for loop devices, mounts and dm targets after every case.
// Fake is a driver with pretend kernel state for the tests of callers (it
// passes the suite); it knows nothing of VMs either.
//
// Decided behaviour the suite pins down:
//   - Create never inspects the base's content: a base that is not ext4
//     (any regular file; dmsnap needs a size that is a multiple of 512)
//     gives a disk with the same bytes.
//   - Create over a missing base is NotFound; into a missing directory is
//     NotFound; over an existing dst is AlreadyExists and leaves it alone.
//     None of them leaves anything behind.
//   - Remove is idempotent and accepts a half-made disk (only Files set).
//   - Detach returns the record to keep (no State, not Attached); a record
//     that went through JSON (handles.json) detaches and attaches the same.
//   - Export writes a raw, sparse file with the disk's content that outlives
//     the disk; over an existing file it is AlreadyExists.
//   - Grow never shrinks and keeps the data; Snapshot gives an independent
//     disk of the same driver. A driver whose Info says it cannot grow or
//     snapshot answers FailedPrecondition with a fix.
package disktest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/disk/internal/blk"
)

// BaseSize is the size of the ext4 base the suite makes.
const BaseSize = 64 << 20

// helloText is the content of /hello.txt in every base.
const helloText = "hello from the banger disk suite\n"

// NewDriver returns the driver under test for one case. dir is an empty
// directory where the suite puts the base and the disks; newDriver may
// prepare it (e.g. mount a reflink filesystem on it) and must undo that
// with t.Cleanup. Files it needs elsewhere go in t.TempDir() so that the
// leak check sees them.
type NewDriver func(t *testing.T, dir string) disk.Driver

// Run runs the conformance suite against the drivers newDriver returns.
func Run(t *testing.T, newDriver NewDriver) {
	RequireTools(t, "mkfs.ext4", "debugfs", "e2fsck")
	cases := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"CreateHasBaseContent", testCreateContent},
		{"WritesLeaveBaseAlone", testIsolation},
		{"DetachAttachKeepsData", testDetachAttach},
		{"RemoveIsIdempotent", testRemoveTwice},
		{"RemoveHalfMade", testRemoveHalfMade},
		{"CreateIntoMissingDir", testMissingDir},
		{"CreateOverMissingBase", testMissingBase},
		{"CreateOverExistingDst", testExistingDst},
		{"CreateOverNonExt4Base", testGarbageBase},
		{"ExportIsRawAndStandalone", testExport},
		{"ExportOverExistingDst", testExportExisting},
		{"GrowKeepsData", testGrow},
		{"SnapshotIsIndependent", testSnapshot},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			leakCheck(t, filepath.Dir(dir))
			d := newDriver(t, dir)
			e := &env{d: d, dir: dir, ctx: t.Context()}
			if qemuOnly := d.Info().Format == "qcow2"; qemuOnly {
				RequireTools(t, "qemu-img", "qemu-io")
			}
			c.fn(t, e)
		})
	}
}

// env is one case's driver and directory.
type env struct {
	d   disk.Driver
	dir string
	ctx context.Context
}

// base makes the ext4 base in the case's directory and returns its path.
func (e *env) base(t *testing.T) string {
	p := filepath.Join(e.dir, "base.ext4")
	MakeExt4(t, p, "64M")
	return p
}

// create calls Create and registers a Remove on cleanup.
func (e *env) create(t *testing.T, base, name string) disk.Disk {
	t.Helper()
	dk, err := e.d.Create(e.ctx, base, filepath.Join(e.dir, name))
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	t.Cleanup(func() { e.d.Remove(context.Background(), dk) })
	return dk
}

func testCreateContent(t *testing.T, e *env) {
	base := e.base(t)
	dk := e.create(t, base, "disk")
	info := e.d.Info()
	if dk.Driver != info.Name || dk.Format != info.Format {
		t.Errorf("disk driver/format = %s/%s, Info says %s/%s", dk.Driver, dk.Format, info.Name, info.Format)
	}
	if len(dk.Files) == 0 {
		t.Errorf("Disk.Files is empty; Remove could not find the disk's files")
	}
	for _, f := range dk.Files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("recorded file: %v", err)
		}
	}
	raw := RawView(t, dk)
	if got := Cat(t, raw, "/hello.txt"); got != helloText {
		t.Errorf("/hello.txt on the disk = %q, want %q", got, helloText)
	}
	if out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn on the new disk: %v\n%s", err, out)
	}
}

// writeOff is where the suite writes: the last 64 KiB of the base, which
// the ext4 layout of a 64 MiB filesystem leaves unused.
const (
	writeLen = 64 << 10
	writeOff = BaseSize - writeLen
)

func testIsolation(t *testing.T, e *env) {
	base := e.base(t)
	before := SHA256(t, base)
	a := e.create(t, base, "a")
	b := e.create(t, base, "b")
	Write(t, a, writeOff, 0xab, writeLen)
	if got := ReadRaw(t, RawView(t, a), writeOff, writeLen); !allBytes(got, 0xab) {
		t.Fatalf("disk a does not read back what was written")
	}
	if got := ReadRaw(t, RawView(t, b), writeOff, writeLen); !allBytes(got, 0) {
		t.Errorf("disk b sees disk a's write")
	}
	Write(t, b, writeOff, 0xcd, writeLen)
	if got := ReadRaw(t, RawView(t, a), writeOff, writeLen); !allBytes(got, 0xab) {
		t.Errorf("disk a sees disk b's write")
	}
	if after := SHA256(t, base); after != before {
		t.Errorf("base changed: sha256 %s before, %s after", before, after)
	}
	for _, dk := range []disk.Disk{a, b} {
		if got := Cat(t, RawView(t, dk), "/hello.txt"); got != helloText {
			t.Errorf("%s: /hello.txt = %q after writes", dk.Path, got)
		}
	}
}

func testDetachAttach(t *testing.T, e *env) {
	base := e.base(t)
	dk := e.create(t, base, "disk")
	Write(t, dk, writeOff, 0x5a, writeLen)
	if got, want := e.d.Attached(dk), e.d.Info().KernelState; got != want {
		t.Errorf("Attached after Create = %v, want %v (Info().KernelState)", got, want)
	}
	dk = throughJSON(t, dk)
	detached, err := e.d.Detach(e.ctx, dk)
	if err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if len(detached.State) != 0 || e.d.Attached(detached) {
		t.Errorf("after Detach: State %s, Attached %v; want none", detached.State, e.d.Attached(detached))
	}
	for _, f := range dk.Files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("Detach removed a file: %v", err)
		}
	}
	if _, err := e.d.Detach(e.ctx, dk); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	again, err := e.d.Attach(e.ctx, throughJSON(t, detached))
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { e.d.Remove(context.Background(), again) })
	if got := ReadRaw(t, RawView(t, again), writeOff, writeLen); !allBytes(got, 0x5a) {
		t.Errorf("data written before Detach is gone after Attach")
	}
	if _, err := e.d.Attach(e.ctx, again); err != nil {
		t.Errorf("Attach of an attached disk: %v", err)
	}
}

func testRemoveTwice(t *testing.T, e *env) {
	base := e.base(t)
	dk, err := e.d.Create(e.ctx, base, filepath.Join(e.dir, "disk"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for i := range 2 {
		if err := e.d.Remove(e.ctx, dk); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	for _, f := range dk.Files {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("file %s still there after Remove (%v)", f, err)
		}
	}
	if got := entries(t, e.dir); !slices.Equal(got, []string{"base.ext4"}) {
		t.Errorf("directory after Remove holds %v, want only the base", got)
	}
}

func testRemoveHalfMade(t *testing.T, e *env) {
	dst := filepath.Join(e.dir, "half")
	if err := os.WriteFile(dst, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	info := e.d.Info()
	half := disk.Disk{Driver: info.Name, Path: dst, Format: info.Format, Files: []string{dst}}
	if err := e.d.Remove(e.ctx, half); err != nil {
		t.Fatalf("Remove of a half-made disk: %v", err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("half-made file still there (%v)", err)
	}
	never := disk.Disk{Driver: info.Name, Files: []string{filepath.Join(e.dir, "never-made")}}
	if err := e.d.Remove(e.ctx, never); err != nil {
		t.Errorf("Remove of a disk whose files never existed: %v", err)
	}
}

func testMissingDir(t *testing.T, e *env) {
	base := e.base(t)
	_, err := e.d.Create(e.ctx, base, filepath.Join(e.dir, "nope", "disk"))
	if !api.IsNotFound(err) {
		t.Fatalf("Create into a missing directory: err = %v, want NotFound", err)
	}
	if !strings.Contains(err.Error(), "nope") {
		t.Errorf("error %q does not name the missing directory", err)
	}
	if got := entries(t, e.dir); !slices.Equal(got, []string{"base.ext4"}) {
		t.Errorf("failed Create left %v", got)
	}
}

func testMissingBase(t *testing.T, e *env) {
	missing := filepath.Join(e.dir, "no-such-base.ext4")
	_, err := e.d.Create(e.ctx, missing, filepath.Join(e.dir, "disk"))
	if !api.IsNotFound(err) {
		t.Fatalf("Create over a missing base: err = %v, want NotFound", err)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q does not name the base", err)
	}
	if got := entries(t, e.dir); len(got) != 0 {
		t.Errorf("failed Create left %v", got)
	}
}

func testExistingDst(t *testing.T, e *env) {
	base := e.base(t)
	dst := filepath.Join(e.dir, "taken")
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := e.d.Create(e.ctx, base, dst)
	if !api.IsAlreadyExists(err) {
		t.Fatalf("Create over an existing file: err = %v, want AlreadyExists", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("existing file was changed to %q", b)
	}
	if got := entries(t, e.dir); !slices.Equal(got, []string{"base.ext4", "taken"}) {
		t.Errorf("failed Create left %v", got)
	}
}

func testGarbageBase(t *testing.T, e *env) {
	base := filepath.Join(e.dir, "garbage.img")
	buf := make([]byte, 4<<20)
	rand.Read(buf)
	if err := os.WriteFile(base, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	dk := e.create(t, base, "disk")
	got := ReadRaw(t, RawView(t, dk), 0, len(buf))
	if sha256.Sum256(got) != sha256.Sum256(buf) {
		t.Errorf("disk over a non-ext4 base does not hold the base's bytes")
	}
}

// throughJSON returns dk as it reads back from a handles.json.
func throughJSON(t *testing.T, dk disk.Disk) disk.Disk {
	t.Helper()
	b, err := json.Marshal(dk)
	if err != nil {
		t.Fatal(err)
	}
	var out disk.Disk
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return out
}

func allBytes(b []byte, v byte) bool {
	for _, c := range b {
		if c != v {
			return false
		}
	}
	return len(b) > 0
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.Name() == "lost+found" { // a mounted pool or btrfs root
			continue
		}
		out = append(out, e.Name())
	}
	return out
}

// SHA256 returns the hex sha256 of the file at path.
func SHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// blkLoops is blk.Loops for the leak check (kept here so the suite has
// one place that reads kernel state).
var blkLoops = blk.Loops
