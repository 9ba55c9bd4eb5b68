// Package imagetest holds the image packages' test fixtures: a tiny
// bootable-shaped kernel, a valid register artefact set, ext4 images made
// from a file map, reading a file out of one, and a throwaway store. Tests only; it needs
// e2fsprogs (mkfs.ext4, debugfs) and skips without them.
package imagetest

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/store"
)

// TinyKernel returns a bzImage-shaped file holding a gzip'ed minimal x86-64
// ELF, with a kernel_version string in the setup header.
func TinyKernel(t testing.TB) []byte {
	t.Helper()
	const ehsize, phsize, body = 64, 56, 2000
	e := make([]byte, ehsize+phsize+body)
	copy(e, elf.ELFMAG)
	e[elf.EI_CLASS], e[elf.EI_DATA], e[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	le := binary.LittleEndian
	le.PutUint16(e[16:], uint16(elf.ET_EXEC))
	le.PutUint16(e[18:], uint16(elf.EM_X86_64))
	le.PutUint32(e[20:], 1)
	le.PutUint64(e[32:], ehsize)
	le.PutUint16(e[52:], ehsize)
	le.PutUint16(e[54:], phsize)
	le.PutUint16(e[56:], 1)
	le.PutUint16(e[58:], 64)
	le.PutUint32(e[ehsize:], uint32(elf.PT_LOAD))
	le.PutUint64(e[ehsize+32:], uint64(len(e)))
	le.PutUint64(e[ehsize+40:], uint64(len(e)))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(e)
	w.Close()
	b := make([]byte, 1024+gz.Len()+4)
	b[0x1f1] = 1
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], 0x020f)
	le.PutUint16(b[0x20e:], 0x300-0x200) // kernel_version pointer
	copy(b[0x300:], "6.1.0-test-amd64 (test@example) #1 SMP\x00")
	le.PutUint32(b[0x24c:], uint32(gz.Len()))
	copy(b[1024:], gz.Bytes())
	return b
}

// RegisterFiles writes a valid artefact set: a tiny bzImage, a gzip
// initrd and a 20 MiB ext4 rootfs whose /root holds a dotfile.
func RegisterFiles(t testing.TB) api.ImageRegisterRequest {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4: apt-get install e2fsprogs")
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, TinyKernel(t), 0o644)
	initrd := filepath.Join(dir, "initrd.img")
	os.WriteFile(initrd, []byte{0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0}, 0o644)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "root"), 0o700)
	os.WriteFile(filepath.Join(tree, "root", ".bashrc"), []byte("# hello\n"), 0o644)
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, rootfs, "20M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return api.ImageRegisterRequest{Name: "reg", Kernel: kernel, Initrd: initrd, Rootfs: rootfs}
}

// MkfsTree makes an ext4 image of size holding files.
func MkfsTree(t testing.TB, size string, files map[string]string) string {
	t.Helper()
	tree := t.TempDir()
	for p, data := range files {
		full := filepath.Join(tree, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "disk.ext4")
	if b, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, out, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, b)
	}
	return out
}

// DebugfsCat returns a file of an ext4 image, "" when it is missing.
func DebugfsCat(t testing.TB, img, path string) (string, bool) {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "stat "+path, img).CombinedOutput()
	if err != nil || strings.Contains(string(out), "File not found") {
		return "", false
	}
	data, _ := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	return string(data), true
}

// Store opens a store in a temporary directory, closed when the test ends.
func Store(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
