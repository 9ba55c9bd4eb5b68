package reflink_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
	"banger/internal/disk/pool"
	"banger/internal/disk/reflink"
)

// xfsPool mounts a fresh reflink XFS pool at dir (image in t.TempDir()).
func xfsPool(t testing.TB, dir string, size int64) {
	t.Helper()
	disktest.RequireRoot(t)
	disktest.RequireTools(t, "mkfs.xfs")
	p := &pool.Pool{Image: filepath.Join(t.TempDir(), "pool.img"), MountPoint: dir, Size: size}
	if err := p.Ensure(t.Context()); err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Destroy(context.Background()); err != nil {
			t.Errorf("destroying pool: %v", err)
		}
	})
}

func TestIntegrationConformanceXFSPool(t *testing.T) {
	disktest.Run(t, func(t *testing.T, dir string) disk.Driver {
		xfsPool(t, dir, 512<<20)
		return reflink.New()
	})
}

func TestIntegrationConformanceBtrfs(t *testing.T) {
	disktest.RequireRoot(t)
	disktest.RequireTools(t, "mkfs.btrfs")
	disktest.Run(t, func(t *testing.T, dir string) disk.Driver {
		disktest.MountFS(t, dir, 512<<20, "mkfs.btrfs", "-q")
		return reflink.New()
	})
}

func TestIntegrationSupported(t *testing.T) {
	dir := t.TempDir()
	xfsPool(t, dir, 512<<20)
	if ok, why := reflink.Supported(dir); !ok {
		t.Errorf("Supported(xfs pool) = false: %s", why)
	}
}

// On a filesystem that cannot reflink (ext4, tmpfs) Supported says no with
// the reason and Create fails as FailedPrecondition with the fix, leaving
// nothing behind.
func TestNoReflinkFilesystem(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC && st.Type != unix.TMPFS_MAGIC {
		t.Skipf("temp dir is on filesystem type %#x, which may reflink; this test needs ext4 or tmpfs", st.Type)
	}
	ok, why := reflink.Supported(dir)
	if ok || !strings.Contains(why, "cannot reflink") {
		t.Errorf("Supported(ext4) = %v, %q", ok, why)
	}
	disktest.RequireTools(t, "mkfs.ext4")
	base := filepath.Join(dir, "base.ext4")
	disktest.MakeExt4(t, base, "16M")
	_, err := reflink.New().Create(t.Context(), base, filepath.Join(dir, "disk"))
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "reflink=1") {
		t.Errorf("Create on ext4: err = %v, want FailedPrecondition with the fix", err)
	}
	if !disk.IsNoReflink(err) {
		t.Errorf("IsNoReflink(%v) = false", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "*")); len(ents) != 1 {
		t.Errorf("failed Create left files: %v", ents)
	}
}

func BenchmarkIntegrationCreate2GiBXFSPool(b *testing.B) {
	dir := b.TempDir()
	xfsPool(b, dir, 4<<30)
	disktest.Bench(b, reflink.New(), dir)
}
