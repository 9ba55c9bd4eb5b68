package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/names"
	"banger/internal/progress"
	"banger/internal/revert"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Create stage names, in order. The CLI prints them live; crash tests stop
// the daemon right after each.
const (
	StageAllocate   = "allocate"
	StageSystemDisk = "system disk"
	StageWorkDisk   = "work disk"
	StageNetwork    = "network"
	StageEngine     = "engine"
	StageBoot       = "boot"
	StageReady      = "agent ready"
	// StageColdBoot says why a create of a warm image boots cold.
	StageColdBoot = "cold boot"
)

// maxSocketPath is the limit of a Unix socket path (sun_path) minus the NUL.
const maxSocketPath = 107

// Create makes a VM and, unless req.NoStart, boots it and waits until its
// agent answers (with req.NoWait it returns once the engine runs and the VM
// is "starting"; readiness continues in the background). On any failure everything made so far is undone and the
// VM's record removed: a failed create leaves nothing behind.
func (m *Manager) Create(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
	if req.From != "" {
		return m.createFrom(ctx, req, rep)
	}
	if !req.Cold && !req.NoStart {
		row, ok, why := m.warmFor(ctx, req)
		if ok {
			v, err := m.restore(ctx, row, req, rep)
			if err == nil || ctx.Err() != nil {
				return v, err
			}
			why = err.Error()
		}
		if why != "" {
			done := rep.Stage(StageColdBoot)
			rep.Detail(why)
			done(nil)
			m.log.Info("booting cold", "reason", why)
		}
	}
	v, img, err := m.prepareCreate(ctx, req, rep)
	if err != nil {
		return api.VM{}, err
	}
	pol, err := createPolicy(req)
	if err != nil {
		return api.VM{}, err
	}
	unlock := m.lockVM(v.Name)
	defer unlock()
	log := m.log.With("vm", v.Name)

	r := revert.New()
	defer r.Fail()
	if err := m.allocate(ctx, &v, pol, rep, r, "create", ""); err != nil {
		return api.VM{}, err
	}

	// system disk: copy-on-write over the image's rootfs; work disk: a
	// clone of its work-seed grown to the requested size.
	h, err := m.makeDisks(ctx, &v, rep, r, "create",
		func() (disk.Disk, error) { return m.disk.Create(ctx, img.Rootfs, v.Runtime.SystemDisk) },
		func() error { return m.work.CloneAndGrow(ctx, img.WorkSeed, v.Runtime.WorkDisk, v.DiskBytes) })
	if err != nil {
		return api.VM{}, err
	}
	if req.NoStart {
		if err := m.setState(ctx, &v, api.VMStopped, ""); err != nil {
			return api.VM{}, err
		}
		r.Success()
		return v, nil
	}
	if err := m.boot(ctx, &v, img, h, rep, "create", bootWait{background: req.NoWait, wait: req.Wait}); err != nil {
		return api.VM{}, err
	}
	r.Success()
	log.Info("vm created", "ip", v.Runtime.GuestIP, "engine", v.Runtime.Engine)
	return v, nil
}

// makeDisks runs the system disk and work disk stages of create and fork:
// sys makes the system disk (its removal goes on r, and handles.json is
// written at once, so a crash from then on finds the disk's kernel state),
// work the work disk. It returns the handles holding the system disk.
func (m *Manager) makeDisks(ctx context.Context, v *api.VM, rep progress.Reporter, r *revert.Reverter, op string,
	sys func() (disk.Disk, error), work func() error) (*Handles, error) {
	log := m.log.With("vm", v.Name)
	done := rep.Stage(StageSystemDisk)
	d, err := sys()
	if err != nil {
		done(err)
		return nil, fmt.Errorf("creating system disk: %w", err)
	}
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if err := m.disk.Remove(c, d); err != nil {
			log.Error("reverting system disk", "err", err)
		}
	})
	v.Runtime.SystemDisk = d.Path
	rep.Detail(m.disk.Info().Name)
	h := &Handles{Engine: v.Runtime.Engine, SystemDisk: d}
	if err := writeHandles(v.Runtime.VMDir, h); err != nil {
		done(err)
		return nil, err
	}
	done(nil)
	m.stageHook(op, StageSystemDisk)

	done = rep.Stage(StageWorkDisk)
	if err := work(); err != nil {
		done(err)
		return nil, fmt.Errorf("creating work disk: %w", err)
	}
	done(nil)
	m.stageHook(op, StageWorkDisk)
	return h, m.st.UpdateVM(ctx, *v)
}

