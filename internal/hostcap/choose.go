package hostcap

import (
	"fmt"
	"strings"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/vmm"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// tcgSlow is appended to every reason that ends in software emulation.
const tcgSlow = "falling back to QEMU software emulation — expect ~15 s boots"

// Accel picks the accelerator: cfg.Accel "kvm" or "tcg" forces it; "auto"
// (or empty) gives "kvm" when KVM runs real guests here, else "tcg". The
// reason is a readable sentence.
func (c Caps) Accel(cfg config.Config) (accel string, reason string) {
	switch cfg.Accel {
	case AccelKVM:
		return AccelKVM, `accel = "kvm" in the config`
	case AccelTCG:
		return AccelTCG, `accel = "tcg" in the config`
	}
	if c.KVM.OK {
		return AccelKVM, "KVM is usable"
	}
	if c.KVM.NestedPVM {
		return AccelTCG, "KVM is not usable for real guests here (nested PVM); " + tcgSlow
	}
	return AccelTCG, "KVM is not usable (" + c.KVM.Detail + "); " + tcgSlow
}

// ChooseEngine picks the engine and accelerator for new VMs.
//
// cfg.Engine "firecracker" or "qemu" forces the engine; the error (with a
// fix) says why it cannot run here. "auto" picks Firecracker when it is
// usable (FirecrackerUsable: its binary ≥ 1.8, the configured jailer of the
// same release, the engine's own Info folded in by WithEngine) and KVM is
// usable, else QEMU with KVM when usable, else QEMU with TCG; it fails only
// when QEMU is missing too.
func ChooseEngine(cfg config.Config, c Caps) (engine, accel, reason string, err error) {
	switch cfg.Engine {
	case vmm.Firecracker:
		return chooseFirecracker(cfg, c)
	case vmm.QEMU:
		return chooseQEMU(cfg, c, `engine = "qemu" in the config`)
	case "", "auto":
	default:
		return "", "", "", api.Invalid("unknown engine %q in the config", cfg.Engine).
			WithFix(`set engine to "auto", "firecracker" or "qemu"`)
	}
	accel, accelWhy := c.Accel(cfg)
	fcOK, fcWhy, _ := c.FirecrackerUsable()
	if fcOK && accel == AccelKVM && c.KVM.Present {
		return vmm.Firecracker, AccelKVM,
			fmt.Sprintf("firecracker %s is installed and %s", c.Firecracker.Version, accelWhy), nil
	}
	var notFC string
	switch {
	case !fcOK:
		notFC = fcWhy
	case accel == AccelTCG:
		notFC = "firecracker needs KVM"
	default:
		notFC = "firecracker needs /dev/kvm"
	}
	if !c.QEMU.OK {
		return "", "", "", api.FailedPrecondition("no usable engine: %s; %s", notFC, c.QEMU.Detail).
			WithFix(qemuFix + " (or " + fcFix + " on a host with KVM)")
	}
	return chooseQEMU(cfg, c, notFC)
}

func chooseFirecracker(cfg config.Config, c Caps) (string, string, string, error) {
	if ok, why, fix := c.FirecrackerUsable(); !ok {
		return "", "", "", api.FailedPrecondition(`engine = "firecracker" but %s`, why).
			WithFix(fix + `, or set engine = "qemu"`)
	}
	switch {
	case cfg.Accel == AccelTCG:
		return "", "", "", api.Invalid(`engine = "firecracker" cannot use accel = "tcg" (Firecracker has no software emulation)`).
			WithFix(`set engine = "qemu", or accel = "auto"`)
	case cfg.Accel == AccelKVM && c.KVM.Present:
		return vmm.Firecracker, AccelKVM, `engine = "firecracker" and accel = "kvm" in the config`, nil
	case !c.KVM.OK:
		return "", "", "", api.FailedPrecondition(`engine = "firecracker" but %s`, strings.TrimSuffix(c.KVM.Detail, "; QEMU software emulation (TCG) will be used")).
			WithFix(kvmHWFix + `, or set engine = "qemu"`)
	}
	return vmm.Firecracker, AccelKVM, `engine = "firecracker" in the config; KVM is usable`, nil
}

const jailerFix = "install firecracker and the jailer from the same release (https://github.com/firecracker-microvm/firecracker/releases), or clear jailer_bin in the config"

// FirecrackerUsable says whether Firecracker can run VMs here, or why not
// and the fix: its binary must work and, when a jailer is configured, the
// jailer must work and be the same version (Firecracker's jailer.md: both
// come from one release).
func (c Caps) FirecrackerUsable() (ok bool, why, fix string) {
	if !c.Firecracker.OK {
		return false, c.Firecracker.Detail, c.Firecracker.Fix
	}
	if j := c.Jailer; j != nil {
		if !j.OK {
			return false, j.Detail, j.Fix
		}
		if j.Version != c.Firecracker.Version {
			return false, fmt.Sprintf("jailer %s at %s is not the same version as firecracker %s", j.Version, j.Path, c.Firecracker.Version), jailerFix
		}
	}
	return true, "", ""
}

// WithEngine folds an engine's own report into c: an engine whose Info is
// not Available is not usable, whatever the probe found. (Only engines
// built before the choice can be folded in: Firecracker's; QEMU's engine
// needs the chosen accel.)
func (c Caps) WithEngine(info vmm.Info) Caps {
	if info.Available {
		return c
	}
	var b *Binary
	switch info.Name {
	case vmm.Firecracker:
		b = &c.Firecracker
	case vmm.QEMU:
		b = &c.QEMU
	default:
		return c
	}
	b.OK = false
	b.Detail = info.Name + " engine unavailable: " + info.Reason
	if b.Fix == "" {
		b.Fix = "see banger doctor"
	}
	return c
}

// chooseQEMU finishes a QEMU choice; why says why QEMU (not Firecracker).
func chooseQEMU(cfg config.Config, c Caps, why string) (string, string, string, error) {
	if !c.QEMU.OK {
		return "", "", "", api.FailedPrecondition("qemu is not usable: %s", c.QEMU.Detail).WithFix(c.QEMU.Fix)
	}
	accel, accelWhy := c.Accel(cfg)
	if accel == AccelKVM && !c.KVM.Present {
		return "", "", "", api.FailedPrecondition("accel = \"kvm\" but %s", c.KVM.Detail).
			WithFix(c.KVM.Fix + `, or set accel = "auto"`)
	}
	return vmm.QEMU, accel, why + "; " + accelWhy, nil
}

// Storage pool modes (config storage_pool).
const (
	PoolAuto = "auto"
	PoolOn   = "on"
	PoolOff  = "off"
)

// ChooseDiskDriver picks the copy-on-write driver for system disks of VMs
// run by engine, and whether it works inside banger's loop-backed XFS pool
// (usePool) rather than in the state dir itself.
//
// cfg.DiskDriver other than "auto" is forced; the error says why it cannot
// work here. "auto" takes the first that works: reflink in the state dir;
// with storage_pool = "on", the pool (preferred over dm-snapshot); dmsnap
// when device-mapper works and engine is firecracker; the pool unless
// storage_pool = "off" (needs loop devices and mkfs.xfs); qcow2 when engine
// is qemu; else copy. The reason names why each better option was not
// taken.
func ChooseDiskDriver(cfg config.Config, c Caps, engine string) (driver string, usePool bool, reason string, err error) {
	switch cfg.DiskDriver {
	case "", "auto":
		d, pool, why := autoDiskDriver(cfg, c, engine)
		return d, pool, why, nil
	case disk.Reflink, disk.DMSnap, disk.Qcow2, disk.Copy:
		return forcedDiskDriver(cfg, c, engine)
	}
	return "", false, "", api.Invalid("unknown disk_driver %q in the config", cfg.DiskDriver).
		WithFix(`set disk_driver to "auto", "dmsnap", "reflink", "qcow2" or "copy"`)
}

func stateDirNoReflink(c Caps) string {
	fs := c.StateDir.FSType
	if fs == "" {
		fs = "unknown filesystem"
	}
	return fmt.Sprintf("state dir %s is %s (no reflink)", c.StateDir.Path, fs)
}

const poolReason = "using a loop-backed XFS pool with reflink clones"

func autoDiskDriver(cfg config.Config, c Caps, engine string) (string, bool, string) {
	if c.Reflink.OK {
		return disk.Reflink, false, fmt.Sprintf("state dir %s is %s with reflink: instant clones", c.StateDir.Path, c.StateDir.FSType)
	}
	why := []string{stateDirNoReflink(c)}
	poolOK, poolWhy := poolPossible(cfg, c)
	if poolOK && cfg.StoragePool == PoolOn {
		return disk.Reflink, true, strings.Join(append(why, `storage_pool = "on"`, poolReason), "; ")
	}
	switch {
	case c.DeviceMapper.OK && engine == vmm.Firecracker:
		return disk.DMSnap, false, strings.Join(append(why, "using device-mapper snapshots"), "; ")
	case !c.DeviceMapper.OK:
		why = append(why, c.DeviceMapper.Detail)
	default:
		why = append(why, "dm-snapshot is used with firecracker only")
	}
	if poolOK {
		return disk.Reflink, true, strings.Join(append(why, poolReason), "; ")
	}
	why = append(why, poolWhy)
	switch {
	case engine == vmm.QEMU && c.QEMUImg.OK:
		return disk.Qcow2, false, strings.Join(append(why, "using qcow2 overlays"), "; ")
	case engine == vmm.QEMU:
		why = append(why, "qemu-img missing (apt-get install qemu-utils)")
	default:
		why = append(why, "qcow2 needs the qemu engine")
	}
	return disk.Copy, false, strings.Join(append(why, "using full sparse copies (slowest)"), "; ")
}

// poolPossible says whether the loop-backed XFS pool can be used, or why not.
func poolPossible(cfg config.Config, c Caps) (bool, string) {
	switch {
	case cfg.StoragePool == PoolOff:
		return false, `storage pool disabled (storage_pool = "off")`
	case !c.Loop.OK:
		return false, "no XFS pool: " + c.Loop.Detail
	case !c.Tool("mkfs.xfs").OK:
		return false, "no XFS pool: mkfs.xfs missing (apt-get install xfsprogs)"
	}
	return true, ""
}

func forcedDiskDriver(cfg config.Config, c Caps, engine string) (string, bool, string, error) {
	forced := fmt.Sprintf("disk_driver = %q in the config", cfg.DiskDriver)
	switch cfg.DiskDriver {
	case disk.Reflink:
		if c.Reflink.OK {
			return disk.Reflink, false, forced + fmt.Sprintf("; state dir %s reflinks", c.StateDir.Path), nil
		}
		ok, why := poolPossible(cfg, c)
		if !ok {
			return "", false, "", api.FailedPrecondition("%s but %s and %s", forced, stateDirNoReflink(c), why).
				WithFix(`put state_dir on XFS (reflink=1) or btrfs, enable the pool (storage_pool = "auto", needs loop devices and xfsprogs), or set disk_driver = "auto"`)
		}
		return disk.Reflink, true, forced + "; " + stateDirNoReflink(c) + "; " + poolReason, nil
	case disk.DMSnap:
		if !c.DeviceMapper.OK {
			return "", false, "", api.FailedPrecondition("%s but %s", forced, c.DeviceMapper.Detail).
				WithFix(c.DeviceMapper.Fix + `, or set disk_driver = "auto"`)
		}
	case disk.Qcow2:
		if engine != vmm.QEMU {
			return "", false, "", api.FailedPrecondition("%s but engine %s cannot open qcow2 disks", forced, engine).
				WithFix(`set engine = "qemu", or disk_driver = "auto"`)
		}
		if !c.QEMUImg.OK {
			return "", false, "", api.FailedPrecondition("%s but %s", forced, c.QEMUImg.Detail).WithFix(qemuFix)
		}
	}
	return cfg.DiskDriver, false, forced, nil
}
