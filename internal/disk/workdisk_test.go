package disk_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// fsBytes returns the ext4 filesystem size of the image at path.
func fsBytes(t testing.TB, path string) int64 {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", path).Output()
	if err != nil {
		t.Fatalf("dumpe2fs %s: %v", path, err)
	}
	var count, size int64
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Block count":
			count, _ = strconv.ParseInt(v, 10, 64)
		case "Block size":
			size, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return count * size
}

func seed(t testing.TB, size string) string {
	t.Helper()
	disktest.RequireTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "debugfs")
	p := filepath.Join(t.TempDir(), "work-seed.ext4")
	disktest.MakeExt4(t, p, size)
	return p
}

func TestCloneAndGrow(t *testing.T) {
	s := seed(t, "16M")
	tests := []struct {
		name    string
		size    int64
		mounted bool // the seed was mounted after its last check: resize2fs alone refuses it
	}{
		{"grow", 64 << 20, false},
		{"same size", 16 << 20, false},
		{"grow a seed that needs a check", 64 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := s
			if tt.mounted {
				src = filepath.Join(t.TempDir(), "mounted-seed.ext4")
				if err := disk.Clone(s, src); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command("debugfs", "-w", "-R", "ssv mtime 20300101", src).CombinedOutput(); err != nil {
					t.Fatalf("debugfs: %v\n%s", err, out)
				}
			}
			dst := filepath.Join(t.TempDir(), "work.ext4")
			if err := disk.CloneAndGrow(t.Context(), src, dst, tt.size, nil); err != nil {
				t.Fatal(err)
			}
			if got := fsBytes(t, dst); got != tt.size {
				t.Errorf("filesystem is %d bytes, want %d", got, tt.size)
			}
			if got := disktest.Cat(t, dst, "/hello.txt"); !strings.HasPrefix(got, "hello") {
				t.Errorf("content lost: /hello.txt = %q", got)
			}
			if out, err := exec.Command("e2fsck", "-fn", dst).CombinedOutput(); err != nil {
				t.Errorf("e2fsck: %v\n%s", err, out)
			}
		})
	}
}

func TestCloneAndGrowFailures(t *testing.T) {
	s := seed(t, "16M")
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, make([]byte, 1<<20), 0o600)
	failing := func(src, dst string) error {
		os.WriteFile(dst, []byte("partial"), 0o600)
		return errors.New("disk full")
	}
	tests := []struct {
		name    string
		seed    string
		size    int64
		clone   func(src, dst string) error
		is      func(error) bool
		inError []string
	}{
		{"shrink", s, 8 << 20, nil, api.IsInvalid, []string{"8388608", "16777216"}},
		{"missing seed", s + ".nope", 64 << 20, nil, api.IsNotFound, []string{"work seed"}},
		{"clone fails", s, 64 << 20, failing, func(error) bool { return true }, []string{"disk full"}},
		{"seed is not ext4", garbage, 64 << 20, nil, func(error) bool { return true }, []string{"e2fsck"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "work.ext4")
			err := disk.CloneAndGrow(t.Context(), tt.seed, dst, tt.size, tt.clone)
			if err == nil || !tt.is(err) {
				t.Fatalf("err = %v", err)
			}
			for _, s := range tt.inError {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("dst left behind after failure: %v", err)
			}
		})
	}
}

func TestGrow(t *testing.T) {
	s := seed(t, "16M")
	ctx := t.Context()
	if err := disk.Grow(ctx, s, 32<<20); err != nil {
		t.Fatal(err)
	}
	if got := fsBytes(t, s); got != 32<<20 {
		t.Errorf("after Grow filesystem is %d bytes", got)
	}
	if err := disk.Grow(ctx, s, 32<<20); err != nil {
		t.Errorf("Grow to the same size: %v", err)
	}
	err := disk.Grow(ctx, s, 16<<20)
	if !api.IsInvalid(err) || !strings.Contains(err.Error(), "shrinking") {
		t.Errorf("shrinking Grow = %v, want Invalid", err)
	}
	if err := disk.Grow(ctx, s+".nope", 64<<20); !api.IsNotFound(err) {
		t.Errorf("Grow of a missing disk = %v, want NotFound", err)
	}
	if got := fsBytes(t, s); got != 32<<20 {
		t.Errorf("failed Grows changed the filesystem to %d bytes", got)
	}
}

// BenchmarkCloneAndGrow times a 256 MiB work seed cloned and grown to 4 GiB
// in the temp dir (a sparse copy on ext4).
func BenchmarkCloneAndGrow256MiBTo4GiB(b *testing.B) {
	s := seed(b, "256M")
	dir := b.TempDir()
	dst := filepath.Join(dir, "work.ext4")
	for b.Loop() {
		if err := disk.CloneAndGrow(context.Background(), s, dst, 4<<30, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(dst)
		b.StartTimer()
	}
}
