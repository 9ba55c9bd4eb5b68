package disk_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
	"banger/internal/disk/internal/blk"
)

// SparseCopy keeps holes (explicit ones and all-zero runs written as
// data) and copies every byte.
func TestSparseCopyKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	disktest.MakeSparseBase(t, src, 64<<20, 8<<20)
	// an all-zero 8 MiB run written as data: the copy may skip it
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4<<20), 40<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := disk.SparseCopy(src, dst); err != nil {
		t.Fatal(err)
	}
	if s, d := disktest.Allocated(t, src), disktest.Allocated(t, dst); d > s {
		t.Errorf("copy uses %d blocks, source %d: holes were filled", d, s)
	}
	if a, b := disktest.SHA256(t, src), disktest.SHA256(t, dst); a != b {
		t.Errorf("copy differs from source")
	}
	if st, _ := os.Stat(dst); st.Size() != 64<<20 {
		t.Errorf("copy size %d, want %d", st.Size(), 64<<20)
	}
}

func TestSparseCopySmallAndEmpty(t *testing.T) {
	dir := t.TempDir()
	for _, content := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0}, 5000), bytes.Repeat([]byte("ab"), 3000)} {
		src := filepath.Join(dir, "src")
		dst := filepath.Join(dir, "dst")
		if err := os.WriteFile(src, content, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := disk.SparseCopy(src, dst); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, content) {
			t.Errorf("copy of %d bytes differs", len(content))
		}
		if st, _ := os.Stat(dst); st.Mode().Perm() != 0o640 {
			t.Errorf("copy mode %v, want the source's 0640", st.Mode().Perm())
		}
		os.Remove(src)
		os.Remove(dst)
	}
}

// The clone functions share their error kinds and never leave dst behind.
func TestCloneErrors(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	taken := filepath.Join(dir, "taken")
	if err := os.WriteFile(taken, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	fns := map[string]func(src, dst string) error{
		"Clone": disk.Clone, "SparseCopy": disk.SparseCopy, "CloneFile": disk.CloneFile,
	}
	tests := []struct {
		name     string
		src, dst string
		is       func(error) bool
	}{
		{"missing source", filepath.Join(dir, "nope"), filepath.Join(dir, "d1"), api.IsNotFound},
		{"source is a directory", dir, filepath.Join(dir, "d2"), api.IsInvalid},
		{"missing directory", src, filepath.Join(dir, "nodir", "d3"), api.IsNotFound},
		{"existing destination", src, taken, api.IsAlreadyExists},
	}
	for fname, fn := range fns {
		for _, tt := range tests {
			t.Run(fname+"/"+tt.name, func(t *testing.T) {
				err := fn(tt.src, tt.dst)
				if !tt.is(err) {
					t.Fatalf("err = %v (kind %s)", err, api.KindOf(err))
				}
				if tt.dst != taken {
					if _, err := os.Stat(tt.dst); !os.IsNotExist(err) {
						t.Errorf("dst left behind: %v", err)
					}
				} else if b, _ := os.ReadFile(taken); string(b) != "keep" {
					t.Errorf("existing dst changed to %q", b)
				}
			})
		}
	}
}

// Clone works on every filesystem: a reflink where possible, else a copy.
func TestCloneAnyFilesystem(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	disktest.MakeSparseBase(t, src, 64<<20, 8<<20)
	dst := filepath.Join(dir, "dst")
	if err := disk.Clone(src, dst); err != nil {
		t.Fatal(err)
	}
	if disktest.SHA256(t, src) != disktest.SHA256(t, dst) {
		t.Error("clone differs from source")
	}
}

func TestCheckPaths(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	os.WriteFile(base, []byte("b"), 0o600)
	os.WriteFile(filepath.Join(dir, "taken"), nil, 0o600)
	tests := []struct {
		name      string
		base, dst string
		is        func(error) bool
	}{
		{"ok", base, filepath.Join(dir, "new"), func(err error) bool { return err == nil }},
		{"missing base", filepath.Join(dir, "x"), filepath.Join(dir, "new"), api.IsNotFound},
		{"base is a directory", dir, filepath.Join(dir, "new"), api.IsInvalid},
		{"missing dir", base, filepath.Join(dir, "no", "new"), api.IsNotFound},
		{"dst exists", base, filepath.Join(dir, "taken"), api.IsAlreadyExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := disk.CheckPaths(tt.base, tt.dst); !tt.is(err) {
				t.Errorf("CheckPaths = %v", err)
			}
		})
	}
}

// SparseCopy reads a block device (an attached dm-snapshot is one) to its
// end and keeps its zero runs out of the copy.
func TestIntegrationSparseCopyFromBlockDevice(t *testing.T) {
	disktest.RequireRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	disktest.MakeSparseBase(t, img, 32<<20, 4<<20)
	loop, err := blk.LoopAttach(t.Context(), img, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blk.LoopDetach(context.Background(), loop, img) })
	dst := filepath.Join(dir, "copy")
	if err := disk.SparseCopy(loop, dst); err != nil {
		t.Fatalf("SparseCopy from %s: %v", loop, err)
	}
	if disktest.SHA256(t, dst) != disktest.SHA256(t, img) {
		t.Errorf("copy of the device differs from its backing file")
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o600 {
		t.Errorf("copy of a device has mode %v, want 0600", st.Mode().Perm())
	}
	if got, src := disktest.Allocated(t, dst), disktest.Allocated(t, img); got > src {
		t.Errorf("copy uses %d blocks, the source %d: zeros were written", got, src)
	}
}
