// Package wiring builds bangerd's services once the daemon has opened the
// store: it probes the host, picks the engine, accel and disk driver, mounts
// the loop-backed XFS pool when the state dir cannot reflink, cleans
// interrupted image builds, sets up the network, makes the VM manager and
// reconciles the VMs that outlived the previous daemon, starts the stats
// loop, ensures the managed SSH key, makes the image service and runs the
// start-up data patch (images from older bangers get what they lack).
//
// It owns the order of those steps and their undo: each step registers its
// undo on one reverter, so a failing step undoes every earlier one (the pool
// is unmounted if this start mounted it, the network closed, or torn down if
// this start created it). It is the only place that picks drivers. It must
// not know the API, the routes or HTTP beyond daemon.ServicesFunc and
// daemon.WebFunc, which it fills in for cmd/bangerd.
//
// What it trusts: the config (written by the host's administrator); it
// handles no guest data, but hands the caps on guest output (build_log_max
// here; serial_log_max and engine_log_max through the vm manager's config)
// to the packages that do.
package wiring

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/disk/pool"
	"banger/internal/hostcap"
	"banger/internal/image"
	"banger/internal/image/build"
	"banger/internal/image/debian"
	"banger/internal/netw"
	"banger/internal/revert"
	"banger/internal/sandbox"
	"banger/internal/store"
	"banger/internal/vm"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

// Options are what cmd/bangerd hands the wiring besides the config.
type Options struct {
	// Hook, when set, is vm.Options.Hook (the crash tests' hook).
	Hook func(op, stage string)
	// Timeout bounds the start-up steps (default 2 minutes).
	Timeout time.Duration
}

// Services is what Start built. Close releases it at daemon shutdown:
// background loops and the DNS server stop; the pool stays mounted and the
// bridge, taps and nftables table stay, so running VMs keep their disks and
// network.
type Services struct {
	VMs    *vm.Manager
	Images *image.Service
	close  *revert.Reverter
}

// Close stops what Start started (see Services). Safe to call once.
func (s *Services) Close() { s.close.Fail() }

// Func is Start as a daemon.ServicesFunc.
func Func(cfg config.Config, o Options) daemon.ServicesFunc {
	return func(st *store.Store, log *slog.Logger) (daemon.Services, error) {
		s, err := Start(cfg, st, log, o)
		if err != nil {
			return daemon.Services{}, err
		}
		// The VM manager also does snapshots, forks and warm images.
		return daemon.Services{VMs: s.VMs, Images: s.Images, Snapshots: s.VMs, Cleanup: s.Close}, nil
	}
}

// Start runs the start-up steps in order. On error everything the earlier
// steps did is undone and nothing is returned.
func Start(cfg config.Config, st *store.Store, log *slog.Logger, o Options) (*Services, error) {
	return start(cfg, st, log, o, hostSeams())
}

// seams are the host-facing parts of the steps; tests replace them to run
// the steps without a host and to inject failures.
type seams struct {
	choose     func(ctx context.Context, cfg config.Config, log *slog.Logger) (choice, error)
	pool       func(ctx context.Context, p *pool.Pool) (undo func(), err error)
	newNetwork func(cfg config.Config, log *slog.Logger) (net hostNetwork, existed bool, err error)
	listTaps   func() ([]string, error)
	sshKey     func(path string) (pub string, err error)
	// fail, when set, is asked after each step whether to fail there.
	fail func(step string) error
}

// hostNetwork is what the wiring needs from netw.Manager.
type hostNetwork interface {
	vm.Network
	Setup(ctx context.Context) error
	Close(ctx context.Context) error
	Teardown(ctx context.Context) error
}

// choice is what the host probe decided.
type choice struct {
	engine, accel, reason string
	engines               map[string]vmm.Engine
	unavailable           map[string]string // engine → why it is not loaded
	driver                string            // disk driver name
	usePool               bool
}

// wiring is one Start in progress.
type wiring struct {
	cfg   config.Config
	st    *store.Store
	log   *slog.Logger
	o     Options
	seams seams

	choice   choice
	dataDir  string
	net      hostNetwork
	mgr      *vm.Manager
	pub      string
	images   *image.Service
	shutdown *revert.Reverter // what Services.Close runs
}

// step is one start-up step: it registers its undo on r.
type step struct {
	name string
	run  func(ctx context.Context, r *revert.Reverter) error
}

