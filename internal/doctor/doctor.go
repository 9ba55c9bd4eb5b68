// Package doctor turns the host capability probe and banger's own state
// (database, SSH key, DNS) into a report of named checks, each ok, warn or
// fail with the exact fix. `banger doctor` prints it; GET /v1/doctor serves
// it. The doctor never changes anything: the database is opened read-only
// and never created.
package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/hostcap"
	"banger/internal/sandbox"
	"banger/internal/vmm"
)

// Check names. They are stable: scripts match on them.
const (
	CheckPrivileges   = "privileges"
	CheckKVM          = "kvm"
	CheckEngine       = "engine"
	CheckFirecracker  = "firecracker"
	CheckJailer       = "jailer"
	CheckQEMU         = "qemu"
	CheckDeviceMapper = "device-mapper"
	CheckDiskDriver   = "disk-driver"
	CheckLoop         = "loop"
	CheckTun          = "tun"
	CheckBridge       = "bridge"
	CheckNftables     = "nftables"
	CheckIPForward    = "ip-forward"
	CheckVhostVsock   = "vhost-vsock"
	CheckTools        = "tools"
	CheckStateDir     = "state-dir"
	CheckFreeDisk     = "free-disk"
	CheckDatabase     = "database"
	CheckDNS          = "dns"
	CheckSSHKey       = "ssh-key"
	CheckSandbox      = "sandbox"
)

// Run probes the host and reports every check for cfg.
func Run(ctx context.Context, cfg config.Config) api.DoctorReport {
	return Report(ctx, cfg, hostcap.Probe(ctx, cfg))
}

// Report builds the report from an existing probe result (the daemon may
// reuse the one it chose its engine with).
func Report(ctx context.Context, cfg config.Config, c hostcap.Caps) api.DoctorReport {
	engine, accel, engineWhy, engineErr := hostcap.ChooseEngine(cfg, c)
	diskEngine := engine
	if engineErr != nil {
		diskEngine = fallbackEngine(cfg)
	}
	driver, pool, driverWhy, driverErr := hostcap.ChooseDiskDriver(cfg, c, diskEngine)
	d := diskChoice{driver: driver, pool: pool, why: driverWhy, err: driverErr}

	checks := []api.Check{
		fromCap(CheckPrivileges, c.Root, api.CheckFail),
		kvmCheck(c),
		engineCheck(c, engine, accel, engineWhy, engineErr),
		firecrackerCheck(cfg, c, engine),
	}
	if c.Jailer != nil {
		checks = append(checks, fromCap(CheckJailer, c.Jailer.Cap, api.CheckFail))
	}
	if c.Firecracker.OK {
		checks = append(checks, confinementCheck(cfg, c.Firecracker.Path))
	}
	checks = append(checks, vmIDsCheck(cfg))
	checks = append(checks,
		qemuCheck(c, engine),
		deviceMapperCheck(c, d),
		diskDriverCheck(d),
		loopCheck(c, d),
		fromCap(CheckTun, c.Tun, api.CheckFail),
		fromCap(CheckBridge, c.Bridge, api.CheckFail),
		fromCap(CheckNftables, c.Nftables, api.CheckFail),
		fromCap(CheckIPForward, c.IPForward, api.CheckWarn),
		vhostVsockCheck(c, engine),
		toolsCheck(c),
		sandboxCheck(ctx, cfg),
		stateDirCheck(c),
		freeDiskCheck(c),
		databaseCheck(ctx, cfg.DBPath()),
		dnsCheck(ctx, cfg),
		sshKeyCheck(cfg.KeyPath()),
	)
	return api.DoctorReport{Checks: checks}
}

// Failed reports whether any check failed (warnings do not count).
func Failed(r api.DoctorReport) bool {
	return slices.ContainsFunc(r.Checks, func(c api.Check) bool { return c.Status == api.CheckFail })
}

