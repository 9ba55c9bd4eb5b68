package vm

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"banger/internal/api"
	"banger/internal/progress"
	"banger/internal/revert"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// boot takes a VM whose disks exist to running: network → engine → boot →
// agent ready. On failure it undoes its own steps (tap, process, DNS entry)
// and leaves the disks to the caller. h carries the system disk; boot fills
// in the tap and engine handles. With noWait it returns after the engine
// stage and the boot and agent-ready stages run in the background
// (readyInBackground), holding the boot slot but not the VM's lock.
func (m *Manager) boot(ctx context.Context, v *api.VM, img api.Image, h *Handles, rep progress.Reporter, op string, w bootWait) error {
	log := m.log.With("vm", v.Name)
	e, err := m.engine(v.Runtime.Engine)
	if err != nil {
		return err
	}
	r := revert.New()
	defer r.Fail()

	if err := m.attachNet(ctx, v, h, rep, r, op); err != nil {
		return err
	}

	// Bound the number of guests booting at once (TCG boots are CPU-bound).
	select {
	case m.bootSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	handedOff := false
	defer func() {
		if !handedOff {
			<-m.bootSem
		}
	}()

	done := rep.Stage(StageEngine)
	os.Remove(v.Runtime.SerialLogPath)
	if err := m.prepareMemoryFile(*v); err != nil {
		done(err)
		return err
	}
	spec := m.spec(*v, img, h)
	vh, err := e.Start(ctx, spec)
	if err != nil {
		done(err)
		return fmt.Errorf("starting %s: %w", v.Runtime.Engine, err)
	}
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if err := e.Kill(c, vh); err != nil {
			log.Error("killing engine", "pid", vh.PID, "err", err)
		}
		m.removeMemoryFile(*v)
		m.dropAgent(v.ID)
		m.cacheHandles(v.ID, nil)
	})
	h.VMM = vh
	h.Engine = v.Runtime.Engine
	v.Runtime.Accel = vh.Accel
	v.Runtime.AgentTransport = vh.AgentTransport
	if err := writeHandles(v.Runtime.VMDir, h); err != nil {
		done(err)
		return err
	}
	m.cacheHandles(v.ID, h)
	v.Runtime.State = api.VMStarting
	if err := m.st.UpdateVM(ctx, *v); err != nil {
		done(err)
		return err
	}
	rep.Detail(fmt.Sprintf("pid %d, %s", vh.PID, accelName(vh.Accel)))
	done(nil)
	m.stageHook(op, StageEngine)

	if w.background {
		handedOff = true
		r.Success()
		m.readyInBackground(*v, e, h, op, true)
		return nil
	}
	if err := m.finishBoot(ctx, v, e, h, rep, op, w.wait); err != nil {
		return err
	}
	r.Success()
	return nil
}

// attachNet is the network stage of boot and fork: a pool tap, the DNS
// name, the tap bound to the VM (anti-spoofing + egress policy). Its undo
// goes on r.
func (m *Manager) attachNet(ctx context.Context, v *api.VM, h *Handles, rep progress.Reporter, r *revert.Reverter, op string) error {
	log := m.log.With("vm", v.Name)
	done := rep.Stage(StageNetwork)
	tap, hit, err := m.net.AcquireTap(ctx)
	if err != nil {
		done(err)
		return fmt.Errorf("acquiring a tap: %w", err)
	}
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if err := m.net.ReleaseTap(c, tap); err != nil {
			log.Error("releasing tap", "tap", tap, "err", err)
		}
	})
	h.Tap = tap
	if err := writeHandles(v.Runtime.VMDir, h); err != nil {
		done(err)
		return err
	}
	ip, err := netip.ParseAddr(v.Runtime.GuestIP)
	if err != nil {
		done(err)
		return fmt.Errorf("vm %s has a bad guest ip %q: %w", v.Name, v.Runtime.GuestIP, err)
	}
	m.net.SetHost(v.Name, ip)
	r.Add(func() { m.net.RemoveHost(v.Name) })
	if err := m.bindNet(ctx, v, tap); err != nil {
		done(err)
		return err
	}
	r.Add(func() { m.unbindNet(v) })
	if hit {
		rep.Detail(tap + " (pool)")
	} else {
		rep.Detail(tap + " (new)")
	}
	done(nil)
	m.stageHook(op, StageNetwork)

	return nil
}

