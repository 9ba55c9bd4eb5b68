// Package ext4 owns every call of the e2fsprogs tools on the host:
// mkfs.ext4, e2fsck, resize2fs, debugfs and dumpe2fs. Nothing else in
// banger runs them (the image builder's `resize2fs /dev/vda` runs inside
// the guest, through the agent, and is the guest's own business).
//
// What it trusts: the tools, and the paths it is given. What it does not
// trust: the filesystems. Callers hand it images a guest wrote (a builder
// VM's disks at capture, a promoted VM's disks, registered rootfs files),
// so every filesystem is hostile input to these tools, and their output
// (debugfs listings, dumpe2fs headers) is parsed within bounds here and
// nowhere else.
//
// How: every tool that reads or changes a filesystem banger did not just
// make itself runs in internal/sandbox — bubblewrap as an unprivileged uid,
// no capabilities, no network, no host files but /usr and its config
// files, the image passed as an open descriptor and one scratch dir as its
// only writable place. What a tool writes out (rdump's tree, dump's files)
// stays in the scratch dir; the host takes only regular files from it
// without following links (kernels, initramfs) or has the sandbox build the
// result itself (MakeFromTree: rdump and mke2fs -d both inside). Only Make,
// which formats a fresh filesystem from a tree banger made, runs on the
// host. Without bubblewrap every other call fails (Unavailable, naming the
// fix) rather than run as root.
//
// It must not know about images, VMs or disk drivers: it takes file paths
// and returns sizes, names and errors.
package ext4

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Tools are the e2fsprogs binaries this package runs.
var Tools = []string{"mkfs.ext4", "e2fsck", "resize2fs", "debugfs", "dumpe2fs"}

// run runs an e2fsprogs tool on the host and returns its combined output
// (only Make: a fresh filesystem from banger's own tree). A failure carries
// the tool's name and its last lines.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", name, err, LastLines(out, 5))
	}
	return out, nil
}

// exitCode returns the exit status inside err, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// LastLines returns the last n lines of a tool's output, trimmed.
func LastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Make creates a sparse file of size bytes at path holding a fresh ext4
// filesystem (4 KiB blocks, root-owned root directory) labelled label,
// filled with fromDir's contents (fromDir "" = empty). path must not exist.
func Make(ctx context.Context, path string, size int64, label, fromDir string) error {
	if err := create(path, size); err != nil {
		return err
	}
	args := []string{"-q", "-F", "-L", label, "-b", "4096", "-E", "root_owner=0:0"}
	if fromDir != "" {
		args = append(args, "-d", fromDir)
	}
	if _, err := run(ctx, "mkfs.ext4", append(args, path)...); err != nil {
		return fmt.Errorf("making the %s filesystem (%d MiB): %w", label, size>>20, err)
	}
	return nil
}

// Check runs e2fsck -f -y: corrected errors are fine (exit 1 or 2), an
// uncorrectable filesystem is an error.
func Check(ctx context.Context, path string) error {
	out, err := onImage(ctx, path, true, func(p string) []string { return []string{"e2fsck", "-f", "-y", p} })
	if code := exitCode(err); err != nil && (code < 0 || code > 2) {
		return fmt.Errorf("checking %s: %w: %s", filepath.Base(path), err, LastLines(out, 5))
	}
	return nil
}

// Verify runs e2fsck -f -n (read-only): a filesystem with any error is
// refused with e2fsck's last lines, nothing is changed.
func Verify(ctx context.Context, path string) error {
	out, err := onImage(ctx, path, false, func(p string) []string { return []string{"e2fsck", "-f", "-n", p} })
	if err != nil {
		return fmt.Errorf("e2fsck -f -n found errors (exit %d): %s", exitCode(err), LastLines(out, 3))
	}
	return nil
}

// Preen runs e2fsck -f -p, the check resize2fs insists on before it grows
// a filesystem: exit 0 or 1 (errors fixed) are fine.
func Preen(ctx context.Context, path string) error {
	out, err := onImage(ctx, path, true, func(p string) []string { return []string{"e2fsck", "-f", "-p", p} })
	if err != nil && exitCode(err) != 1 {
		return fmt.Errorf("e2fsck -f -p %s: %w: %s", path, err, LastLines(out, 5))
	}
	return nil
}

