package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/disk"
	diskcopy "banger/internal/disk/copy"
	"banger/internal/disk/dmsnap"
	"banger/internal/disk/pool"
	"banger/internal/disk/qcow2"
	"banger/internal/disk/reflink"
	"banger/internal/hostcap"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/netw"
	"banger/internal/store"
	"banger/internal/vm"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

// services builds the daemon's VM and image services once the store is
// open: it probes the host, picks the engine, accel and disk driver (with
// the loop-backed XFS pool when the state dir cannot reflink), sets up the
// network, and reconciles VMs that outlived the previous daemon.
func services(cfg config.Config, st *store.Store, log *slog.Logger) (daemon.VMService, daemon.ImageService, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	caps := hostcap.Probe(ctx, cfg)
	// The Firecracker engine is built before the choice so that its own
	// report (Info) counts; it is registered only when usable.
	var fc *firecracker.Engine
	if caps.Firecracker.OK {
		fc = firecracker.New(firecracker.Config{
			Binary: caps.Firecracker.Path, Version: caps.Firecracker.Version,
			JailerBinary: cfg.JailerBin, JailerUID: cfg.JailerUID, JailerGID: cfg.JailerGID,
			ChrootBase: filepath.Join(cfg.StateDir, "jailer"),
		})
		caps = caps.WithEngine(fc.Info())
	}
	engine, accel, reason, err := hostcap.ChooseEngine(cfg, caps)
	if err != nil {
		return nil, nil, nil, err
	}
	log.Info("engine chosen", "engine", engine, "accel", accel, "reason", reason)
	driver, usePool, dreason, err := hostcap.ChooseDiskDriver(cfg, caps, engine)
	if err != nil {
		return nil, nil, nil, err
	}
	log.Info("disk driver chosen", "driver", driver, "pool", usePool, "reason", dreason)

	dataDir := cfg.StateDir
	if usePool {
		p := &pool.Pool{Image: filepath.Join(cfg.StateDir, "pool.img"), MountPoint: filepath.Join(cfg.StateDir, "pool"), Size: int64(cfg.StoragePoolSize)}
		if err := p.Ensure(ctx); err != nil {
			return nil, nil, nil, fmt.Errorf("storage pool: %w", err)
		}
		dataDir = p.MountPoint
	}
	imagesDir := filepath.Join(dataDir, "images")
	if err := image.CleanStaging(filepath.Join(dataDir, "staging")); err != nil {
		log.Warn("cleaning interrupted image builds", "err", err)
	}
	for _, d := range []string{imagesDir, filepath.Join(dataDir, "staging")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, nil, err
		}
	}

	engines := map[string]vmm.Engine{
		vmm.QEMU: qemu.New(qemu.Config{Binary: cfg.QEMUBin, Accel: accel, TSCkHz: int(caps.HostTSCkHz), VhostVsock: caps.VhostVsock.OK}),
	}
	unavailable := map[string]string{}
	if ok, why, _ := caps.FirecrackerUsable(); ok {
		engines[vmm.Firecracker] = fc
	} else {
		unavailable[vmm.Firecracker] = why
		log.Info("firecracker engine not loaded", "reason", why)
	}

	net, err := netw.New(netw.Config{Bridge: cfg.BridgeName, Subnet: cfg.Subnet, TapPoolSize: cfg.TapPoolSize}, log.With("component", "netw"))
	if err != nil {
		return nil, nil, nil, err
	}
	if err := net.Setup(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("network setup: %w", err)
	}

	mgr, err := vm.New(vm.Options{
		Config: cfg, Store: st, Engines: engines, DefaultEngine: engine, EngineReason: reason, Unavailable: unavailable,
		Disk: diskDriver(driver, cfg), WorkDisks: workDisks{}, Net: net,
		VMsDir: filepath.Join(dataDir, "vms"), Log: log.With("component", "vm"),
		Hook: crashHook(log),
	})
	if err != nil {
		net.Close(ctx)
		return nil, nil, nil, err
	}
	if err := mgr.Reconcile(ctx, netw.ListBangerTaps); err != nil {
		log.Error("reconcile", "err", err)
	}
	mgr.StartStats(context.Background())

	pub, err := config.EnsureSSHKey(cfg.KeyPath())
	if err != nil {
		mgr.Close()
		net.Close(ctx)
		return nil, nil, nil, fmt.Errorf("ssh key: %w", err)
	}
	images := &image.Service{
		Store: st, ImagesDir: imagesDir, StagingDir: filepath.Join(dataDir, "staging"), Log: log.With("component", "image"),
		Debian: &debian.Builder{
			ImagesDir: imagesDir, StagingDir: filepath.Join(dataDir, "staging"),
			AgentBin: agentBin(cfg), SSHPubKey: pub, Log: log.With("component", "image"),
		},
		Guests: mgr, // builder VMs and VM disk exports for image build/promote
	}
	// The data patch: images from older bangers get what they lack, once.
	if err := images.HealAll(ctx); err != nil {
		log.Error("bringing old images up to date", "err", err)
	}
	cleanup := func() {
		mgr.Close()
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		net.Close(c)
	}
	return mgr, images, cleanup, nil
}

func diskDriver(name string, cfg config.Config) disk.Driver {
	switch name {
	case disk.DMSnap:
		return dmsnap.New()
	case disk.Reflink:
		return reflink.New()
	case disk.Qcow2:
		return qcow2.New("")
	default:
		return diskcopy.New()
	}
}

// workDisks clones work-seeds (reflink when possible, else a sparse copy)
// and grows them.
type workDisks struct{}

func (workDisks) CloneAndGrow(ctx context.Context, seed, dst string, size int64) error {
	return disk.CloneAndGrow(ctx, seed, dst, size, disk.Clone)
}

func (workDisks) Grow(ctx context.Context, path string, size int64) error {
	return disk.Grow(ctx, path, size)
}

// agentBin is the banger-agent baked into new images: the config's, else
// the one next to bangerd (the build that matches this daemon).
func agentBin(cfg config.Config) string {
	if cfg.AgentBin != "" {
		return cfg.AgentBin
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Join(filepath.Dir(exe), "banger-agent")
	}
	return "banger-agent"
}

// The wiring between the VM and image services, checked at compile time.
var (
	_ image.Guests        = (*vm.Manager)(nil)
	_ daemon.ImageService = (*image.Service)(nil)
	_ daemon.VMService    = (*vm.Manager)(nil)
)
