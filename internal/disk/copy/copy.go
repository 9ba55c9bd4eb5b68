// Package copy is the disk driver that makes a system disk a full sparse
// copy of the image's rootfs. It works on every filesystem and with every
// engine; it is the slowest (it reads all of the base's data) and the
// fallback when nothing faster is available. It holds no kernel state and
// knows nothing of VMs.
package copy

import (
	"context"
	"fmt"

	"banger/internal/disk"
)

var _ disk.Driver = (*Driver)(nil)

// Driver is the sparse-copy driver. It holds no state.
type Driver struct{ disk.RawFile }

// New returns the copy driver.
func New() *Driver { return &Driver{} }

// Info reports the driver's capabilities: always available.
func (d *Driver) Info() disk.Info {
	return disk.Info{Name: disk.Copy, Available: true, Reason: "sparse copy; works everywhere", Format: "raw",
		Grows: true, Snapshots: true}
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

// Snapshot copies the disk to dst keeping holes.
func (d *Driver) Snapshot(ctx context.Context, dk disk.Disk, dst string) (disk.Disk, error) {
	if err := disk.SparseCopy(dk.Path, dst); err != nil {
		return disk.Disk{}, fmt.Errorf("snapshotting disk %s: %w", dk.Path, err)
	}
	return disk.Snapshotted(dk, dst), nil
}
