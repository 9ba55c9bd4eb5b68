package vm

import (
	"context"

	"banger/internal/api"
	"banger/internal/progress"
	"banger/internal/vmm"
)

// readiness is a boot finishing in the background after a create with
// NoWait. It holds a boot slot but not the VM's lock: every operation that
// takes the lock and changes the VM (stop, delete) first cancels it and
// waits for it to end (cancelReadiness), so the two never race.
type readiness struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// readyInBackground runs the boot and agent-ready stages of v (whose engine
// runs) on a goroutine of its own. The VM is "starting" until its agent
// answers, then "running"; if the guest never gets there the engine is
// killed, the VM's kernel state released and the VM marked "failed" with
// the reason. With holdsSlot the caller's boot slot passes to the
// goroutine; without, the goroutine waits for one.
func (m *Manager) readyInBackground(v api.VM, e vmm.Engine, h *Handles, op string, holdsSlot bool) {
	ctx, cancel := context.WithCancel(context.Background())
	rd := &readiness{cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	m.ready[v.ID] = rd
	m.mu.Unlock()
	go func() {
		defer close(rd.done)
		defer cancel()
		if !holdsSlot {
			select {
			case m.bootSem <- struct{}{}:
			case <-ctx.Done():
				m.forgetReadiness(v.ID, rd)
				return
			}
		}
		defer func() { <-m.bootSem }()
		defer m.forgetReadiness(v.ID, rd)
		err := m.finishBoot(ctx, &v, e, h, progress.Nop{}, op, "")
		if err == nil || ctx.Err() != nil {
			return
		}
		m.log.Warn("background boot failed", "vm", v.Name, "err", err)
		c, cancelBG := bg()
		defer cancelBG()
		if kerr := e.Kill(c, h.VMM); kerr != nil {
			m.log.Error("killing engine", "vm", v.Name, "pid", h.VMM.PID, "err", kerr)
		}
		m.dropAgent(v.ID)
		m.releaseKernelState(c, &v, h)
		if serr := m.setState(c, &v, api.VMFailed, err.Error()); serr != nil {
			m.log.Error("recording failed boot", "vm", v.Name, "err", serr)
		}
	}()
}

func (m *Manager) forgetReadiness(id string, rd *readiness) {
	m.mu.Lock()
	if m.ready[id] == rd {
		delete(m.ready, id)
	}
	m.mu.Unlock()
}

// cancelReadiness stops a background boot of VM id, if any, and waits until
// it has ended. Call it holding the VM's lock, before changing the VM.
func (m *Manager) cancelReadiness(id string) {
	m.mu.Lock()
	rd := m.ready[id]
	m.mu.Unlock()
	if rd != nil {
		rd.cancel()
		<-rd.done
	}
}

// cancelAllReadiness stops every background boot (daemon shutdown); the
// guests keep running and reconcile finds them at the next start.
func (m *Manager) cancelAllReadiness() {
	m.mu.Lock()
	var all []*readiness
	for _, rd := range m.ready {
		all = append(all, rd)
	}
	m.mu.Unlock()
	for _, rd := range all {
		rd.cancel()
		<-rd.done
	}
}