func start(cfg config.Config, st *store.Store, log *slog.Logger, o Options, s seams) (*Services, error) {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	w := &wiring{cfg: cfg, st: st, log: log, o: o, seams: s, dataDir: cfg.StateDir, shutdown: revert.New()}
	// Every parse of guest data and every third-party install runs in it.
	sandbox.SetDefault(sandbox.Config{UID: uint32(cfg.SandboxUID), ScratchRoot: cfg.SandboxScratch()})
	r := revert.New()
	defer r.Fail()
	for _, s := range []step{
		{"choose", w.chooseStep},
		{"pool", w.poolStep},
		{"dirs", w.dirsStep},
		{"network", w.networkStep},
		{"vms", w.vmsStep},
		{"reconcile", w.reconcileStep},
		{"ssh key", w.sshKeyStep},
		{"images", w.imagesStep},
	} {
		err := s.run(ctx, r)
		if err == nil && w.seams.fail != nil {
			err = w.seams.fail(s.name)
		}
		if err != nil {
			return nil, fmt.Errorf("starting services: %s: %w", s.name, err)
		}
	}
	r.Success()
	return &Services{VMs: w.mgr, Images: w.images, close: w.shutdown}, nil
}

func (w *wiring) chooseStep(ctx context.Context, _ *revert.Reverter) error {
	c, err := w.seams.choose(ctx, w.cfg, w.log)
	w.choice = c
	return err
}

// poolStep mounts the pool when the disk driver needs it. Only a mount made
// here is undone: a pool already mounted holds the disks of running VMs.
func (w *wiring) poolStep(ctx context.Context, r *revert.Reverter) error {
	if !w.choice.usePool {
		return nil
	}
	p := &pool.Pool{Image: filepath.Join(w.cfg.StateDir, "pool.img"), MountPoint: filepath.Join(w.cfg.StateDir, "pool"),
		Size: int64(w.cfg.StoragePoolSize)}
	undo, err := w.seams.pool(ctx, p)
	if err != nil {
		return fmt.Errorf("storage pool: %w", err)
	}
	if undo != nil {
		r.Add(undo)
	}
	w.dataDir = p.MountPoint
	return nil
}

// dirsStep removes what interrupted image builds left and makes the images
// and staging dirs.
func (w *wiring) dirsStep(ctx context.Context, _ *revert.Reverter) error {
	staging := filepath.Join(w.dataDir, "staging")
	if err := image.CleanStaging(staging); err != nil {
		w.log.Warn("cleaning interrupted image builds", "err", err)
	}
	if err := sandbox.Clean(w.cfg.SandboxScratch()); err != nil {
		w.log.Warn("cleaning sandbox scratch dirs", "err", err)
	}
	// This daemon's scratch root goes at shutdown once empty.
	w.shutdown.Add(func() { os.Remove(w.cfg.SandboxScratch()) })
	// So does the guest memory dir (running guests keep their files).
	w.shutdown.Add(func() { os.Remove(vm.MemoryDir(w.cfg.StateDir)) })
	for _, d := range []string{w.imagesDir(), staging} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

func (w *wiring) imagesDir() string { return filepath.Join(w.dataDir, "images") }

// networkStep sets the network up. Its undo is registered before Setup, so
// that a failed Setup is closed too (Setup removes what it created itself).
func (w *wiring) networkStep(ctx context.Context, r *revert.Reverter) error {
	n, existed, err := w.seams.newNetwork(w.cfg, w.log.With("component", "netw"))
	if err != nil {
		return err
	}
	w.net = n
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if existed {
			_ = n.Close(c) // VMs of an earlier daemon may use it
			return
		}
		if err := n.Teardown(c); err != nil {
			w.log.Warn("tearing the network down after a failed start", "err", err)
		}
	})
	w.shutdown.Add(func() {
		c, cancel := bg()
		defer cancel()
		_ = n.Close(c)
	})
	if err := n.Setup(ctx); err != nil {
		return fmt.Errorf("network setup: %w", err)
	}
	return nil
}

func (w *wiring) vmsStep(ctx context.Context, r *revert.Reverter) error {
	c := w.choice
	mgr, err := vm.New(vm.Options{
		Config: w.cfg, Store: w.st, Engines: c.engines, DefaultEngine: c.engine, EngineReason: c.reason,
		Unavailable: c.unavailable, Disk: diskDriver(c.driver), WorkDisks: workDisks{}, Net: w.net,
		VMsDir: filepath.Join(w.dataDir, "vms"), MemoryDir: vm.MemoryDir(w.cfg.StateDir), Log: w.log.With("component", "vm"), Hook: w.o.Hook,
	})
	if err != nil {
		return err
	}
	w.mgr = mgr
	r.Add(mgr.Close)
	w.shutdown.Add(mgr.Close)
	return nil
}

// reconcileStep checks the VMs that outlived the previous daemon, then
// starts the stats loop (stopped by the manager's Close). A failed
// reconcile is logged: the daemon serves what it could check.
func (w *wiring) reconcileStep(ctx context.Context, _ *revert.Reverter) error {
	if err := w.mgr.Reconcile(ctx, w.seams.listTaps); err != nil {
		w.log.Error("reconcile", "err", err)
	}
	w.mgr.StartStats(context.Background())
	return nil
}