// bootWait says how far boot waits: background hands the boot and readiness
// stages to a goroutine once the engine runs (create --no-wait); wait is
// api.VMCreateRequest.Wait: "" waits for every feature service of the
// image, api.WaitAgent stops at "agent ready" (vm run), a feature name
// waits for that one.
type bootWait struct {
	background bool
	wait       string
}

// finishBoot runs the boot and agent-ready stages of a VM whose engine runs
// (and the readiness of its image's feature services that wait asks for) and
// marks it running. It undoes nothing: its caller owns the engine.
func (m *Manager) finishBoot(ctx context.Context, v *api.VM, e vmm.Engine, h *Handles, rep progress.Reporter, op string, wait string) error {
	deadline := time.Now().Add(time.Duration(m.cfg.ReadyTimeout))
	done := rep.Stage(StageBoot)
	if err := m.waitConsole(ctx, *v, e, h.VMM, deadline); err != nil {
		err = m.bootFailure(*v, h, err, rep)
		done(err)
		return err
	}
	done(nil)
	m.stageHook(op, StageBoot)

	done = rep.Stage(StageReady)
	if err := m.waitReady(ctx, *v, e, h, deadline); err != nil {
		err = m.bootFailure(*v, h, err, rep)
		done(err)
		return err
	}
	m.installHostCAs(ctx, v, h)
	m.installFeatureAuth(ctx, v, h)
	done(nil)
	if wait != api.WaitAgent {
		alive := func() bool { return e.Alive(h.VMM) }
		if err := m.waitFeatures(ctx, *v, wait, alive, rep); err != nil {
			return err
		}
	}
	if err := m.setState(ctx, v, api.VMRunning, ""); err != nil {
		return err
	}
	m.stageHook(op, StageReady)
	return nil
}

func accelName(a string) string {
	switch a {
	case "tcg":
		return "software emulation (tcg)"
	case "kvm":
		return "kvm"
	}
	return a
}

// spec builds the engine spec for v.
func (m *Manager) spec(v api.VM, img api.Image, h *Handles) vmm.Spec {
	gw := m.net.Gateway()
	cmdline := fmt.Sprintf("root=/dev/vda rw net.ifnames=0 ip=%s::%s:%s:%s:eth0:off systemd.hostname=%s banger.dns=%s",
		v.Runtime.GuestIP, gw, m.net.Netmask(), v.Name, v.Name, gw)
	id := m.cfg.VMUID(v.Runtime.VsockCID) // the engine's own unprivileged uid and gid
	return vmm.Spec{
		Name: v.Name, VMDir: v.Runtime.VMDir, VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB, UID: id, GID: id,
		Kernel: img.Kernel, Vmlinux: img.Vmlinux, Initrd: img.Initrd, Cmdline: cmdline,
		Disks: []vmm.Disk{
			{ID: "root", Path: h.SystemDisk.Path, Format: h.SystemDisk.Format},
			{ID: "work", Path: v.Runtime.WorkDisk, Format: "raw"},
		},
		Tap: h.Tap, MAC: v.Runtime.MAC, VsockCID: v.Runtime.VsockCID,
		APISocket: v.Runtime.APISocket, AgentSocket: v.Runtime.AgentSocket,
		SerialLog: v.Runtime.SerialLogPath, EngineLog: v.Runtime.EngineLogPath,
		MetricsPath: v.Runtime.MetricsPath, MemoryFile: m.memoryFile(v),
	}
}

// waitConsole waits until the guest kernel writes to its console: the
// "boot" stage.
func (m *Manager) waitConsole(ctx context.Context, v api.VM, e vmm.Engine, vh vmm.Handles, deadline time.Time) error {
	for {
		if fi, err := os.Stat(v.Runtime.SerialLogPath); err == nil && fi.Size() > 0 {
			return nil
		}
		if !e.Alive(vh) {
			return fmt.Errorf("the %s process exited before the guest wrote to its console: %s", v.Runtime.Engine, proc.LogTail(v.Runtime.EngineLogPath))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest wrote nothing to its console within %s", time.Duration(m.cfg.ReadyTimeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