// createFrom is vm create --from SNAPSHOT: no cold fallback.
func (m *Manager) createFrom(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
	if req.Image != "" || req.Engine != "" || req.VCPUs != 0 || req.MemoryMiB != 0 || req.DiskBytes != 0 || req.NoStart || req.Cold {
		return api.VM{}, api.Invalid("vm create --from takes the image, engine, vcpus, memory and disk of the snapshot; --image, --engine, --vcpus, --memory, --disk, --no-start and --cold do not go with it").
			WithFix("drop those flags, or create without --from")
	}
	row, err := m.readySnapshot(ctx, req.From)
	if err != nil {
		return api.VM{}, err
	}
	return m.restore(ctx, row, req, rep)
}

// allocate records a new VM (state creating, IP/MAC/CID), its lifetime,
// policy and VM dir: the allocate stage of create and fork. Its undo goes
// on r.
// origin, when set, is the snapshot ID a fork's child comes from, recorded
// with the row (a child caught half-made by a crash is then deleted).
func (m *Manager) allocate(ctx context.Context, v *api.VM, pol *api.NetPolicy, rep progress.Reporter, r *revert.Reverter, op, origin string) error {
	log := m.log.With("vm", v.Name)
	done := rep.Stage(StageAllocate)
	err := m.st.CreateVM(ctx, v, store.Alloc{Subnet: m.cfg.Subnet, Reserved: []netip.Addr{m.net.Gateway()}})
	if err != nil {
		done(err)
		return err
	}
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if err := m.st.DeleteVM(c, v.ID); err != nil {
			log.Error("reverting vm record", "err", err)
		}
	})
	if origin != "" {
		if err := m.st.SetVMOrigin(ctx, v.ID, origin); err != nil {
			done(err)
			return err
		}
	}
	if v.Lifetime != nil {
		if err := m.st.SetVMLifetime(ctx, v.ID, *v.Lifetime); err != nil {
			done(err)
			return err
		}
	}
	if err := os.MkdirAll(v.Runtime.VMDir, 0o700); err != nil {
		done(err)
		return fmt.Errorf("creating vm dir: %w", err)
	}
	dir := v.Runtime.VMDir
	r.Add(func() { os.RemoveAll(dir) })
	if pol != nil {
		if err := m.st.SetNetPolicy(ctx, v.ID, *pol); err != nil { // goes with the row
			done(err)
			return err
		}
	}
	rep.Detail(fmt.Sprintf("%s %s", v.Runtime.GuestIP, v.Runtime.MAC))
	done(nil)
	m.stageHook(op, StageAllocate)
	return nil
}

