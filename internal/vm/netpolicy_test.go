package vm

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/progress"
)

// guardNet is fakeNet with the netGuard methods: it records bound guests.
type guardNet struct {
	*fakeNet
	mu      sync.Mutex
	bound   map[string]api.NetPolicy
	bindErr error
}

func (g *guardNet) BindVM(name, tap string, ip netip.Addr, mac string, p api.NetPolicy) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bindErr != nil {
		return g.bindErr
	}
	g.bound[name] = p
	return nil
}

func (g *guardNet) UnbindGuest(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.bound, name)
	return nil
}

func (g *guardNet) SetGuestPolicy(name string, p api.NetPolicy) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.bound[name]; !ok {
		return api.NotFound("not bound")
	}
	g.bound[name] = p
	return nil
}

func (g *guardNet) GuestStatus(name string) (api.NetStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.bound[name]
	if !ok {
		return api.NetStatus{}, api.NotFound("not bound")
	}
	return api.NetStatus{Policy: p, Applied: true}, nil
}

func withGuard(f *fixture) *guardNet {
	g := &guardNet{fakeNet: f.net, bound: map[string]api.NetPolicy{}}
	f.m.net = g
	return g
}

func TestNetPolicyOfStoppedVM(t *testing.T) {
	f := newFixture(t)
	withGuard(f)
	ctx := context.Background()
	f.stoppedVM(t, "a")
	st, err := f.m.NetPolicy(ctx, "a")
	if err != nil || st.Policy.Mode != api.NetInternet || st.Applied {
		t.Fatalf("default policy: %+v (err %v), want internet, not applied", st, err)
	}
	if _, err := f.m.SetNetPolicy(ctx, "a", api.NetPolicy{Allow: []string{"10.0.0.300/8"}}); !api.IsInvalid(err) {
		t.Errorf("bad policy: err %v, want Invalid", err)
	}
	st, err = f.m.SetNetPolicy(ctx, "a", api.NetPolicy{Allow: []string{"Example.com", "10.1.2.3:3128"}})
	if err != nil || st.Policy.Mode != api.NetAllow || len(st.Policy.Allow) != 2 || st.Policy.Allow[1] != "example.com" {
		t.Fatalf("set: %+v (err %v)", st, err)
	}
	d, err := f.m.Detail(ctx, "a")
	if err != nil || d.Net == nil || d.Net.Policy.Mode != api.NetAllow {
		t.Errorf("vm show: net %+v (err %v), want mode allow", d.Net, err)
	}
	if _, err := f.m.SetNetPolicy(ctx, "nope", api.NetPolicy{Mode: api.NetNone}); !api.IsNotFound(err) {
		t.Errorf("unknown vm: err %v, want NotFound", err)
	}
	if err := f.m.Delete(ctx, "a", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

func TestNetPolicyLiveAndReverted(t *testing.T) {
	f := newFixture(t)
	g := withGuard(f)
	ctx := context.Background()
	f.eng.StartErr = errors.New("qemu exited")
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "a"}, progress.Nop{}); err == nil {
		t.Fatal("create succeeded with a failing engine")
	}
	if len(g.bound) != 0 {
		t.Errorf("a failed create left a bound guest: %v", g.bound)
	}
	f.assertEmpty(t)

	// a bind failure fails the start at the network stage and leaves nothing
	f.eng.StartErr = nil
	g.bindErr = api.Invalid("boom")
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "b"}, progress.Nop{}); err == nil {
		t.Fatal("create succeeded although binding its network failed")
	}
	f.assertEmpty(t)

	// live: a bound VM's policy changes at once
	g.bindErr = nil
	f.stoppedVM(t, "c")
	g.bound["c"] = api.NetPolicy{Mode: api.NetInternet} // as if running
	st, err := f.m.SetNetPolicy(ctx, "c", api.NetPolicy{Mode: api.NetNone})
	if err != nil || !st.Applied || g.bound["c"].Mode != api.NetNone {
		t.Errorf("live change: %+v (err %v), bound %v", st, err, g.bound["c"])
	}
}

func TestCreateWithNetPolicy(t *testing.T) {
	f := newFixture(t)
	withGuard(f)
	ctx := context.Background()
	bad := &api.NetPolicy{Allow: []string{"exa mple.com"}}
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "a", NoStart: true, NetPolicy: bad}, progress.Nop{}); !api.IsInvalid(err) {
		t.Fatalf("create with a bad policy: err %v, want Invalid", err)
	}
	f.assertEmpty(t)
	none := &api.NetPolicy{Mode: "None"}
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "a", NoStart: true, NetPolicy: none}, progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	if st, err := f.m.NetPolicy(ctx, "a"); err != nil || st.Policy.Mode != api.NetNone {
		t.Errorf("policy after create: %+v (err %v), want none", st, err)
	}
}
