// Package copy is the disk driver that makes a system disk a full sparse
// copy of the image's rootfs. It works on every filesystem and with every
// engine; it is the slowest (it reads all of the base's data) and the
// fallback when nothing faster is available.
package copy

import (
	"context"
	"fmt"

	"banger/internal/disk"
)

var _ disk.Driver = (*Driver)(nil)

// Driver is the sparse-copy driver. It holds no state.
type Driver struct{}

// New returns the copy driver.
func New() *Driver { return &Driver{} }

// Info reports the driver's capabilities: always available.
func (d *Driver) Info() disk.Info {
	return disk.Info{Name: disk.Copy, Available: true, Reason: "sparse copy; works everywhere", Format: "raw"}
}

// Create copies base to dst keeping holes, and fsyncs it. Nothing is left
// at dst on failure.
func (d *Driver) Create(ctx context.Context, base, dst string) (disk.Disk, error) {
	if err := disk.CheckPaths(base, dst); err != nil {
		return disk.Disk{}, err
	}
	if err := disk.SparseCopy(base, dst); err != nil {
		return disk.Disk{}, fmt.Errorf("creating copied disk %s: %w", dst, err)
	}
	return disk.Disk{Driver: disk.Copy, Path: dst, Format: "raw", Files: []string{dst}}, nil
}

// Attach has nothing to re-create: the disk is a plain file.
func (d *Driver) Attach(ctx context.Context, dk disk.Disk) (disk.Disk, error) {
	return dk, nil
}

// Detach has nothing to release.
func (d *Driver) Detach(ctx context.Context, dk disk.Disk) error { return nil }

// Remove deletes the disk's files; files already gone are fine.
func (d *Driver) Remove(ctx context.Context, dk disk.Disk) error { return disk.RemoveFiles(dk) }
