// Package qcow2 is the disk driver that makes a system disk a qcow2
// overlay whose backing file is the image's raw rootfs. It is O(1) and
// works on any filesystem, but only QEMU can open qcow2 (Firecracker
// needs raw). It holds no kernel state and knows nothing of VMs; qemu-img
// is called only here.
package qcow2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/disk/internal/blk"
	"banger/internal/revert"
)

var _ disk.Driver = (*Driver)(nil)

// Driver is the qcow2 overlay driver.
type Driver struct {
	disk.PlainFile
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
	info := disk.Info{Name: disk.Qcow2, Instant: true, Format: "qcow2", QEMUOnly: true,
		Grows: true, Snapshots: true}
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
	if err := claim(dst); err != nil {
		return disk.Disk{}, fmt.Errorf("creating qcow2 disk %s: %w", dst, err)
	}
	r.Add(func() { os.Remove(dst) })
	if _, err := blk.Run(ctx, d.qemuImg, "create", "-q", "-f", "qcow2", "-b", absBase, "-F", "raw", dst); err != nil {
		return disk.Disk{}, fmt.Errorf("creating qcow2 disk %s over %s: %w", dst, base, err)
	}
	r.Success()
	return disk.Disk{Driver: disk.Qcow2, Path: dst, Format: "qcow2", Files: []string{dst}}, nil
}

// Export converts the overlay (with its backing file) to a raw sparse
// image at dst. dst is claimed first: qemu-img would overwrite a file.
func (d *Driver) Export(ctx context.Context, dk disk.Disk, dst string) error {
	if err := claim(dst); err != nil {
		return err
	}
	if _, err := blk.Run(ctx, d.qemuImg, "convert", "-q", "-O", "raw", "-f", "qcow2", dk.Path, dst); err != nil {
		os.Remove(dst)
		return fmt.Errorf("converting qcow2 disk %s to raw %s: %w", dk.Path, dst, err)
	}
	return nil
}

// Grow resizes the overlay's virtual size; it never shrinks.
func (d *Driver) Grow(ctx context.Context, dk disk.Disk, size int64) error {
	cur, err := VirtualSize(dk.Path)
	if err != nil {
		return err
	}
	if size <= cur {
		return nil
	}
	if _, err := blk.Run(ctx, d.qemuImg, "resize", "-q", "-f", "qcow2", dk.Path, strconv.FormatInt(size, 10)); err != nil {
		return fmt.Errorf("growing qcow2 disk %s to %d bytes: %w", dk.Path, size, err)
	}
	return nil
}

// Snapshot copies the overlay to dst (a reflink where the filesystem can):
// the copy has the same base as its backing file and is independent of the
// original from then on.
func (d *Driver) Snapshot(ctx context.Context, dk disk.Disk, dst string) (disk.Disk, error) {
	if err := disk.Clone(dk.Path, dst); err != nil {
		return disk.Disk{}, fmt.Errorf("snapshotting qcow2 disk %s: %w", dk.Path, err)
	}
	return disk.Snapshotted(dk, dst), nil
}

// VirtualSize reads the size the guest sees from the qcow2 header (a
// big-endian uint64 at offset 24, after the magic "QFI\xfb").
func VirtualSize(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, api.NotFound("disk %s does not exist", path)
	}
	if err != nil {
		return 0, fmt.Errorf("opening qcow2 disk %s: %w", path, err)
	}
	defer f.Close()
	var hdr [32]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || string(hdr[:4]) != "QFI\xfb" {
		return 0, api.Invalid("%s is not a qcow2 image", path)
	}
	size := binary.BigEndian.Uint64(hdr[24:])
	if size > 1<<62 {
		return 0, api.Invalid("%s: qcow2 size %d out of range", path, size)
	}
	return int64(size), nil
}

// claim creates dst exclusively (empty), so that a tool writing to it
// cannot overwrite an existing file.
func claim(dst string) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, os.ErrExist):
		return api.AlreadyExists("%s already exists", dst)
	case errors.Is(err, os.ErrNotExist):
		return api.NotFound("directory %s does not exist", filepath.Dir(dst))
	case err != nil:
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	return f.Close()
}
