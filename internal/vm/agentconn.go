package vm

import (
	"context"
	"fmt"
	"net"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// agentFor returns the VM's agent connection, dialling when there is none or
// the old one closed. One connection per VM is kept: the virtio-serial
// channel accepts a single host connection at a time, and every exec is a
// stream multiplexed on it.
func (m *Manager) agentFor(ctx context.Context, id string, h *Handles) (*agent.Client, error) {
	m.mu.Lock()
	c := m.agents[id]
	m.mu.Unlock()
	if c != nil {
		select {
		case <-c.Closed():
			m.dropAgent(id)
		default:
			return c, nil
		}
	}
	c, err := dialAgent(ctx, h.VMM)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if old := m.agents[id]; old != nil {
		// another caller won the race; keep theirs
		m.mu.Unlock()
		c.Close()
		return old, nil
	}
	m.agents[id] = c
	m.mu.Unlock()
	return c, nil
}

func (m *Manager) dropAgent(id string) {
	m.mu.Lock()
	c := m.agents[id]
	delete(m.agents, id)
	m.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func dialAgent(ctx context.Context, h vmm.Handles) (*agent.Client, error) {
	switch h.AgentTransport {
	case vmm.TransportSerial:
		return agent.DialSerial(ctx, h.AgentSocket)
	case vmm.TransportVsockHybrid:
		return agent.DialHybridVsock(ctx, h.AgentSocket, vmm.AgentPort)
	case vmm.TransportVsock:
		return agent.DialVsock(ctx, h.VsockCID, vmm.AgentPort)
	}
	return nil, fmt.Errorf("unknown agent transport %q", h.AgentTransport)
}

// waitReady polls the agent's health until it answers, the engine dies, or
// the deadline passes. Then it sets the guest clock (a restored or long
// paused guest's clock is stale).
func (m *Manager) waitReady(ctx context.Context, v api.VM, e vmm.Engine, h *Handles, deadline time.Time) error {
	return m.waitAgent(ctx, v, e, h, deadline, 250*time.Millisecond, true)
}

// waitAgent is waitReady polling every poll (a restored guest's agent is
// back within a second: restores poll faster than boots), setting the
// guest clock when setClock (a restore's identity op sets it itself).
func (m *Manager) waitAgent(ctx context.Context, v api.VM, e vmm.Engine, h *Handles, deadline time.Time, poll time.Duration, setClock bool) error {
	var last error
	for {
		if !e.Alive(h.VMM) {
			return fmt.Errorf("the %s process exited while the guest was booting: %s", v.Runtime.Engine, proc.LogTail(v.Runtime.EngineLogPath))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest agent did not answer within %s (last error: %v)", time.Duration(m.cfg.ReadyTimeout), last)
		}
		c, err := m.agentFor(ctx, v.ID, h)
		if err == nil {
			hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = c.Health(hctx)
			cancel()
			if err == nil && !setClock {
				return nil
			}
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				if err := c.SetClock(cctx, time.Now()); err != nil {
					m.log.Warn("setting guest clock", "vm", v.Name, "err", err)
				}
				cancel()
				return nil
			}
			if ctx.Err() == nil {
				select {
				case <-c.Closed():
					m.dropAgent(v.ID)
				default:
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Exec returns a raw stream to the VM's agent for the exec protocol.
func (m *Manager) Exec(ctx context.Context, name string) (net.Conn, error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return nil, err
	}
	h, alive := m.vmAlive(v)
	if !alive || v.Runtime.State != api.VMRunning {
		return nil, api.FailedPrecondition("vm %q is %s, not running", v.Name, v.Runtime.State).
			WithAction("vm start", v.Name)
	}
	c, err := m.agentFor(ctx, v.ID, h)
	if err != nil {
		return nil, api.Unavailable("connecting to the agent of vm %q: %w", v.Name, err)
	}
	s, err := c.OpenStream(ctx)
	if err != nil {
		m.dropAgent(v.ID)
		// one retry on a fresh connection: the guest may have reopened its port
		if c, err = m.agentFor(ctx, v.ID, h); err == nil {
			s, err = c.OpenStream(ctx)
		}
		if err != nil {
			return nil, api.Unavailable("opening an agent stream to vm %q: %w", v.Name, err)
		}
	}
	return m.trackStream(v.ID, s), nil
}
