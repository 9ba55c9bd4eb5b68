package vm

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"banger/internal/api"
	"banger/internal/progress"
)

// Reconcile runs once when the daemon starts, before it serves requests.
// For each VM it reads handles.json and checks the engine process
// (vmAlive): a live VM is kept (handle cache seeded, tap claimed, DNS name
// back; one that was still booting is "starting" again and its readiness
// finishes in the background); a dead one has its kernel state (tap, and
// whatever the disk driver holds: m.disk.Attached / Detach) torn down and is
// marked stopped — or failed when it died during create — with the reason.
// Deletes interrupted by a crash are finished. A VM whose engine this
// daemon has not loaded but whose process still exists is kept exactly as
// it is (tap claimed, DNS name back, state unchanged) with the reason in
// its last error; operations on it refuse with that reason. listTaps
// returns banger's taps on the host; non-pool ones no live VM uses are
// deleted.
func (m *Manager) Reconcile(ctx context.Context, listTaps func() ([]string, error)) error {
	vms, err := m.st.ListVMs(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: listing vms: %w", err)
	}
	inUse := map[string]bool{}
	live := map[string]bool{}
	for _, v := range vms {
		tap, err := m.reconcileOne(ctx, v)
		if err != nil {
			m.log.Error("reconcile", "vm", v.Name, "err", err)
			continue
		}
		if tap != "" {
			inUse[tap] = true
			live[v.ID] = true
		}
	}
	m.cleanMemoryDir(live)
	m.reconcileSnapshots(ctx)
	if listTaps == nil {
		return nil
	}
	taps, err := listTaps()
	if err != nil {
		return fmt.Errorf("reconcile: listing taps: %w", err)
	}
	for _, t := range taps {
		if !inUse[t] && !strings.HasPrefix(t, "tap-pool-") {
			m.log.Info("reconcile: deleting leaked tap", "tap", t)
			if err := m.net.DeleteTap(ctx, t); err != nil {
				m.log.Warn("deleting leaked tap", "tap", t, "err", err)
			}
		}
	}
	return nil
}

// reconcileOne settles one VM and returns the tap it keeps using, if any.
func (m *Manager) reconcileOne(ctx context.Context, v api.VM) (string, error) {
	// Nothing else runs yet; the lock is taken for what stopLocked and
	// deleteLocked require all the same.
	unlock := m.lockVM(v.Name)
	defer unlock()
	log := m.log.With("vm", v.Name)
	h, alive := m.vmAlive(v)
	if err := m.unloadedEngine(v, h); alive && err != nil {
		return m.keepUnloaded(ctx, v, h, err)
	}
	switch {
	case v.Runtime.State == api.VMDeleting:
		log.Info("reconcile: finishing an interrupted delete")
		return "", m.deleteLocked(ctx, &v, progress.Nop{})
	case v.Runtime.State == api.VMCreating && v.Origin != "":
		// A child of a fork is complete or gone: one caught half-made goes.
		log.Info("reconcile: deleting a fork interrupted before it was ready", "snapshot", v.Origin)
		return "", m.deleteLocked(ctx, &v, progress.Nop{})
	}
	switch v.Runtime.State {
	case api.VMStopping:
		return "", m.stopLocked(ctx, &v, "")
	}
	if alive {
		m.net.MarkInUse(h.Tap)
		if ip, err := netip.ParseAddr(v.Runtime.GuestIP); err == nil {
			m.net.SetHost(v.Name, ip)
		}
		if err := m.bindNet(ctx, &v, h.Tap); err != nil {
			log.Error("reconcile: the vm's tap stays closed", "err", err)
		}
		if v.Runtime.State == api.VMCreating || v.Runtime.State == api.VMStarting {
			// The guest may not have booted yet: finish its readiness in the
			// background; it ends running, or failed with the reason.
			note := fmt.Sprintf("the daemon restarted while the vm was %s; waiting for its agent", v.Runtime.State)
			if err := m.setState(ctx, &v, api.VMStarting, note); err != nil {
				return h.Tap, err
			}
			log.Info("reconcile: vm still booting", "pid", h.VMM.PID, "tap", h.Tap)
			m.readyInBackground(v, m.engines[h.Engine], h, "reconcile", false)
			return h.Tap, nil
		}
		if v.Runtime.State != api.VMRunning {
			v.Runtime.LastError = fmt.Sprintf("the daemon restarted while the vm was %s; the guest kept running", v.Runtime.State)
			if err := m.setState(ctx, &v, api.VMRunning, v.Runtime.LastError); err != nil {
				return h.Tap, err
			}
		}
		log.Info("reconcile: vm still running", "pid", h.VMM.PID, "tap", h.Tap)
		return h.Tap, nil
	}
	switch v.Runtime.State {
	case api.VMRunning, api.VMStarting:
		reason := "the engine process was gone when the daemon started"
		log.Warn("reconcile: vm died", "reason", reason)
		m.releaseKernelState(ctx, &v, h)
		return "", m.setState(ctx, &v, api.VMStopped, reason)
	case api.VMCreating:
		reason := "the daemon stopped while the vm was being created; delete it and create it again"
		log.Warn("reconcile: interrupted create", "reason", reason)
		m.releaseKernelState(ctx, &v, h)
		return "", m.setState(ctx, &v, api.VMFailed, reason)
	default: // stopped, failed: make sure no kernel state lingers
		if h != nil && (h.Tap != "" || m.disk.Attached(h.SystemDisk)) {
			m.releaseKernelState(ctx, &v, h)
		}
		return "", nil
	}
}

// keepUnloaded keeps a VM whose engine is not loaded but whose process may
// run: nothing is torn down or changed but its last error, which says why.
func (m *Manager) keepUnloaded(ctx context.Context, v api.VM, h *Handles, why error) (string, error) {
	m.log.Warn("reconcile: vm kept; its engine is not loaded", "vm", v.Name, "engine", h.Engine, "pid", h.VMM.PID, "state", v.Runtime.State)
	m.net.MarkInUse(h.Tap)
	if ip, err := netip.ParseAddr(v.Runtime.GuestIP); err == nil {
		m.net.SetHost(v.Name, ip)
	}
	if err := m.bindNet(ctx, &v, h.Tap); err != nil {
		m.log.Error("reconcile: the vm's tap stays closed", "vm", v.Name, "err", err)
	}
	v.Runtime.LastError = why.Error()
	return h.Tap, m.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)
}
