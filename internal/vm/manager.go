// Package vm orchestrates a VM's life: create (allocate → system disk → work
// disk → network → engine → boot → agent ready), start, stop, restart,
// delete, edit, exec, logs, stats, disk export and grow for the image
// builder, and the reconcile that runs when the daemon starts.
//
// Terms:
//   - The durable record (api.VM with api.VMRuntime) lives in the store; what
//     is only true while the engine runs (pid, tap, sockets, and the system
//     disk's record with whatever kernel state its driver holds) is the VM's
//     handles: cached in memory and written to handles.json in the VM dir,
//     never to SQLite.
//   - vmAlive is the one liveness check: the handles exist and the engine
//     says the process is alive. checkStoppedLocked is the one "is it
//     stopped" check of the operations that need a stopped VM.
//   - "The VM's lock" is lockVM's per-name lock; every function whose name
//     ends in Locked must be called with it held.
//   - Every multi-step operation records intent in the store first and keeps a
//     reverter, so a failure leaves no tap, disk, process or file behind.
//
// What it must not know: how a disk driver works (formats, loop devices, dm
// targets, qemu-img, copying) — it calls disk.Driver and keeps disk.Disk
// records whose State it never reads — nor how an engine runs a guest
// (vmm.Engine, vmm.Handles.Extra).
//
// What it trusts: not what a guest writes. Its console and engine logs are
// kept under serial_log_max and engine_log_max by capLogs (see
// internal/logcap for how and within what slack), diagnostics and error
// messages read only their ends, `vm logs` streams them in bounded chunks,
// and the agent channel is internal/agent's (which refuses guest-opened
// streams). handles.json is the daemon's own file, parsed strictly.
package vm

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Network is what the orchestrator needs from the host network
// (implemented by netw.Manager).
type Network interface {
	AcquireTap(ctx context.Context) (name string, poolHit bool, err error)
	ReleaseTap(ctx context.Context, name string) error
	MarkInUse(name string)
	DeleteTap(ctx context.Context, name string) error
	Gateway() netip.Addr
	Netmask() string
	SetHost(name string, ip netip.Addr)
	RemoveHost(name string)
	TapStats(name string) (rx, tx int64, err error)
}

// WorkDisks clones a work-seed into a work disk of a given size and grows
// existing work disks (implemented with internal/disk helpers).
type WorkDisks interface {
	CloneAndGrow(ctx context.Context, seed, dst string, size int64) error
	Grow(ctx context.Context, path string, size int64) error
}

// Options wires a Manager.
type Options struct {
	Config  config.Config
	Store   *store.Store
	Engines map[string]vmm.Engine // by name; must contain DefaultEngine
	// DefaultEngine is the engine used when a create does not name one.
	DefaultEngine string
	// EngineReason says why DefaultEngine was chosen (shown by status/doctor).
	EngineReason string
	// Unavailable says, by engine name, why an engine is not in Engines;
	// VMs still running on it are kept and shown with this reason.
	Unavailable map[string]string
	Disk        disk.Driver
	WorkDisks   WorkDisks
	Net         Network
	// VMsDir holds one dir per VM (on the same filesystem as the images when
	// the disk driver reflinks).
	VMsDir string
	// SnapshotsDir holds one dir per snapshot (default: "snapshots" beside
	// VMsDir, so disks reflink between them).
	SnapshotsDir string
	// MemoryDir, when set, holds running guests' RAM files (MemoryDir()):
	// what lets a snapshot save device state only. Empty: RAM is anonymous
	// and a snapshot carries it in its state file.
	MemoryDir string
	// MaxConcurrentBoots bounds guests booting at once (0 = number of CPUs).
	MaxConcurrentBoots int
	Log                *slog.Logger
	// Hook, when set, is called after each create/delete stage with the
	// stage name (tests use it to crash the daemon at a precise point).
	Hook func(op, stage string)
	// Now is the clock of lifetimes (TTL, idle-stop); time.Now when nil.
	Now func() time.Time
}

// Manager implements the daemon's VMService.
type Manager struct {
	cfg       config.Config
	st        *store.Store
	engines   map[string]vmm.Engine
	defEngine string
	engReason string
	// unavailable: why engines are not loaded, by name (read-only).
	unavailable map[string]string
	disk        disk.Driver
	work        WorkDisks
	net         Network
	vmsDir      string
	snapsDir    string
	memDir      string
	log         *slog.Logger
	hook        func(op, stage string)
	bootSem     chan struct{}

	mu      sync.Mutex
	handles map[string]*Handles      // by VM ID; guarded by mu
	agents  map[string]*agent.Client // by VM ID; guarded by mu
	vmLocks map[string]*vmLock       // by VM name, while held or awaited; guarded by mu
	stats   map[string]*statSample   // by VM ID; guarded by mu
	ready   map[string]*readiness    // background boots by VM ID; guarded by mu
	fwds    forwardTable             // daemon-held port forwards (own lock)
	act     map[string]*activity     // lifetimes' activity by VM ID; guarded by mu

	now     func() time.Time // lifetimes' clock
	started time.Time        // when this manager was made (idle time counts from it)

	stopStats context.CancelFunc
	wg        sync.WaitGroup
}

