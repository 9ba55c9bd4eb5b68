package vm

import (
	"context"
	"fmt"
	"net/netip"

	"banger/internal/api"
	"banger/internal/netw"
)

// netGuard is the per-VM policing of the host network (netw.Manager):
// anti-spoofing on the VM's tap and its egress policy. It is optional so
// that fakes of Network need not implement it; without it VMs are not
// policed (tests only: the wiring always passes netw.Manager).
type netGuard interface {
	BindVM(name, tap string, ip netip.Addr, mac string, p api.NetPolicy) error
	UnbindGuest(name string) error
	SetGuestPolicy(name string, p api.NetPolicy) error
	GuestStatus(name string) (api.NetStatus, error)
}

// policyOf returns v's stored egress policy, or the configured default.
func (m *Manager) policyOf(ctx context.Context, v *api.VM) (api.NetPolicy, error) {
	p, ok, err := m.st.NetPolicy(ctx, v.ID)
	if err != nil || ok {
		return p, err
	}
	mode := m.cfg.NetworkPolicy
	if mode == "" {
		mode = api.NetInternet
	}
	return api.NetPolicy{Mode: mode}, nil
}

// bindNet polices v's tap: only v's MAC and IP as source, v's egress policy.
func (m *Manager) bindNet(ctx context.Context, v *api.VM, tap string) error {
	g, ok := m.net.(netGuard)
	if !ok {
		return nil
	}
	p, err := m.policyOf(ctx, v)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(v.Runtime.GuestIP)
	if err != nil {
		return fmt.Errorf("vm %s has a bad guest ip %q: %w", v.Name, v.Runtime.GuestIP, err)
	}
	if err := g.BindVM(v.Name, tap, ip, v.Runtime.MAC, p); err != nil {
		return fmt.Errorf("applying the network policy of %s: %w", v.Name, err)
	}
	return nil
}

// unbindNet removes what bindNet set up; failures are logged.
func (m *Manager) unbindNet(v *api.VM) {
	if g, ok := m.net.(netGuard); ok {
		if err := g.UnbindGuest(v.Name); err != nil {
			m.log.Warn("removing the network policy", "vm", v.Name, "err", err)
		}
	}
}

// NetPolicy returns a VM's egress policy and, while it runs, its denied
// packet count.
func (m *Manager) NetPolicy(ctx context.Context, name string) (api.NetStatus, error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return api.NetStatus{}, err
	}
	return m.netStatus(ctx, &v)
}

func (m *Manager) netStatus(ctx context.Context, v *api.VM) (api.NetStatus, error) {
	if g, ok := m.net.(netGuard); ok {
		if st, err := g.GuestStatus(v.Name); err == nil {
			return st, nil
		} else if !api.IsNotFound(err) {
			return api.NetStatus{}, err
		}
	}
	p, err := m.policyOf(ctx, v)
	if err != nil {
		return api.NetStatus{}, err
	}
	p, _ = netw.NormalizePolicy(p)
	return api.NetStatus{Policy: p}, nil
}

// SetNetPolicy validates and stores a VM's egress policy and, when the VM
// runs, applies it at once (one nftables batch). A bad policy is an
// Invalid error that changes nothing; a failure to store it undoes the
// live change.
func (m *Manager) SetNetPolicy(ctx context.Context, name string, p api.NetPolicy) (api.NetStatus, error) {
	norm, err := netw.NormalizePolicy(p)
	if err != nil {
		return api.NetStatus{}, err
	}
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return api.NetStatus{}, err
	}
	defer unlock()
	old, err := m.netStatus(ctx, &v)
	if err != nil {
		return api.NetStatus{}, err
	}
	g, guarded := m.net.(netGuard)
	live := guarded && old.Applied
	if live {
		if err := g.SetGuestPolicy(v.Name, norm); err != nil {
			return old, err
		}
	}
	if err := m.st.SetNetPolicy(ctx, v.ID, norm); err != nil {
		if live {
			if rerr := g.SetGuestPolicy(v.Name, old.Policy); rerr != nil {
				m.log.Error("restoring the network policy", "vm", v.Name, "err", rerr)
			}
		}
		return old, err
	}
	m.log.Info("network policy set", "vm", v.Name, "mode", norm.Mode, "entries", len(norm.Allow), "live", live)
	return m.netStatus(ctx, &v)
}

// createPolicy validates a create request's policy (nil: the default).
func createPolicy(req api.VMCreateRequest) (*api.NetPolicy, error) {
	if req.NetPolicy == nil {
		return nil, nil
	}
	p, err := netw.NormalizePolicy(*req.NetPolicy)
	if err != nil {
		return nil, err
	}
	return &p, nil
}