// diskChoice is ChooseDiskDriver's answer.
type diskChoice struct {
	driver string
	pool   bool
	why    string
	err    error
}

func (d diskChoice) name() string {
	if d.pool {
		return d.driver + " (loop-backed XFS pool)"
	}
	return d.driver
}

// fallbackEngine is the engine to judge disks for when no engine is usable.
func fallbackEngine(cfg config.Config) string {
	if cfg.Engine == vmm.Firecracker {
		return vmm.Firecracker
	}
	return vmm.QEMU
}

// fromCap maps a capability to a check: ok, or bad with the cap's fix.
func fromCap(name string, c hostcap.Cap, bad string) api.Check {
	if c.OK {
		return api.Check{Name: name, Status: api.CheckOK, Detail: c.Detail}
	}
	return api.Check{Name: name, Status: bad, Detail: c.Detail, Fix: c.Fix}
}

// errCheck is a failed check carrying an error's message and fix.
func errCheck(name string, err error) api.Check {
	e := api.AsError(err)
	return api.Check{Name: name, Status: api.CheckFail, Detail: e.Message, Fix: e.Fix}
}

// sandboxCheck starts one sandbox (internal/sandbox): without it banger
// refuses to read guest-written filesystems and to install npm features.
func sandboxCheck(ctx context.Context, cfg config.Config) api.Check {
	detail, err := sandbox.Check(ctx, sandbox.Config{UID: uint32(cfg.SandboxUID), ScratchRoot: cfg.SandboxScratch()})
	if err != nil {
		return errCheck(CheckSandbox, err)
	}
	return api.Check{Name: CheckSandbox, Status: api.CheckOK, Detail: detail}
}

func kvmCheck(c hostcap.Caps) api.Check {
	// Without KVM banger still works (QEMU TCG), only slower: never fail here;
	// the engine check fails when nothing can run.
	return fromCap(CheckKVM, c.KVM.Cap, api.CheckWarn)
}

func engineCheck(c hostcap.Caps, engine, accel, why string, err error) api.Check {
	if err != nil {
		return errCheck(CheckEngine, err)
	}
	detail := fmt.Sprintf("%s with %s: %s", engine, accel, why)
	if accel == hostcap.AccelTCG && c.HostTSCkHz > 0 {
		detail += fmt.Sprintf(" (guests boot with tsc_early_khz=%d)", c.HostTSCkHz)
	}
	return api.Check{Name: CheckEngine, Status: api.CheckOK, Detail: detail}
}

func firecrackerCheck(cfg config.Config, c hostcap.Caps, engine string) api.Check {
	ch := api.Check{Name: CheckFirecracker, Detail: c.Firecracker.Detail, Fix: c.Firecracker.Fix}
	switch {
	case c.Firecracker.OK && engine == vmm.Firecracker:
		ch.Status = api.CheckOK
	case c.Firecracker.OK:
		ch.Status = api.CheckWarn
		ch.Detail += "; not used: KVM is not usable for real guests here"
		ch.Fix = c.KVM.Fix
	case cfg.Engine == vmm.Firecracker || !c.QEMU.OK:
		ch.Status = api.CheckFail
	default:
		ch.Status = api.CheckWarn
		ch.Detail += "; QEMU is used instead"
	}
	return ch
}

func qemuCheck(c hostcap.Caps, engine string) api.Check {
	ch := api.Check{Name: CheckQEMU, Status: api.CheckOK}
	switch {
	case !c.QEMU.OK && engine == vmm.Firecracker:
		ch.Status, ch.Detail, ch.Fix = api.CheckWarn, c.QEMU.Detail+" (optional: Firecracker is used)", c.QEMU.Fix
	case !c.QEMU.OK:
		ch.Status, ch.Detail, ch.Fix = api.CheckFail, c.QEMU.Detail, c.QEMU.Fix
	case !c.QEMUImg.OK:
		ch.Status, ch.Detail, ch.Fix = api.CheckWarn, c.QEMU.Detail+"; "+c.QEMUImg.Detail+" (qcow2 disks unavailable)", c.QEMUImg.Fix
	default:
		ch.Detail = c.QEMU.Detail + "; " + c.QEMUImg.Detail
	}
	return ch
}

