package vm

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/forward"
)

// forwardTable holds the daemon-held port forwards (vm port-forward
// --detach): each a host listener whose connections reach a guest port
// through the VM's agent. They live in the daemon's memory only: a daemon
// restart ends them, and deleting the VM closes its forwards.
type forwardTable struct {
	mu   sync.Mutex
	byVM map[string][]*heldForward // by VM name; guarded by mu
}

type heldForward struct {
	api.Forward
	cancel context.CancelFunc
	done   chan struct{}
}

// AddForward starts a daemon-held forward from a host port to a port of a
// running VM. The host address is loopback unless req names another.
func (m *Manager) AddForward(ctx context.Context, name string, req api.ForwardRequest) (api.Forward, error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return api.Forward{}, err
	}
	if _, alive := m.vmAlive(v); !alive || v.Runtime.State != api.VMRunning {
		return api.Forward{}, api.FailedPrecondition("vm %q is %s, not running", v.Name, v.Runtime.State).
			WithAction("vm start", v.Name)
	}
	if req.HostAddr == "" {
		req.HostAddr = "127.0.0.1"
	}
	if req.GuestPort < 1 || req.GuestPort > 65535 || req.HostPort < 0 || req.HostPort > 65535 {
		return api.Forward{}, api.Invalid("ports must be 1..65535 (host port 0 picks a free one), got host %d guest %d", req.HostPort, req.GuestPort)
	}
	dial := func(ctx context.Context) (net.Conn, error) { return m.Exec(ctx, v.Name) }
	return m.fwds.add(v.Name, req, dial, m.cfg.MaxForwards, m.log)
}

// add starts a forward for vm unless max are held already.
func (t *forwardTable) add(vm string, req api.ForwardRequest, dial forward.Dialer, max int, log *slog.Logger) (api.Forward, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.countLocked(); n >= max {
		return api.Forward{}, api.FailedPrecondition("the daemon already holds %d port forwards (max_forwards = %d)", n, max).
			WithFix("remove one with banger vm port-forward --remove VM HOST_PORT, or raise max_forwards in the config")
	}
	l, err := forward.Listen(req)
	if err != nil {
		return api.Forward{}, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	f := &heldForward{Forward: api.Forward{
		VM: vm, HostAddr: req.HostAddr, HostPort: port, GuestPort: req.GuestPort,
		URL: "http://" + net.JoinHostPort(req.HostAddr, strconv.Itoa(port)), Created: time.Now().UTC(),
	}, done: make(chan struct{})}
	fctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	log = log.With("vm", vm, "host_port", port, "guest_port", req.GuestPort)
	go func() {
		defer close(f.done)
		err := forward.Serve(fctx, l, dial, req.GuestPort, func(err error) { log.Info("forwarded connection failed", "err", err) })
		if err != nil {
			log.Warn("port forward ended", "err", err)
		}
	}()
	if t.byVM == nil {
		t.byVM = map[string][]*heldForward{}
	}
	t.byVM[vm] = append(t.byVM[vm], f)
	log.Info("port forward added", "addr", f.URL)
	return f.Forward, nil
}

// RemoveForward ends the VM's forward on hostPort.
func (m *Manager) RemoveForward(ctx context.Context, name string, hostPort int) error {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return err
	}
	m.fwds.mu.Lock()
	list := m.fwds.byVM[v.Name]
	var found *heldForward
	for i, f := range list {
		if f.HostPort == hostPort {
			found = f
			m.fwds.byVM[v.Name] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	m.fwds.mu.Unlock()
	if found == nil {
		return api.NotFound("vm %q has no port forward on host port %d", v.Name, hostPort).
			WithFix("see its forwards with banger vm show " + v.Name)
	}
	found.stop()
	return nil
}

func (f *heldForward) stop() {
	f.cancel()
	<-f.done
}

func (t *forwardTable) countLocked() int {
	n := 0
	for _, l := range t.byVM {
		n += len(l)
	}
	return n
}

// list returns a VM's forwards.
func (t *forwardTable) list(vm string) []api.Forward {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []api.Forward
	for _, f := range t.byVM[vm] {
		out = append(out, f.Forward)
	}
	return out
}

// closeVM ends all forwards of a VM (it is being deleted).
func (t *forwardTable) closeVM(vm string) {
	t.mu.Lock()
	list := t.byVM[vm]
	delete(t.byVM, vm)
	t.mu.Unlock()
	for _, f := range list {
		f.stop()
	}
}
