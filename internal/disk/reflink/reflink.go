// Package reflink is the disk driver that makes a system disk a reflink
// (FICLONE) of the image's rootfs: O(1), raw format, usable by every
// engine. It needs the base and the disk on one filesystem that shares
// extents: XFS made with reflink=1, or btrfs (see disk/pool). It holds no
// kernel state and knows nothing of VMs.
package reflink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/disk"
)

var _ disk.Driver = (*Driver)(nil)

// Driver is the reflink disk driver. It holds no state.
type Driver struct{ disk.RawFile }

// New returns the reflink driver.
func New() *Driver { return &Driver{} }

// Info reports the driver's capabilities. Whether reflink works depends on
// the filesystem of the disk directory, so Available is true here and
// Supported(dir) answers for one directory; Create fails with the reason
// and fix when the filesystem refuses.
func (d *Driver) Info() disk.Info {
	return disk.Info{
		Name:      disk.Reflink,
		Available: true,
		Reason:    "needs base and disks on a reflink filesystem (XFS reflink=1, btrfs); check with reflink.Supported",
		Instant:   true,
		Format:    "raw",
		Grows:     true,
		Snapshots: true,
	}
}

// Create reflinks base to dst. When the filesystem cannot share extents the
// error is FailedPrecondition with the fix; nothing is left at dst.
func (d *Driver) Create(ctx context.Context, base, dst string) (disk.Disk, error) {
	if err := disk.CheckPaths(base, dst); err != nil {
		return disk.Disk{}, err
	}
	if err := disk.CloneFile(base, dst); err != nil {
		return disk.Disk{}, fmt.Errorf("creating reflink disk %s: %w", dst, err)
	}
	return disk.Disk{Driver: disk.Reflink, Path: dst, Format: "raw", Files: []string{dst}}, nil
}

// Snapshot reflinks the disk to dst: O(1), the two share extents until
// either is written.
func (d *Driver) Snapshot(ctx context.Context, dk disk.Disk, dst string) (disk.Disk, error) {
	if err := disk.CloneFile(dk.Path, dst); err != nil {
		return disk.Disk{}, fmt.Errorf("snapshotting disk %s: %w", dk.Path, err)
	}
	return disk.Snapshotted(dk, dst), nil
}

// Supported reports whether dir's filesystem can reflink, by cloning one
// temporary file to another in dir; when it cannot, the string says why
// and how to fix it.
func Supported(dir string) (bool, string) {
	src, err := os.CreateTemp(dir, ".banger-reflink-probe-*")
	if err != nil {
		return false, fmt.Sprintf("cannot probe %s: %v", dir, err)
	}
	defer os.Remove(src.Name())
	_, werr := src.Write(make([]byte, 4096))
	cerr := src.Close()
	if werr != nil || cerr != nil {
		return false, fmt.Sprintf("cannot probe %s: write: %v, close: %v", dir, werr, cerr)
	}
	dst := filepath.Join(dir, filepath.Base(src.Name())+".clone")
	defer os.Remove(dst)
	if err := disk.CloneFile(src.Name(), dst); err != nil {
		return false, fmt.Sprintf("%s cannot reflink: %v", dir, err)
	}
	return true, fmt.Sprintf("%s supports reflink", dir)
}