// New returns a Manager. Call Reconcile before serving requests, then
// StartStats.
func New(o Options) (*Manager, error) {
	if o.Store == nil || o.Disk == nil || o.Net == nil || o.WorkDisks == nil {
		return nil, fmt.Errorf("vm manager: store, disk, work disks and network are required")
	}
	if _, ok := o.Engines[o.DefaultEngine]; !ok {
		return nil, fmt.Errorf("vm manager: default engine %q not configured", o.DefaultEngine)
	}
	n := o.MaxConcurrentBoots
	if n <= 0 {
		n = runtime.NumCPU()
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(o.VMsDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating vms dir: %w", err)
	}
	if o.SnapshotsDir == "" {
		o.SnapshotsDir = filepath.Join(filepath.Dir(o.VMsDir), "snapshots")
	}
	if err := os.MkdirAll(o.SnapshotsDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating snapshots dir: %w", err)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Manager{
		cfg: o.Config, st: o.Store, engines: o.Engines, defEngine: o.DefaultEngine,
		engReason: o.EngineReason, unavailable: o.Unavailable, disk: o.Disk, work: o.WorkDisks, net: o.Net,
		vmsDir: o.VMsDir, snapsDir: o.SnapshotsDir, memDir: o.MemoryDir, log: log, hook: o.Hook,
		bootSem: make(chan struct{}, n),
		handles: map[string]*Handles{}, agents: map[string]*agent.Client{},
		vmLocks: map[string]*vmLock{}, stats: map[string]*statSample{},
		ready: map[string]*readiness{}, act: map[string]*activity{},
		now: now, started: now(),
	}, nil
}

// Close stops background loops and drops agent connections. Running VMs keep
// running.
func (m *Manager) Close() {
	m.cancelAllReadiness()
	if m.stopStats != nil {
		m.stopStats()
	}
	m.wg.Wait()
	m.mu.Lock()
	for id, c := range m.agents {
		c.Close()
		delete(m.agents, id)
	}
	m.mu.Unlock()
}

// lockedVM looks a VM up, takes its lock and reads it again under the lock
// (another operation may have changed it meanwhile). The caller must call
// unlock.
func (m *Manager) lockedVM(ctx context.Context, name string) (api.VM, func(), error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return api.VM{}, nil, err
	}
	unlock := m.lockVM(v.Name)
	if v, err = m.getVM(ctx, name); err != nil {
		unlock()
		return api.VM{}, nil, err
	}
	return v, unlock, nil
}

// vmLock is one VM name's lock. An entry lives in Manager.vmLocks only
// while someone holds or waits for it, so the map does not grow with every
// name ever used.
type vmLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; guarded by Manager.mu
}

// lockVM serialises operations on one VM name ("the VM's lock"; functions
// that need it held end in Locked). It returns the unlock func, to call
// once.
func (m *Manager) lockVM(name string) func() {
	m.mu.Lock()
	l, ok := m.vmLocks[name]
	if !ok {
		l = &vmLock{}
		m.vmLocks[name] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(m.vmLocks, name)
		}
		m.mu.Unlock()
	}
}

func (m *Manager) stageHook(op, stage string) {
	if m.hook != nil {
		m.hook(op, stage)
	}
}

func (m *Manager) engine(name string) (vmm.Engine, error) {
	e, ok := m.engines[name]
	if !ok {
		return nil, api.FailedPrecondition("engine %q is not available on this host", name).
			WithFix("use --engine " + m.defEngine + ", or see what the host lacks").WithAction("doctor")
	}
	return e, nil
}

// EngineInfo reports the default engine and why it was chosen.
func (m *Manager) EngineInfo() (vmm.Info, string) {
	return m.engines[m.defEngine].Info(), m.engReason
}

// DiskInfo reports the system disk driver in use.
func (m *Manager) DiskInfo() disk.Info { return m.disk.Info() }

func (m *Manager) vmDir(name string) string { return filepath.Join(m.vmsDir, name) }

func (m *Manager) getVM(ctx context.Context, name string) (api.VM, error) {
	return m.st.GetVM(ctx, name)
}

func (m *Manager) setState(ctx context.Context, v *api.VM, s api.VMState, lastErr string) error {
	v.Runtime.State = s
	v.Runtime.LastError = lastErr
	switch s {
	case api.VMRunning:
		v.Runtime.StartedAt = time.Now().UTC()
	case api.VMStopped, api.VMFailed:
		v.Runtime.StoppedAt = time.Now().UTC()
	}
	return m.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)
}

// bg returns a context for cleanup work that must finish even when the
// operation's context was cancelled (Ctrl-C).
func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// Info reports the default engine, its accel and the disk driver for the
// daemon's status.
func (m *Manager) Info() api.HostInfo {
	info := m.engines[m.defEngine].Info()
	return api.HostInfo{Engine: info.Name, Accel: info.Accel, DiskDriver: m.disk.Info().Name}
}

// List returns every VM's record.
func (m *Manager) List(ctx context.Context) ([]api.VM, error) { return m.st.ListVMs(ctx) }
