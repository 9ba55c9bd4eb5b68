package vm

import (
	"context"
	"fmt"
	"os"

	"banger/internal/api"
	"banger/internal/disk"
)

// ExportDisks copies a stopped VM's disks out, under the VM's lock so that
// nothing starts it meanwhile: the system disk as a raw, sparse image that
// stands alone at systemDst (the disk driver's Export) and, when workDst is
// not "", the work disk at workDst (a reflink where the filesystem can,
// else a sparse copy). A VM that is not stopped is FailedPrecondition
// (checkStoppedLocked). Neither destination may exist; on failure neither is
// left behind.
func (m *Manager) ExportDisks(ctx context.Context, name, systemDst, workDst string) error {
	return m.withStoppedVM(ctx, name, func(v api.VM, h *Handles) error {
		if err := m.disk.Export(ctx, h.SystemDisk, systemDst); err != nil {
			return fmt.Errorf("copying the system disk of vm %s: %w", v.Name, err)
		}
		if workDst != "" {
			if err := disk.Clone(v.Runtime.WorkDisk, workDst); err != nil {
				os.Remove(systemDst)
				return fmt.Errorf("copying the work disk of vm %s: %w", v.Name, err)
			}
		}
		m.log.Info("vm disks exported", "vm", v.Name, "system", systemDst, "work", workDst)
		return nil
	})
}

// withStoppedVM calls fn with the VM called name and its handles, under
// the VM's lock, when it is stopped (stoppedHandlesLocked).
func (m *Manager) withStoppedVM(ctx context.Context, name string, fn func(api.VM, *Handles) error) error {
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	h, err := m.stoppedHandlesLocked(v)
	if err != nil {
		return err
	}
	return fn(v, h)
}

// GrowSystemDisk makes a stopped VM's system disk size bytes, never
// smaller (the disk driver's Grow). The filesystem on it is grown by the
// guest (resize2fs /dev/vda, online) — the image builder does that before
// its script runs. A driver that cannot grow (dm-snapshot) answers
// FailedPrecondition with the fix.
func (m *Manager) GrowSystemDisk(ctx context.Context, name string, size int64) error {
	return m.withStoppedVM(ctx, name, func(v api.VM, h *Handles) error {
		if err := m.disk.Grow(ctx, h.SystemDisk, size); err != nil {
			return fmt.Errorf("growing the system disk of vm %s: %w", v.Name, err)
		}
		return nil
	})
}