func (w *wiring) sshKeyStep(ctx context.Context, _ *revert.Reverter) error {
	pub, err := w.seams.sshKey(w.cfg.KeyPath())
	if err != nil {
		return fmt.Errorf("ssh key: %w", err)
	}
	w.pub = pub
	return nil
}

// imagesStep makes the image service and runs the start-up data patch. A
// patch that fails for some image is logged, not fatal: that image's VMs
// are refused at create with the reason, and the next start tries again.
func (w *wiring) imagesStep(ctx context.Context, _ *revert.Reverter) error {
	log := w.log.With("component", "image")
	staging := filepath.Join(w.dataDir, "staging")
	w.images = &image.Service{
		Store: w.st, ImagesDir: w.imagesDir(), StagingDir: staging, Log: log,
		BuildLogMax: int64(w.cfg.BuildLogMax),
		Debian: &debian.Maker{
			ImagesDir: w.imagesDir(), StagingDir: staging,
			AgentBin: agentBin(w.cfg), SSHPubKey: w.pub, Log: log,
			BuildLogMax: int64(w.cfg.BuildLogMax), Mirror: w.cfg.DebianMirror,
		},
	}
	// Images from images: builder VMs and VM disk exports through the VM manager.
	w.images.Builds = &build.Builder{Images: w.images, Guests: w.mgr, Log: log}
	if err := w.images.HealAll(ctx); err != nil {
		w.log.Error("bringing images from older bangers up to date", "err", err)
	}
	return nil
}

// bg is a context for undo and shutdown work.
func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// hostSeams are the real host steps.
func hostSeams() seams {
	return seams{
		choose: chooseOnHost,
		pool: func(ctx context.Context, p *pool.Pool) (func(), error) {
			was, _ := p.Mounted()
			if err := p.Ensure(ctx); err != nil {
				return nil, err
			}
			if was {
				return nil, nil
			}
			return func() {
				c, cancel := bg()
				defer cancel()
				_ = p.Unmount(c)
			}, nil
		},
		newNetwork: func(cfg config.Config, log *slog.Logger) (hostNetwork, bool, error) {
			n, err := netw.New(netw.Config{Bridge: cfg.BridgeName, Subnet: cfg.Subnet, TapPoolSize: cfg.TapPoolSize, GlobalAllow: cfg.NetworkAllow}, log)
			if err != nil {
				return nil, false, err
			}
			existed, err := netw.TableExists(n.Config().Table)
			return n, existed || err != nil, nil // unsure: never tear down
		},
		listTaps: netw.ListBangerTaps,
		sshKey:   config.EnsureSSHKey,
	}
}

// chooseOnHost probes the host and picks the engine, accel and disk
// driver. The Firecracker engine is built before the choice so that its
// own report (Info) counts; it is loaded only when usable.
func chooseOnHost(ctx context.Context, cfg config.Config, log *slog.Logger) (choice, error) {
	caps := hostcap.Probe(ctx, cfg)
	var fc *firecracker.Engine
	if caps.Firecracker.OK {
		jailer := cfg.JailerBin
		if jailer == "" {
			jailer = firecracker.FindJailer(caps.Firecracker.Path)
		}
		fc = firecracker.New(firecracker.Config{
			Binary: caps.Firecracker.Path, Version: caps.Firecracker.Version,
			JailerBinary: jailer, Unjailed: cfg.FirecrackerUnjailed,
			ChrootBase: filepath.Join(cfg.StateDir, "jailer"),
		})
		caps = caps.WithEngine(fc.Info())
	}
	var c choice
	var err error
	c.engine, c.accel, c.reason, err = hostcap.ChooseEngine(cfg, caps)
	if err != nil {
		return c, err
	}
	log.Info("engine chosen", "engine", c.engine, "accel", c.accel, "reason", c.reason)
	var dreason string
	c.driver, c.usePool, dreason, err = hostcap.ChooseDiskDriver(cfg, caps, c.engine)
	if err != nil {
		return c, err
	}
	log.Info("disk driver chosen", "driver", c.driver, "pool", c.usePool, "reason", dreason)
	c.engines = map[string]vmm.Engine{
		vmm.QEMU: qemu.New(qemu.Config{Binary: cfg.QEMUBin, Accel: c.accel, TSCkHz: int(caps.HostTSCkHz), VhostVsock: caps.VhostVsock.OK,
			ForkTBSizeMiB: int(int64(cfg.TCGForkCache) >> 20)}),
	}
	c.unavailable = map[string]string{}
	if ok, why, _ := caps.FirecrackerUsable(); ok {
		c.engines[vmm.Firecracker] = fc
	} else {
		c.unavailable[vmm.Firecracker] = why
		log.Info("firecracker engine not loaded", "reason", why)
	}
	return c, nil
}