// Grow grows the filesystem to fill its file (resize2fs with no size). It
// refuses a filesystem that needs a check first, changing nothing.
func Grow(ctx context.Context, path string) error {
	if _, err := onImage(ctx, path, true, func(p string) []string { return []string{"resize2fs", p} }); err != nil {
		return fmt.Errorf("growing the filesystem on %s: %w", path, err)
	}
	return nil
}

// ErrTooSmall is returned by Resize when the files do not fit the size.
var ErrTooSmall = errors.New("the files do not fit")

// Resize resizes a checked filesystem to size bytes (the file is left as
// it is). A size below what the files need wraps ErrTooSmall with what
// resize2fs said.
func Resize(ctx context.Context, path string, size int64) error {
	out, err := onImage(ctx, path, true, func(p string) []string {
		return []string{"resize2fs", p, strconv.FormatInt(size>>10, 10) + "K"}
	})
	if err != nil {
		return fmt.Errorf("%w: %s", ErrTooSmall, LastLines(out, 2))
	}
	return nil
}

// MinSize returns the smallest size in bytes the filesystem can shrink to
// (resize2fs -P). Check it first.
func MinSize(ctx context.Context, path string) (int64, error) {
	out, err := onImage(ctx, path, false, func(p string) []string { return []string{"resize2fs", "-P", p} })
	if err != nil {
		return 0, fmt.Errorf("measuring %s: %w: %s", filepath.Base(path), err, LastLines(out, 3))
	}
	var blocks int64
	for _, line := range strings.Split(string(out), "\n") {
		if _, v, ok := strings.Cut(line, "Estimated minimum size of the filesystem:"); ok {
			blocks, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if blocks <= 0 {
		return 0, fmt.Errorf("measuring %s: no minimum size in: %s", filepath.Base(path), LastLines(out, 3))
	}
	_, bsize, err := superblock(ctx, path)
	return blocks * bsize, err
}

// Shrink shrinks a checked filesystem to its minimum (resize2fs -M) and
// truncates the file to match; it returns the new size in bytes.
func Shrink(ctx context.Context, path string) (int64, error) {
	if out, err := onImage(ctx, path, true, func(p string) []string { return []string{"resize2fs", "-M", p} }); err != nil {
		return 0, fmt.Errorf("shrinking %s: %w: %s", filepath.Base(path), err, LastLines(out, 3))
	}
	size, err := Size(ctx, path)
	if err != nil {
		return 0, err
	}
	return size, os.Truncate(path, size)
}

// Size returns the filesystem's size in bytes (from its superblock).
func Size(ctx context.Context, path string) (int64, error) {
	blocks, bsize, err := superblock(ctx, path)
	return blocks * bsize, err
}

// superblock returns the block count and block size (dumpe2fs -h).
func superblock(ctx context.Context, path string) (blocks, bsize int64, err error) {
	out, err := onImage(ctx, path, false, func(p string) []string { return []string{"dumpe2fs", "-h", p} })
	if err != nil {
		return 0, 0, fmt.Errorf("reading the superblock of %s: %w", filepath.Base(path), err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch strings.TrimSpace(k) {
		case "Block count":
			blocks = n
		case "Block size":
			bsize = n
		}
	}
	if blocks <= 0 || bsize <= 0 {
		return 0, 0, fmt.Errorf("no block count in the superblock of %s", filepath.Base(path))
	}
	return blocks, bsize, nil
}

// MagicEnd is how many bytes of a file HasMagic needs.
const MagicEnd = magicOffset + 2

// magicOffset is the superblock's magic: at 1024, offset 56 inside it.
const magicOffset = 1024 + 56

// HasMagic reports whether the head of a file carries the ext2/3/4
// superblock magic 0xEF53.
func HasMagic(head []byte) bool {
	return len(head) >= MagicEnd && binary.LittleEndian.Uint16(head[magicOffset:]) == 0xef53
}