// prepareCreate validates the request and fills in the VM record (before
// anything is allocated).
func (m *Manager) prepareCreate(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, api.Image, error) {
	name := req.Name
	if name == "" {
		name = names.GenerateUnique(func(n string) bool {
			_, err := m.st.GetVM(ctx, n)
			return err == nil
		})
	}
	if err := names.Validate(name); err != nil {
		return api.VM{}, api.Image{}, err
	}
	if _, err := m.st.GetVM(ctx, name); err == nil {
		return api.VM{}, api.Image{}, api.AlreadyExists("vm %q already exists", name).
			WithFix("pick another --name, or delete it").WithAction("vm delete", name)
	}
	imgName := req.Image
	if imgName == "" {
		imgName = m.cfg.DefaultImage
	}
	img, err := m.st.GetImage(ctx, imgName)
	if err != nil {
		if api.IsNotFound(err) {
			return api.VM{}, api.Image{}, api.NotFound("image %q not found", imgName).
				WithFix("pick an existing image, or create it").WithAction("image create", imgName, "--from-debian")
		}
		return api.VM{}, api.Image{}, err
	}
	if err := checkWait(req.Wait, img); err != nil {
		return api.VM{}, api.Image{}, err
	}
	engine := req.Engine
	if engine == "" {
		engine = m.defEngine
	}
	e, err := m.engine(engine)
	if err != nil {
		return api.VM{}, api.Image{}, err
	}
	if err := checkImageBoots(img, e.Info()); err != nil {
		return api.VM{}, api.Image{}, err
	}
	if m.disk.Info().QEMUOnly && engine != vmm.QEMU {
		return api.VM{}, api.Image{}, api.FailedPrecondition("disk driver %s works only with qemu, not %s", m.disk.Info().Name, engine).
			WithFix("set disk_driver in the config to reflink or copy, or use --engine qemu")
	}
	v := api.VM{
		Name: name, ImageID: img.ID, ImageName: img.Name,
		VCPUs: or(req.VCPUs, m.cfg.VCPUs), MemoryMiB: or(req.MemoryMiB, int(int64(m.cfg.Memory)>>20)),
		DiskBytes: or64(req.DiskBytes, int64(m.cfg.DiskSize)),
	}
	if err := m.checkResources(v, img, e.Info()); err != nil {
		return api.VM{}, api.Image{}, err
	}
	if v.Lifetime, err = lifetimeFor(req.TTLSeconds, req.TTLAction, req.IdleStopSeconds, req.Run, m.now()); err != nil {
		return api.VM{}, api.Image{}, err
	}
	dir := m.vmDir(name)
	ext := "raw"
	if m.disk.Info().Format == "qcow2" {
		ext = "qcow2"
	}
	sock := "qmp.sock"
	if engine == vmm.Firecracker {
		sock = "api.sock"
	}
	v.Runtime = api.VMRuntime{
		State: api.VMCreating, Engine: engine, DNSName: name + ".vm",
		APISocket: filepath.Join(dir, sock), AgentSocket: filepath.Join(dir, "agent.sock"),
		AgentTransport: e.Info().AgentTransport,
		SerialLogPath:  filepath.Join(dir, "serial.log"), EngineLogPath: filepath.Join(dir, "engine.log"),
		MetricsPath: filepath.Join(dir, "metrics.json"), VMDir: dir,
		SystemDisk: filepath.Join(dir, "system."+ext), SystemDiskKind: m.disk.Info().Name,
		WorkDisk: filepath.Join(dir, "work.ext4"),
	}
	if len(v.Runtime.AgentSocket) > maxSocketPath || len(v.Runtime.APISocket) > maxSocketPath {
		return api.VM{}, api.Image{}, api.Invalid("socket path %s is longer than %d bytes", v.Runtime.AgentSocket, maxSocketPath).
			WithFix("use a shorter state_dir or VM name")
	}
	return v, img, nil
}

func checkImageBoots(img api.Image, info vmm.Info) error {
	if !slices.Contains(img.Engines, info.Name) {
		return api.FailedPrecondition("image %q cannot boot on %s (it supports: %v)", img.Name, info.Name, img.Engines).
			WithFix("use --engine with one of those, or rebuild the image with banger image create")
	}
	if info.NeedsVmlinux && img.Vmlinux == "" {
		return api.FailedPrecondition("image %q has no vmlinux, which %s needs", img.Name, info.Name).
			WithFix("re-register the image with --vmlinux, or use --engine qemu")
	}
	if img.WorkSeed == "" {
		return api.FailedPrecondition("image %q has no work-seed", img.Name).
			WithFix("re-register it with --work-seed, or banger image create")
	}
	return nil
}

// checkResources refuses sizes beyond what the host, or the engine
// described by info, has.
func (m *Manager) checkResources(v api.VM, img api.Image, info vmm.Info) error {
	if info.MaxVCPUs > 0 && v.VCPUs > info.MaxVCPUs {
		return api.Invalid("vcpus %d is out of range: %s runs at most %d vcpus", v.VCPUs, info.Name, info.MaxVCPUs).
			WithFix(fmt.Sprintf("use --vcpus between 1 and %d", min(info.MaxVCPUs, runtime.NumCPU())))
	}
	if v.VCPUs < 1 || v.VCPUs > runtime.NumCPU() {
		return api.Invalid("vcpus %d is out of range: this host has %d CPUs", v.VCPUs, runtime.NumCPU()).
			WithFix(fmt.Sprintf("use --vcpus between 1 and %d", runtime.NumCPU()))
	}
	total := hostMemMiB()
	if v.MemoryMiB < 128 || (total > 0 && v.MemoryMiB > total) {
		return api.Invalid("memory %d MiB is out of range: 128 MiB to the host's %d MiB", v.MemoryMiB, total).
			WithFix("use --memory between 128MiB and the host's memory")
	}
	if v.DiskBytes < img.WorkSeedSize || v.DiskBytes < 64<<20 {
		return api.Invalid("disk size %d bytes is smaller than the image's work-seed (%d bytes) or 64 MiB", v.DiskBytes, img.WorkSeedSize).
			WithFix("use a larger --disk, e.g. 4GiB")
	}
	return nil
}

func or(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func or64(a, b int64) int64 {
	if a != 0 {
		return a
	}
	return b
}

// errCanceled reports whether err came from a cancelled context.
func errCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
