package files

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/api"
)

func TestPackExtractRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "sub", "ro"), 0o755)
	os.WriteFile(filepath.Join(src, "exe"), []byte("#!/bin/sh\n"), 0o750)
	os.WriteFile(filepath.Join(src, "sub", "ro", "f"), []byte("data"), 0o640)
	os.Chmod(filepath.Join(src, "sub", "ro"), 0o555)
	os.Symlink("../exe", filepath.Join(src, "sub", "link"))
	os.Symlink("/etc/passwd", filepath.Join(src, "abs"))
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "sub", "ro"), 0o755) })

	var buf bytes.Buffer
	pst, err := Pack(&buf, src, "tree")
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	st, err := Extract(&buf, dst, "tree", "copy", DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "copy", "sub", "ro"), 0o755) })
	if st.Files != 2 || st.Symlinks != 2 || st.Dirs != 3 || pst.Bytes != st.Bytes {
		t.Errorf("stats: pack %+v extract %+v", pst, st)
	}
	for p, want := range map[string]os.FileMode{"exe": 0o750, "sub/ro": 0o555 | os.ModeDir, "sub/ro/f": 0o640} {
		fi, err := os.Lstat(filepath.Join(dst, "copy", p))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v (%v)", p, fi.Mode(), want, err)
		}
	}
	for p, want := range map[string]string{"sub/link": "../exe", "abs": "/etc/passwd"} {
		if got, err := os.Readlink(filepath.Join(dst, "copy", p)); got != want {
			t.Errorf("%s -> %q, want %q (%v)", p, got, want, err)
		}
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 1 {
		t.Errorf("staging left behind: %v", ents)
	}
}

func TestExtractBadDestinations(t *testing.T) {
	tree := func() *bytes.Buffer {
		src := filepath.Join(t.TempDir(), "d")
		os.MkdirAll(src, 0o755)
		os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
		var buf bytes.Buffer
		if _, err := Pack(&buf, src, "d"); err != nil {
			t.Fatal(err)
		}
		return &buf
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Extract(tree(), file, "d", "", DefaultLimits); !api.IsInvalid(err) {
		t.Errorf("a file as the destination directory: %v, want Invalid", err)
	}
	os.MkdirAll(filepath.Join(dir, "d"), 0o755)
	if _, err := Extract(tree(), dir, "d", "", DefaultLimits); !api.IsAlreadyExists(err) {
		t.Errorf("onto an existing directory: %v, want AlreadyExists", err)
	}
	if _, err := Extract(tree(), dir, "other", "", DefaultLimits); !api.IsInvalid(err) {
		t.Errorf("entries not under top: %v, want Invalid", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("partial files left: %v", ents)
	}
	if _, _, err := hostTarget(filepath.Join(dir, "nope", "x"), "x"); err == nil {
		t.Error("a destination in a missing directory was accepted")
	}
}
