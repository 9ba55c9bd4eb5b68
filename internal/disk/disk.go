// Package disk owns how a VM's system disk is made copy-on-write over its
// image's rootfs, and every later thing done to that disk's bytes: attach,
// detach, export as a raw image, grow, snapshot, remove. It also clones work
// disks from a work-seed and grows them.
//
// Drivers (one package each): disk/dmsnap (dm-snapshot over loop devices;
// needs device-mapper), disk/reflink (FICLONE on XFS/btrfs), disk/qcow2 (a
// qcow2 overlay; QEMU only), disk/copy (a sparse copy; always works, slowest).
// disk/pool creates and mounts the loop-backed XFS pool that lets reflink
// work on hosts whose state dir cannot reflink.
//
// What callers must not know: a driver's kernel state (loop devices, dm
// targets) and how a format is converted, resized or copied. A Disk's State
// is the driver's own record, opaque above it (like vmm.Handles.Extra): a
// caller stores the Disk (handles.json) and hands it back, nothing more.
//
// Lifecycle: Create makes the system disk for one VM at dst (dst's directory
// exists). The returned Disk says which path and format the engine opens
// and, in State, what kernel state the driver holds. Remove undoes Create
// entirely, and is idempotent: it may be called on a half-made disk and
// again after success. Attach re-creates kernel state after a host reboot (a
// no-op for file-only drivers); Detach releases it and returns the record to
// keep. Export, Grow and Snapshot take a disk no engine has open (its VM is
// stopped); they attach and detach for themselves when they must.
package disk

import (
	"context"
	"encoding/json"
)

// Driver names.
const (
	DMSnap  = "dmsnap"
	Reflink = "reflink"
	Qcow2   = "qcow2"
	Copy    = "copy"
)

// Driver makes copy-on-write system disks and works on them.
type Driver interface {
	Info() Info
	// Create makes a copy-on-write disk at dst over base (a raw ext4 image).
	Create(ctx context.Context, base, dst string) (Disk, error)
	// Attach makes an existing disk usable again (loop/dm re-setup); an
	// attached disk is returned as it is.
	Attach(ctx context.Context, d Disk) (Disk, error)
	// Attached reports whether d holds kernel state that Detach releases.
	Attached(d Disk) bool
	// Detach releases kernel state (loops, dm) but keeps the files, and
	// returns the record to keep (State cleared). Parts already gone are fine.
	Detach(ctx context.Context, d Disk) (Disk, error)
	// Remove releases kernel state and deletes the disk's files.
	Remove(ctx context.Context, d Disk) error
	// Export writes the disk's content to the new file dst as a raw,
	// sparse image that stands alone (no backing file, no kernel state;
	// reflinked where the filesystem can). dst must not exist
	// (AlreadyExists); on failure it is removed.
	Export(ctx context.Context, d Disk, dst string) error
	// Grow makes the disk size bytes; it never shrinks (a size at or
	// below the disk's does nothing). The filesystem on it is the guest's
	// to grow. A driver that cannot grow (Info().Grows false) returns
	// FailedPrecondition with the fix.
	Grow(ctx context.Context, d Disk, size int64) error
	// Snapshot makes dst a new disk of this driver with d's content now,
	// independent of d afterwards (both may be written; the base stays
	// shared). A driver that cannot (Info().Snapshots false) returns
	// FailedPrecondition with the fix.
	Snapshot(ctx context.Context, d Disk, dst string) (Disk, error)
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
	Grows       bool   `json:"grows"`        // Grow works
	Snapshots   bool   `json:"snapshots"`    // Snapshot works
}

// Disk is a created disk.
type Disk struct {
	Driver string `json:"driver"`
	Path   string `json:"path"`   // what the engine opens
	Format string `json:"format"` // "raw" or "qcow2"
	// Files are every file the driver created (removed by Remove).
	Files []string `json:"files,omitempty"`
	// State is the driver's record of the kernel state it holds while the
	// disk is attached; empty when it holds none. Only the driver reads it.
	State json.RawMessage `json:"state,omitempty"`
}

// UnmarshalJSON reads a Disk record. Records written before State existed
// kept the driver's state beside the common fields (dmsnap's "loops",
// "dm_name", "dm_device"); such fields are gathered into State as one
// object, so a disk made by an older banger can still be torn down.
func (d *Disk) UnmarshalJSON(b []byte) error {
	type plain Disk
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*d = Disk(p)
	if string(d.State) == "null" {
		d.State = nil
	}
	if len(d.State) > 0 {
		return nil
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil // not an object (null): nothing more to gather
	}
	for _, k := range []string{"driver", "path", "format", "files", "state"} {
		delete(all, k)
	}
	if len(all) == 0 {
		return nil
	}
	st, err := json.Marshal(all)
	if err != nil {
		return err
	}
	d.State = st
	return nil
}
