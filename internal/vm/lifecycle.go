package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/progress"
	"banger/internal/vmm"
)

// Delete stage names, in order.
const (
	StageStop    = "stop"
	StageRelease = "release network"
	StageDisks   = "remove disks"
	StageFiles   = "remove files"
	StageRecord  = "remove record"
)

// stopTimeout is how long a guest gets to power off before it is killed.
const stopTimeout = 15 * time.Second

// Start boots a stopped (or failed) VM. A VM recorded as running whose
// engine has exited (its guest powered itself off) is first stopped the
// way Stop would, then booted.
func (m *Manager) Start(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if err := m.settleExitedLocked(ctx, &v); err != nil {
		return v, err
	}
	h, err := m.stoppedHandlesLocked(v)
	if err != nil {
		return v, err
	}
	img, err := m.st.GetImage(ctx, v.ImageID)
	if err != nil {
		return v, fmt.Errorf("vm %s: its image: %w", v.Name, err)
	}
	sys, err := m.disk.Attach(ctx, h.SystemDisk)
	if err != nil {
		return v, fmt.Errorf("attaching system disk: %w", err)
	}
	h.SystemDisk = sys
	if err := m.boot(ctx, &v, img, h, rep, "start", bootWait{}); err != nil {
		c, cancel := bg()
		defer cancel()
		m.startFailedLocked(c, &v, h, err)
		return v, err
	}
	return v, nil
}

// startFailedLocked settles a VM whose boot failed (boot has already
// released its tap and engine): the system disk is detached and its record
// kept, and the VM is stopped with the reason. These failures are logged,
// not returned: the caller returns the boot's error, which is what the user
// must see, and whatever is left here is torn down by the next stop,
// delete or reconcile. The VM's lock must be held.
func (m *Manager) startFailedLocked(ctx context.Context, v *api.VM, h *Handles, bootErr error) {
	sys, err := m.disk.Detach(ctx, h.SystemDisk)
	if err != nil {
		m.log.Warn("detaching system disk after a failed start", "vm", v.Name, "err", err)
	}
	m.keepDiskRecord(v, h.Engine, sys)
	if err := m.setState(ctx, v, api.VMStopped, bootErr.Error()); err != nil {
		m.log.Error("recording a failed start", "vm", v.Name, "err", err)
	}
}

// keepDiskRecord rewrites handles.json with only what a stopped VM keeps:
// its engine and its (detached) system disk's record.
func (m *Manager) keepDiskRecord(v *api.VM, engine string, sys disk.Disk) {
	rest := &Handles{Engine: engine, SystemDisk: sys}
	if err := writeHandles(v.Runtime.VMDir, rest); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("writing handles", "vm", v.Name, "err", err)
	}
}

// checkStoppedLocked is the one "is this VM stopped" check of the
// operations that need it stopped (start, edit, disk export and grow): its
// engine is not alive and its record says neither running, starting,
// creating nor deleting. Otherwise the error is FailedPrecondition with the
// fix. The VM's lock must be held.
func (m *Manager) checkStoppedLocked(v api.VM) error {
	h, alive := m.vmAlive(v)
	if alive {
		if err := m.unloadedEngine(v, h); err != nil {
			return err
		}
	}
	switch s := v.Runtime.State; {
	case alive || s == api.VMRunning || s == api.VMStarting:
		return api.FailedPrecondition("vm %q is running", v.Name).WithFix("stop it first").WithAction("vm stop", v.Name)
	case s == api.VMCreating || s == api.VMDeleting:
		return api.FailedPrecondition("vm %q is %s", v.Name, s).WithFix("wait for it, or delete it").WithAction("vm delete", v.Name)
	}
	return nil
}

// stoppedHandlesLocked checks that v is stopped (checkStoppedLocked) and
// returns its handles file, which carries the system disk's record. The
// VM's lock must be held.
func (m *Manager) stoppedHandlesLocked(v api.VM) (*Handles, error) {
	if err := m.checkStoppedLocked(v); err != nil {
		return nil, err
	}
	h, err := readHandles(v.Runtime.VMDir)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, api.FailedPrecondition("vm %q has no %s in %s: its disks are missing", v.Name, handlesFileName, v.Runtime.VMDir).
			WithAction("vm delete", v.Name)
	}
	return h, nil
}

// settleExitedLocked stops (as Stop would: tap, DNS name, disk state
// released) a VM recorded as running or starting whose engine is no longer
// alive; any other VM is left alone. The VM's lock must be held.
func (m *Manager) settleExitedLocked(ctx context.Context, v *api.VM) error {
	if s := v.Runtime.State; s != api.VMRunning && s != api.VMStarting {
		return nil
	}
	if _, alive := m.vmAlive(*v); alive {
		return nil
	}
	m.cancelReadiness(v.ID)
	return m.stopLocked(ctx, v, "the engine process had exited")
}

// Stop powers a VM off and releases its tap; the disks stay.
func (m *Manager) Stop(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	unlock := m.lockVM(v.Name)
	defer unlock()
	m.cancelReadiness(v.ID)
	if v, err = m.getVM(ctx, name); err != nil {
		return api.VM{}, err
	}
	done := rep.Stage(StageStop)
	err = m.stopLocked(ctx, &v, "")
	done(err)
	return v, err
}

