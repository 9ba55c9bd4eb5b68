package disktest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"banger/internal/api"
	"banger/internal/disk"
)

// testExport: the export is a raw image holding the disk's content (base
// plus writes), no larger on disk than its data, left as it was after the
// disk is removed; the disk keeps its kernel state as it had it.
func testExport(t *testing.T, e *env) {
	base := e.base(t)
	dk := e.create(t, base, "disk")
	Write(t, dk, writeOff, 0x6e, writeLen)
	for _, attached := range []bool{true, false} {
		if !attached {
			var err error
			if dk, err = e.d.Detach(e.ctx, dk); err != nil {
				t.Fatalf("Detach: %v", err)
			}
		}
		before := e.d.Attached(dk)
		dst := filepath.Join(t.TempDir(), "export.raw")
		if err := e.d.Export(e.ctx, dk, dst); err != nil {
			t.Fatalf("Export (attached %v): %v", attached, err)
		}
		if after := e.d.Attached(dk); after != before {
			t.Errorf("Export changed Attached from %v to %v", before, after)
		}
		checkExport(t, dst, base)
	}
	dst := filepath.Join(t.TempDir(), "kept.raw")
	if err := e.d.Export(e.ctx, dk, dst); err != nil {
		t.Fatalf("Export: %v", err)
	}
	sum := SHA256(t, dst)
	if err := e.d.Remove(e.ctx, dk); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if SHA256(t, dst) != sum {
		t.Errorf("the export changed when its disk was removed")
	}
	checkExport(t, dst, base)
}

// checkExport checks an exported raw image: the base's size and files,
// the suite's write, and no more blocks than the base plus that write.
func checkExport(t *testing.T, dst, base string) {
	t.Helper()
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != BaseSize {
		t.Errorf("export is %d bytes, want %d", st.Size(), BaseSize)
	}
	if got := Cat(t, dst, "/hello.txt"); got != helloText {
		t.Errorf("/hello.txt in the export = %q", got)
	}
	if got := ReadRaw(t, dst, writeOff, writeLen); !allBytes(got, 0x6e) {
		t.Errorf("the export lacks the disk's write")
	}
	if used, limit := Allocated(t, dst), Allocated(t, base)+writeLen+1<<20; used > limit {
		t.Errorf("export uses %d bytes on disk, more than the base's data plus the write (%d): not sparse", used, limit)
	}
}

func testExportExisting(t *testing.T, e *env) {
	dk := e.create(t, e.base(t), "disk")
	dst := filepath.Join(e.dir, "taken")
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Export(e.ctx, dk, dst); !api.IsAlreadyExists(err) {
		t.Fatalf("Export over an existing file: err = %v, want AlreadyExists", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("existing file was changed to %q", b)
	}
}

// testGrow: a driver that grows makes the disk larger, keeps its data and
// never shrinks it; one that cannot says so with a fix.
func testGrow(t *testing.T, e *env) {
	dk := e.create(t, e.base(t), "disk")
	Write(t, dk, writeOff, 0x47, writeLen)
	dk, err := e.d.Detach(e.ctx, dk)
	if err != nil {
		t.Fatalf("Detach: %v", err)
	}
	err = e.d.Grow(e.ctx, dk, 2*BaseSize)
	if !e.d.Info().Grows {
		wantRefused(t, "Grow", err)
		return
	}
	if err != nil {
		t.Fatalf("Grow: %v", err)
	}
	if err := e.d.Grow(e.ctx, dk, BaseSize); err != nil {
		t.Fatalf("Grow to a smaller size: %v, want nothing done", err)
	}
	raw := exported(t, e, dk)
	if st, err := os.Stat(raw); err != nil || st.Size() != 2*BaseSize {
		t.Fatalf("grown disk: %v %v, want %d bytes", st, err, 2*BaseSize)
	}
	if got := ReadRaw(t, raw, writeOff, writeLen); !allBytes(got, 0x47) {
		t.Errorf("data written before Grow is gone")
	}
	if got := ReadRaw(t, raw, BaseSize, writeLen); !allBytes(got, 0) {
		t.Errorf("the grown part is not zeros")
	}
	if got := Cat(t, raw, "/hello.txt"); got != helloText {
		t.Errorf("/hello.txt after Grow = %q", got)
	}
}

// testSnapshot: a snapshot has the disk's content at the time and is
// independent of it afterwards; the base is never written.
func testSnapshot(t *testing.T, e *env) {
	base := e.base(t)
	sum := SHA256(t, base)
	dk := e.create(t, base, "disk")
	Write(t, dk, writeOff, 0x11, writeLen)
	dk, err := e.d.Detach(e.ctx, dk)
	if err != nil {
		t.Fatalf("Detach: %v", err)
	}
	snap, err := e.d.Snapshot(e.ctx, dk, filepath.Join(e.dir, "snap"))
	if !e.d.Info().Snapshots {
		wantRefused(t, "Snapshot", err)
		return
	}
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	t.Cleanup(func() { e.d.Remove(e.ctx, snap) })
	if info := e.d.Info(); snap.Driver != info.Name || snap.Format != info.Format || len(snap.Files) == 0 {
		t.Errorf("snapshot record %+v does not match the driver %s/%s", snap, info.Name, info.Format)
	}
	Write(t, dk, writeOff, 0x22, writeLen)
	if got := ReadRaw(t, RawView(t, snap), writeOff, writeLen); !allBytes(got, 0x11) {
		t.Errorf("the snapshot does not hold the disk's content at snapshot time")
	}
	Write(t, snap, writeOff, 0x33, writeLen)
	if got := ReadRaw(t, RawView(t, dk), writeOff, writeLen); !allBytes(got, 0x22) {
		t.Errorf("the disk sees the snapshot's write")
	}
	if err := e.d.Remove(e.ctx, dk); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got := Cat(t, RawView(t, snap), "/hello.txt"); got != helloText {
		t.Errorf("/hello.txt in the snapshot after removing the disk = %q", got)
	}
	if SHA256(t, base) != sum {
		t.Errorf("the base changed")
	}
}

// wantRefused checks a FailedPrecondition with a fix.
func wantRefused(t *testing.T, op string, err error) {
	t.Helper()
	if e := api.AsError(err); e == nil || e.Kind != api.KindFailedPrecondition || e.Fix == "" {
		t.Errorf("%s on a driver whose Info says it cannot: %v, want FailedPrecondition with a fix", op, err)
	}
}

// exported returns a raw export of dk.
func exported(t *testing.T, e *env, dk disk.Disk) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "view.raw")
	if err := e.d.Export(e.ctx, dk, dst); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return dst
}

// Allocated is the bytes the file at path uses on disk.
func Allocated(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}
