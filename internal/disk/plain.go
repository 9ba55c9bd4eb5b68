package disk

import "context"

// PlainFile is the part of a driver whose disks are plain files holding no
// kernel state (reflink, qcow2, copy): attach and detach have nothing to
// do and remove deletes the files. Drivers embed it.
type PlainFile struct{}

// Attach has nothing to re-create: the disk is a plain file.
func (PlainFile) Attach(ctx context.Context, d Disk) (Disk, error) { return d, nil }

// Attached is false: a plain file holds no kernel state.
func (PlainFile) Attached(d Disk) bool { return false }

// Detach has nothing to release.
func (PlainFile) Detach(ctx context.Context, d Disk) (Disk, error) { return d, nil }

// Remove deletes the disk's files; files already gone are fine.
func (PlainFile) Remove(ctx context.Context, d Disk) error { return RemoveFiles(d) }

// RawFile is PlainFile for disks that are raw images (reflink, copy):
// export is a clone of the file and growing extends it.
type RawFile struct{ PlainFile }

// Export clones the disk to dst: a reflink where the filesystem can, else
// a sparse copy.
func (RawFile) Export(ctx context.Context, d Disk, dst string) error {
	return Clone(d.Path, dst)
}

// Grow extends the raw file (sparse); it never shrinks.
func (RawFile) Grow(ctx context.Context, d Disk, size int64) error {
	return GrowFile(d.Path, size)
}

// Snapshotted is the record of a one-file snapshot of d at dst.
func Snapshotted(d Disk, dst string) Disk {
	return Disk{Driver: d.Driver, Path: dst, Format: d.Format, Files: []string{dst}}
}
