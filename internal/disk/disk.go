// Package disk defines how a VM's system disk is made copy-on-write over its
// image's rootfs, and how work disks are cloned from a work-seed and grown.
//
// Drivers (one package each): disk/dmsnap (dm-snapshot over loop devices;
// needs device-mapper), disk/reflink (FICLONE on XFS/btrfs), disk/qcow2 (a
// qcow2 overlay; QEMU only), disk/copy (a sparse copy; always works, slowest).
// disk/pool creates and mounts the loop-backed XFS pool that lets reflink
// work on hosts whose state dir cannot reflink.
//
// Lifecycle: Create makes the system disk for one VM at dst (dst's directory
// exists). The returned Disk says which path and format the engine opens
// and, for drivers that hold kernel state (loop devices, dm targets), the
// handles to tear down. Remove undoes Create entirely, and is idempotent: it
// may be called on a half-made disk and again after success. Attach re-creates
// kernel state after a host reboot (a no-op for file-only drivers).
package disk

import "context"

// Driver names.
const (
	DMSnap  = "dmsnap"
	Reflink = "reflink"
	Qcow2   = "qcow2"
	Copy    = "copy"
)

// Driver makes copy-on-write system disks.
type Driver interface {
	Info() Info
	// Create makes a copy-on-write disk at dst over base (a raw ext4 image).
	Create(ctx context.Context, base, dst string) (Disk, error)
	// Attach makes an existing disk usable again (loop/dm re-setup).
	Attach(ctx context.Context, d Disk) (Disk, error)
	// Detach releases kernel state (loops, dm) but keeps the files.
	Detach(ctx context.Context, d Disk) error
	// Remove releases kernel state and deletes the disk's files.
	Remove(ctx context.Context, d Disk) error
}

// Info is a driver's capability report.
type Info struct {
	Name        string `json:"name"`
	Available   bool   `json:"available"`
	Reason      string `json:"reason,omitempty"` // why (not) available
	Instant     bool   `json:"instant"`          // O(1) clone
	Format      string `json:"format"`           // "raw" or "qcow2"
	QEMUOnly    bool   `json:"qemu_only"`
	KernelState bool   `json:"kernel_state"` // holds loops/dm targets
}

// Disk is a created disk.
type Disk struct {
	Driver string `json:"driver"`
	Path   string `json:"path"`   // what the engine opens
	Format string `json:"format"` // "raw" or "qcow2"
	// Files are every file the driver created (removed by Remove).
	Files []string `json:"files,omitempty"`
	// Kernel state (dmsnap).
	Loops    []string `json:"loops,omitempty"`
	DMName   string   `json:"dm_name,omitempty"`
	DMDevice string   `json:"dm_device,omitempty"`
}
