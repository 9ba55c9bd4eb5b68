package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"banger/internal/api"
)

// ExportDisks copies a stopped VM's disks out, under the VM's lock so that
// nothing starts it meanwhile: the system disk as a raw ext4 image at
// systemDst (a qcow2 overlay is converted with qemu-img, a device-mapper
// snapshot is attached for the copy and detached again) and, when workDst is
// not "", the work disk as a plain copy at workDst. Both copies are sparse
// (reflinked where the filesystem can). A running VM is FailedPrecondition
// with the fix "banger vm stop VM first". On failure the destination files
// are removed.
func (m *Manager) ExportDisks(ctx context.Context, name, systemDst, workDst string) (err error) {
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if _, alive := m.vmAlive(v); alive || v.Runtime.State == api.VMRunning || v.Runtime.State == api.VMStarting {
		return api.FailedPrecondition("vm %q is running: its disks change while it runs", v.Name).
			WithFix("banger vm stop " + v.Name + " first")
	}
	if v.Runtime.State == api.VMCreating || v.Runtime.State == api.VMDeleting {
		return api.FailedPrecondition("vm %q is %s", v.Name, v.Runtime.State).WithFix("wait for it to finish")
	}
	h, err := m.stoppedHandles(v)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(systemDst)
			if workDst != "" {
				os.Remove(workDst)
			}
		}
	}()
	sys := h.SystemDisk
	if m.disk.Info().KernelState {
		if sys, err = m.disk.Attach(ctx, sys); err != nil {
			return fmt.Errorf("attaching the system disk of vm %s: %w", v.Name, err)
		}
		defer func() {
			c, cancel := bg()
			defer cancel()
			if _, derr := m.disk.Detach(c, sys); derr != nil {
				m.log.Warn("detaching system disk after export", "vm", v.Name, "err", derr)
			}
		}()
	}
	if sys.Format == "qcow2" {
		err = runTool(ctx, "qemu-img", "convert", "-O", "raw", "-f", "qcow2", sys.Path, systemDst)
	} else {
		err = copySparse(ctx, sys.Path, systemDst)
	}
	if err != nil {
		return fmt.Errorf("copying the system disk of vm %s: %w", v.Name, err)
	}
	if workDst != "" {
		if err := copySparse(ctx, v.Runtime.WorkDisk, workDst); err != nil {
			return fmt.Errorf("copying the work disk of vm %s: %w", v.Name, err)
		}
	}
	m.log.Info("vm disks exported", "vm", v.Name, "system", systemDst, "work", workDst)
	return nil
}

// copySparse copies src (a file or a block device) to dst, sparse, with a
// reflink where the filesystem can.
func copySparse(ctx context.Context, src, dst string) error {
	return runTool(ctx, "cp", "--sparse=always", "--reflink=auto", "--", src, dst)
}

func runTool(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// GrowSystemDisk makes a stopped VM's system disk size bytes (never
// smaller): a raw disk is extended (sparse), a qcow2 overlay resized. The
// filesystem on it is grown by the guest (resize2fs /dev/vda, online) — the
// image builder does that before its script runs. A device-mapper snapshot
// cannot grow: FailedPrecondition.
func (m *Manager) GrowSystemDisk(ctx context.Context, name string, size int64) error {
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if _, alive := m.vmAlive(v); alive || v.Runtime.State == api.VMRunning {
		return api.FailedPrecondition("vm %q is running", v.Name).WithFix("banger vm stop " + v.Name + " first")
	}
	h, err := m.stoppedHandles(v)
	if err != nil {
		return err
	}
	sys := h.SystemDisk
	switch {
	case m.disk.Info().KernelState:
		return api.FailedPrecondition("the %s system disk of vm %s cannot grow", sys.Driver, v.Name).
			WithFix("build without a larger --size, or use the reflink or copy disk driver")
	case sys.Format == "qcow2":
		return runTool(ctx, "qemu-img", "resize", "-f", "qcow2", sys.Path, strconv.FormatInt(size, 10))
	}
	fi, err := os.Stat(sys.Path)
	if err != nil {
		return fmt.Errorf("system disk of vm %s: %w", v.Name, err)
	}
	if fi.Size() >= size {
		return nil
	}
	if err := os.Truncate(sys.Path, size); err != nil {
		return fmt.Errorf("growing the system disk of vm %s: %w", v.Name, err)
	}
	return nil
}
