// Package qcow2 is the disk driver that makes a system disk a qcow2
// overlay whose backing file is the image's raw rootfs. It is O(1) and
// works on any filesystem, but only QEMU can open qcow2 (Firecracker
// needs raw).
package qcow2

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"banger/internal/disk"
	"banger/internal/disk/internal/blk"
	"banger/internal/revert"
)

var _ disk.Driver = (*Driver)(nil)

// Driver is the qcow2 overlay driver.
type Driver struct {
	qemuImg string // path or name of qemu-img
}

// New returns the driver using the qemu-img binary at qemuImg ("" means
// qemu-img on PATH).
func New(qemuImg string) *Driver {
	if qemuImg == "" {
		qemuImg = "qemu-img"
	}
	return &Driver{qemuImg: qemuImg}
}

// Info reports the driver's capabilities; it is available when qemu-img is
// found.
func (d *Driver) Info() disk.Info {
	info := disk.Info{Name: disk.Qcow2, Instant: true, Format: "qcow2", QEMUOnly: true}
	if p, err := exec.LookPath(d.qemuImg); err != nil {
		info.Reason = fmt.Sprintf("%s not found: apt-get install qemu-utils", d.qemuImg)
	} else {
		info.Available = true
		info.Reason = "qcow2 overlays with " + p
	}
	return info
}

// Create makes dst a qcow2 overlay backed by base (recorded as an absolute
// path, raw format). Writes go to dst; base is never written. Nothing is
// left at dst on failure.
func (d *Driver) Create(ctx context.Context, base, dst string) (disk.Disk, error) {
	if err := disk.CheckPaths(base, dst); err != nil {
		return disk.Disk{}, err
	}
	absBase, err := filepath.Abs(base)
	if err != nil {
		return disk.Disk{}, fmt.Errorf("resolving base %s: %w", base, err)
	}
	r := revert.New()
	defer r.Fail()
	// Claim dst first: qemu-img would silently overwrite an existing file.
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return disk.Disk{}, fmt.Errorf("creating qcow2 disk %s: %w", dst, err)
	}
	f.Close()
	r.Add(func() { os.Remove(dst) })
	if _, err := blk.Run(ctx, d.qemuImg, "create", "-q", "-f", "qcow2", "-b", absBase, "-F", "raw", dst); err != nil {
		return disk.Disk{}, fmt.Errorf("creating qcow2 disk %s over %s: %w", dst, base, err)
	}
	r.Success()
	return disk.Disk{Driver: disk.Qcow2, Path: dst, Format: "qcow2", Files: []string{dst}}, nil
}

// Attach has nothing to re-create: the overlay is a plain file.
func (d *Driver) Attach(ctx context.Context, dk disk.Disk) (disk.Disk, error) {
	return dk, nil
}

// Detach has nothing to release.
func (d *Driver) Detach(ctx context.Context, dk disk.Disk) error { return nil }

// Remove deletes the overlay; the base is untouched. Files already gone
// are fine.
func (d *Driver) Remove(ctx context.Context, dk disk.Disk) error { return disk.RemoveFiles(dk) }