func deviceMapperCheck(c hostcap.Caps, d diskChoice) api.Check {
	ch := fromCap(CheckDeviceMapper, c.DeviceMapper, api.CheckWarn)
	if c.DeviceMapper.OK {
		return ch
	}
	if d.err != nil {
		ch.Detail += "; no disk driver is usable either (see disk-driver)"
	} else {
		ch.Detail += fmt.Sprintf("; disk driver %s will be used instead: %s", d.name(), d.why)
	}
	return ch
}

func diskDriverCheck(d diskChoice) api.Check {
	if d.err != nil {
		return errCheck(CheckDiskDriver, d.err)
	}
	return api.Check{Name: CheckDiskDriver, Status: api.CheckOK, Detail: fmt.Sprintf("%s: %s", d.name(), d.why)}
}

func loopCheck(c hostcap.Caps, d diskChoice) api.Check {
	// Loop devices back the XFS pool and dm-snapshot; other drivers and
	// image builds (mkfs -d) do without.
	needed := d.err == nil && (d.pool || d.driver == "dmsnap")
	bad := api.CheckWarn
	if needed {
		bad = api.CheckFail
	}
	return fromCap(CheckLoop, c.Loop, bad)
}

func vhostVsockCheck(c hostcap.Caps, engine string) api.Check {
	if c.VhostVsock.OK {
		return api.Check{Name: CheckVhostVsock, Status: api.CheckOK, Detail: c.VhostVsock.Detail}
	}
	detail := c.VhostVsock.Detail
	if engine == vmm.Firecracker {
		detail = "/dev/vhost-vsock missing: not needed, Firecracker's vsock is a Unix socket on the host (QEMU guests would use virtio-serial)"
	}
	// Optional: the agent uses virtio-serial with QEMU.
	return api.Check{Name: CheckVhostVsock, Status: api.CheckOK, Detail: detail, Fix: "optional: " + c.VhostVsock.Fix}
}

func toolsCheck(c hostcap.Caps) api.Check {
	var found, missing, pkgs []string
	status := api.CheckOK
	for _, t := range c.Tools {
		if t.OK {
			found = append(found, t.Name)
			continue
		}
		why := "image create"
		switch t.Name {
		case "ssh":
			why = "banger vm ssh"
		case "mkfs.xfs":
			why = "the XFS storage pool"
		}
		if t.Required {
			status, why = api.CheckFail, "work disks"
		} else if status == api.CheckOK {
			status = api.CheckWarn
		}
		missing = append(missing, fmt.Sprintf("%s (for %s)", t.Name, why))
		if !slices.Contains(pkgs, t.Package) {
			pkgs = append(pkgs, t.Package)
		}
	}
	ch := api.Check{Name: CheckTools, Status: status, Detail: "found: " + strings.Join(found, ", ")}
	if len(missing) > 0 {
		ch.Detail = "missing: " + strings.Join(missing, ", ") + "; " + ch.Detail
		ch.Fix = "apt-get install " + strings.Join(pkgs, " ")
	}
	return ch
}

func stateDirCheck(c hostcap.Caps) api.Check {
	return fromCap(CheckStateDir, c.StateDir.Cap, api.CheckFail)
}

func freeDiskCheck(c hostcap.Caps) api.Check {
	f := c.FreeDisk
	ch := api.Check{Name: CheckFreeDisk, Status: api.CheckOK, Detail: f.Detail, Fix: f.Fix}
	switch {
	case !f.OK:
		ch.Status = api.CheckFail
	case f.Low:
		ch.Status = api.CheckWarn
	}
	return ch
}