// stopLocked stops the engine (if alive) and releases every piece of kernel
// state; it is also the teardown used by reconcile and delete. The VM's
// lock must be held.
//
// The "stopping" state is recorded before the engine is touched; when the
// store cannot record it the error is returned and the VM left running
// (stopping it anyway would leave a record that says running over a dead
// engine, with nobody told).
func (m *Manager) stopLocked(ctx context.Context, v *api.VM, reason string) error {
	h, alive := m.vmAlive(*v)
	if alive {
		if err := m.unloadedEngine(*v, h); err != nil {
			return err
		}
		e, err := m.engine(h.Engine)
		if err != nil {
			return err
		}
		prev := v.Runtime.State
		v.Runtime.State = api.VMStopping
		if err := m.st.UpdateVMRuntime(ctx, v.ID, v.Runtime); err != nil {
			v.Runtime.State = prev
			return fmt.Errorf("recording that vm %s is stopping: %w", v.Name, err)
		}
		m.guestShutdown(ctx, v, h, e.Info().GuestShutdown)
		if err := e.Stop(ctx, h.VMM, stopTimeout); err != nil {
			return fmt.Errorf("stopping vm %s: %w", v.Name, err)
		}
	}
	m.dropAgent(v.ID)
	m.releaseKernelState(ctx, v, h)
	state := api.VMStopped
	if reason != "" && v.Runtime.State == api.VMCreating {
		state = api.VMFailed
	}
	return m.setState(ctx, v, state, reason)
}

// releaseKernelState returns the tap, drops the DNS name and detaches the
// system disk's kernel state; handles.json keeps only the disk record.
func (m *Manager) releaseKernelState(ctx context.Context, v *api.VM, h *Handles) {
	m.net.RemoveHost(v.Name)
	m.unbindNet(v)
	if h == nil {
		m.cacheHandles(v.ID, nil)
		return
	}
	m.cleanupEngine(ctx, v, h)
	if e, err := m.engine(h.Engine); err == nil && !e.Alive(h.VMM) {
		m.removeMemoryFile(*v)
	}
	if h.Tap != "" {
		if err := m.net.ReleaseTap(ctx, h.Tap); err != nil {
			m.log.Warn("releasing tap", "vm", v.Name, "tap", h.Tap, "err", err)
		}
	}
	sys, err := m.disk.Detach(ctx, h.SystemDisk)
	if err != nil {
		m.log.Warn("detaching system disk", "vm", v.Name, "err", err)
	}
	m.keepDiskRecord(v, h.Engine, sys)
	m.cacheHandles(v.ID, nil)
}

// cleanupEngine removes what an engine that ended uncleanly left behind (a
// Firecracker jail with its mounts, sockets): Kill of a gone process only
// cleans up. A live engine is left alone.
func (m *Manager) cleanupEngine(ctx context.Context, v *api.VM, h *Handles) {
	e, err := m.engine(h.Engine)
	if err != nil || h.VMM.PID <= 0 || e.Alive(h.VMM) {
		return
	}
	if err := e.Kill(ctx, h.VMM); err != nil {
		m.log.Warn("cleaning up after the engine", "vm", v.Name, "err", err)
	}
}

// Restart stops then starts a VM.
func (m *Manager) Restart(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	if _, err := m.Stop(ctx, name, rep); err != nil {
		return api.VM{}, err
	}
	return m.Start(ctx, name, rep)
}

// Delete stops a VM and removes everything it had.
func (m *Manager) Delete(ctx context.Context, name string, rep progress.Reporter) error {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return err
	}
	unlock := m.lockVM(v.Name)
	defer unlock()
	m.cancelReadiness(v.ID)
	if v, err = m.getVM(ctx, name); err != nil {
		return err
	}
	// Deletion runs to the end even if the caller goes away.
	ctx, cancel := bg()
	defer cancel()
	return m.deleteLocked(ctx, &v, rep)
}

