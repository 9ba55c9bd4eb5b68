package image

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/image/vmlinux"
)

// File names inside an image directory.
const (
	KernelFile   = "vmlinuz"
	VmlinuxFile  = "vmlinux"
	InitrdFile   = "initrd.img"
	RootfsFile   = "rootfs.ext4"
	WorkSeedFile = "work-seed.ext4"
	BuildLogFile = "build.log"
	// WorkSeedSize is the size of a generated work-disk seed; VMs grow
	// their copy to the requested disk size.
	WorkSeedSize = 64 << 20
)

// Stage names of more than one way to make an image.
const (
	StageVmlinux     = "vmlinux"
	StageWorkSeed    = "work-seed"
	StageFingerprint = "fingerprint"
)

// Root filesystem sizing: the contents plus headroom, at least MinAutoSize.
const (
	// MinRootfsSize is the smallest --size accepted up front; image create
	// checks the real floor once the tree's size is known.
	MinRootfsSize = 512 << 20
	MinAutoSize   = 1 << 30
	HeadroomPct   = 30
	SizeAlignment = 64 << 20
	// FSOverhead covers the journal, inode tables and metadata of a
	// mkfs.ext4 -b 4096 filesystem of about a gigabyte.
	FSOverhead = 96 << 20
)

// RoundUp rounds n up to a multiple of to.
func RoundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// CheckFeatures needs every --with name to be a shipped feature.
func CheckFeatures(with []string) error {
	for _, w := range with {
		if _, ok := feature.Get(w); !ok {
			return api.Invalid("unknown feature %q for --with", w).WithFix("--with " + feature.Default.Names("|"))
		}
	}
	return nil
}

// CopyFile copies src to dst (0644), sparse-aware via cp.
func CopyFile(src, dst string) error {
	out, err := exec.Command("cp", "--sparse=always", "--reflink=auto", "--", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copying %s: %w: %s", src, err, bytes.TrimSpace(out))
	}
	return os.Chmod(dst, 0o644)
}

// ExtractVmlinux writes the ELF inside the bzImage at src to dst and
// returns its size.
func ExtractVmlinux(src, dst string) (int64, error) {
	bz, err := os.ReadFile(src)
	if err != nil {
		return 0, err
	}
	elf, err := vmlinux.Extract(bz)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(dst, elf, 0o644); err != nil {
		return 0, fmt.Errorf("writing vmlinux: %w", err)
	}
	return int64(len(elf)), nil
}

// FileSize returns the size of path, 0 when it does not exist.
func FileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// hashInto streams path into w.
func hashInto(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(w, "%s %s\n", filepath.Base(path), strconv.FormatInt(FileSize(path), 10))
	_, err = io.Copy(w, f)
	return err
}

// ReadHead reads the first n bytes of a file (fewer if it is shorter).
func ReadHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	m, err := f.Read(buf)
	if m == 0 && err != nil {
		return nil, err
	}
	return buf[:m], nil
}
