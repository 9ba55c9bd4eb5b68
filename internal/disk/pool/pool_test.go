package pool_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/disk/disktest"
	"banger/internal/disk/internal/blk"
	"banger/internal/disk/pool"
	"banger/internal/disk/reflink"
)

func newPool(t *testing.T) *pool.Pool {
	t.Helper()
	disktest.RequireRoot(t)
	disktest.RequireTools(t, "mkfs.xfs")
	p := &pool.Pool{
		Image:      filepath.Join(t.TempDir(), "pool.img"),
		MountPoint: filepath.Join(t.TempDir(), "mnt"),
		Size:       512 << 20,
	}
	t.Cleanup(func() { p.Destroy(context.Background()) })
	return p
}

// noLoops fails t when any loop device is backed by img.
func noLoops(t *testing.T, img string) {
	t.Helper()
	if l, err := blk.LoopsFor(img); err != nil || len(l) != 0 {
		t.Errorf("loop devices left on %s: %v (%v)", img, l, err)
	}
}

func TestIntegrationPoolLifecycle(t *testing.T) {
	p := newPool(t)
	ctx := t.Context()
	if err := p.Ensure(ctx); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if st, err := os.Stat(p.Image); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("image: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	if m, _ := p.Mounted(); !m {
		t.Fatal("Mounted = false after Ensure")
	}
	if ok, why := reflink.Supported(p.MountPoint); !ok {
		t.Errorf("pool cannot reflink: %s", why)
	}
	if err := p.Ensure(ctx); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if l, _ := blk.LoopsFor(p.Image); len(l) != 1 {
		t.Errorf("after two Ensures %d loop devices back the image, want 1", len(l))
	}
	keep := filepath.Join(p.MountPoint, "keep")
	if err := os.WriteFile(keep, []byte("still here"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := p.Unmount(ctx); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if m, _ := p.Mounted(); m {
		t.Error("Mounted = true after Unmount")
	}
	noLoops(t, p.Image)
	if _, err := os.Stat(p.Image); err != nil {
		t.Errorf("Unmount removed the image: %v", err)
	}
	if err := p.Unmount(ctx); err != nil {
		t.Errorf("Unmount of an unmounted pool: %v", err)
	}

	// Ensure again mounts the existing image without reformatting it.
	if err := p.Ensure(ctx); err != nil {
		t.Fatalf("Ensure after Unmount: %v", err)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "still here" {
		t.Errorf("file in the pool after remount: %q, %v (was it reformatted?)", b, err)
	}

	if err := p.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := os.Stat(p.Image); !os.IsNotExist(err) {
		t.Errorf("image still there after Destroy: %v", err)
	}
	noLoops(t, p.Image)
	if err := p.Destroy(ctx); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

// fakeTool puts an executable named name that fails on PATH.
func fakeTool(t *testing.T, name string) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho fake " + name + " failing >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
}

func TestIntegrationPoolRevert(t *testing.T) {
	t.Run("mkfs fails: no image left", func(t *testing.T) {
		p := newPool(t)
		fakeTool(t, "mkfs.xfs")
		err := p.Ensure(t.Context())
		if err == nil || !strings.Contains(err.Error(), "fake mkfs.xfs failing") {
			t.Fatalf("Ensure = %v, want the mkfs failure", err)
		}
		if _, err := os.Stat(p.Image); !os.IsNotExist(err) {
			t.Errorf("image left after failed mkfs: %v", err)
		}
	})
	t.Run("mount fails: no loop, no new image, no mount point", func(t *testing.T) {
		p := newPool(t)
		fakeTool(t, "mount")
		err := p.Ensure(t.Context())
		if err == nil || !strings.Contains(err.Error(), "fake mount failing") {
			t.Fatalf("Ensure = %v, want the mount failure", err)
		}
		noLoops(t, p.Image)
		if _, err := os.Stat(p.Image); !os.IsNotExist(err) {
			t.Errorf("new image left after failed mount: %v", err)
		}
		if _, err := os.Stat(p.MountPoint); !os.IsNotExist(err) {
			t.Errorf("mount point left after failed mount: %v", err)
		}
	})
	t.Run("mount point taken by another filesystem", func(t *testing.T) {
		p := newPool(t)
		if err := os.MkdirAll(p.MountPoint, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := blk.Run(t.Context(), "mount", "-t", "tmpfs", "tmpfs", p.MountPoint); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { blk.Run(context.Background(), "umount", p.MountPoint) })
		err := p.Ensure(t.Context())
		if !api.IsFailedPrecondition(err) {
			t.Fatalf("Ensure over a tmpfs = %v, want FailedPrecondition", err)
		}
		if _, err := os.Stat(p.Image); !os.IsNotExist(err) {
			t.Errorf("image created although the mount point is taken: %v", err)
		}
	})
}

func TestEnsureInvalid(t *testing.T) {
	tests := []struct {
		name string
		p    pool.Pool
	}{
		{"empty", pool.Pool{}},
		{"relative image", pool.Pool{Image: "pool.img", MountPoint: "/mnt/x", Size: 1 << 30}},
		{"too small", pool.Pool{Image: "/nonexistent-dir-banger/pool.img", MountPoint: "/nonexistent-dir-banger/m", Size: 1 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.p.Ensure(t.Context()); !api.IsInvalid(err) {
				t.Errorf("Ensure = %v, want Invalid", err)
			}
		})
	}
}