// deleteLocked kills the engine, releases the tap, removes the disks, the
// VM dir and the record, one stage at a time; state "deleting" is recorded
// first, so a crash midway is finished by reconcile. The VM's lock must be
// held.
func (m *Manager) deleteLocked(ctx context.Context, v *api.VM, rep progress.Reporter) error {
	h, alive := m.vmAlive(*v)
	if alive {
		if err := m.unloadedEngine(*v, h); err != nil {
			return err
		}
	}
	v.Runtime.State = api.VMDeleting
	if err := m.st.UpdateVMRuntime(ctx, v.ID, v.Runtime); err != nil {
		return err
	}
	done := rep.Stage(StageStop)
	if h != nil {
		if hv, alive := m.vmAlive(*v); alive {
			e, err := m.engine(hv.Engine)
			if err == nil {
				err = e.Kill(ctx, hv.VMM)
			}
			if err != nil {
				done(err)
				return fmt.Errorf("killing vm %s: %w", v.Name, err)
			}
		}
	}
	m.dropAgent(v.ID)
	m.fwds.closeVM(v.Name)
	m.removeMemoryFile(*v)
	done(nil)
	m.stageHook("delete", StageStop)

	done = rep.Stage(StageRelease)
	if h != nil {
		m.cleanupEngine(ctx, v, h)
	}
	m.net.RemoveHost(v.Name)
	m.unbindNet(v)
	if h != nil && h.Tap != "" {
		if err := m.net.ReleaseTap(ctx, h.Tap); err != nil {
			done(err)
			return fmt.Errorf("releasing tap %s: %w", h.Tap, err)
		}
	}
	done(nil)
	m.stageHook("delete", StageRelease)

	done = rep.Stage(StageDisks)
	if h != nil {
		if err := m.disk.Remove(ctx, h.SystemDisk); err != nil {
			done(err)
			return fmt.Errorf("removing system disk: %w", err)
		}
	}
	done(nil)
	m.stageHook("delete", StageDisks)

	done = rep.Stage(StageFiles)
	if v.Runtime.VMDir != "" {
		if err := os.RemoveAll(v.Runtime.VMDir); err != nil {
			done(err)
			return fmt.Errorf("removing %s: %w", v.Runtime.VMDir, err)
		}
	}
	done(nil)
	m.stageHook("delete", StageFiles)

	done = rep.Stage(StageRecord)
	m.cacheHandles(v.ID, nil)
	m.mu.Lock()
	delete(m.stats, v.ID)
	m.mu.Unlock()
	err := m.st.DeleteVM(ctx, v.ID)
	done(err)
	m.stageHook("delete", StageRecord)
	if err == nil {
		m.log.Info("vm deleted", "vm", v.Name)
	}
	return err
}

// Edit changes a stopped VM's vcpus, memory or work disk size.
func (m *Manager) Edit(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error) {
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if err := m.checkStoppedLocked(v); err != nil {
		return v, err
	}
	img, err := m.st.GetImage(ctx, v.ImageID)
	if err != nil {
		return v, err
	}
	nv := v
	nv.VCPUs = or(req.VCPUs, v.VCPUs)
	nv.MemoryMiB = or(req.MemoryMiB, v.MemoryMiB)
	nv.DiskBytes = or64(req.DiskBytes, v.DiskBytes)
	var info vmm.Info
	if e, err := m.engine(v.Runtime.Engine); err == nil {
		info = e.Info()
	}
	if err := m.checkResources(nv, img, info); err != nil {
		return v, err
	}
	if nv.DiskBytes < v.DiskBytes {
		return v, api.Invalid("disk size can only grow: %d < current %d bytes", nv.DiskBytes, v.DiskBytes).
			WithFix("give a --disk larger than the current size")
	}
	if nv.DiskBytes > v.DiskBytes {
		if err := m.work.Grow(ctx, v.Runtime.WorkDisk, nv.DiskBytes); err != nil {
			return v, fmt.Errorf("growing work disk: %w", err)
		}
	}
	if err := m.st.UpdateVM(ctx, nv); err != nil {
		return v, err
	}
	return m.getVM(ctx, name)
}

// Detail returns a VM's record with its live handles.
func (m *Manager) Detail(ctx context.Context, name string) (api.VMDetail, error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return api.VMDetail{}, err
	}
	h, alive := m.vmAlive(v)
	d := api.VMDetail{VM: v, Alive: alive}
	if alive {
		d.Handles = h.API()
		d.URLs = m.urls(ctx, v)
		d.HostCAs = guestCAs(v)
		d.Access = m.access(ctx, v)
	}
	if st, err := m.netStatus(ctx, &v); err == nil {
		d.Net = &st
	}
	d.Forwards = m.fwds.list(v.Name)
	d.IdleStopAt = m.idleStopAt(v)
	return d, nil
}

// guestShutdown asks the guest, through its agent, to shut down cleanly
// (flushing the work disk) the way that ends its engine process: power off
// (QEMU), or reboot where the engine has no power-off and exits on a guest
// reset (Firecracker; see vmm.Info.GuestShutdown). Minimal guests have
// nothing listening to the ACPI power button, so without this the engine's
// graceful stop would wait its whole timeout and then kill the guest.
// Failures are only logged: the engine's stop follows either way.
func (m *Manager) guestShutdown(ctx context.Context, v *api.VM, h *Handles, action string) {
	if action != vmm.ShutdownReboot {
		action = vmm.ShutdownPoweroff
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := m.agentFor(ctx, v.ID, h)
	if err == nil {
		// the host's CAs leave the guest's disk (hostca.go)
		if _, serr := c.Exec(ctx, api.ExecRequest{Argv: []string{"sh", "-c", stripHostCAScript}}, nil, io.Discard, io.Discard); serr != nil {
			m.log.Info("removing the host's CAs before shutdown", "vm", v.Name, "err", serr)
		}
		_, err = c.Exec(ctx, api.ExecRequest{Argv: []string{"systemctl", action, "--no-block"}}, nil, io.Discard, io.Discard)
	}
	if err != nil {
		m.log.Info("guest shutdown through the agent failed; the engine stops it", "vm", v.Name, "action", action, "err", err)
	}
}
