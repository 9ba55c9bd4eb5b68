// Package hostcap detects what the host can do for banger: privileges, KVM
// (and whether it can run real guests), the engine binaries, device-mapper,
// vhost-vsock, loop, TUN, bridge, nftables, the tools image builds need, and
// the state directory's filesystem (reflink, free space).
//
// Probe is cheap (well under a second, no VM boot) and has no side effects
// beyond temporary files it removes. The doctor prints its result; the VM
// runtime feeds it to ChooseEngine and ChooseDiskDriver to pick an engine,
// an accelerator and a copy-on-write disk driver.
package hostcap

import (
	"context"
	"os"
	"sync"

	"banger/internal/config"
)

// Cap is one probed capability: whether it is usable, what was found, and
// when it is not usable the exact fix a user can apply.
type Cap struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// KVMCap is the KVM probe. OK means KVM runs real guests here; Present means
// /dev/kvm opened and answered the API version and VM creation ioctls, which
// is not enough on nested PVM hosts (NestedPVM) where guests hang.
type KVMCap struct {
	Cap
	Present   bool `json:"present"`
	NestedPVM bool `json:"nested_pvm"`
	// HWVirt is true when /proc/cpuinfo lists vmx or svm.
	HWVirt bool `json:"hw_virt"`
}

// Binary is a probed executable: OK when found (and, where it matters, new
// enough), with its path and parsed version.
type Binary struct {
	Cap
	Path    string `json:"path,omitempty"`
	Version string `json:"version,omitempty"`
}

// Tool is one host program banger runs, with the apt package providing it.
type Tool struct {
	Cap
	Name    string `json:"name"`
	Package string `json:"package"`
	Path    string `json:"path,omitempty"`
	// Required tools are needed for every VM; the others only for some
	// commands (debootstrap for image create, ssh for banger ssh).
	Required bool `json:"required"`
}

// StateDirCap describes the state directory. OK means it (or, when it does
// not exist yet, its nearest existing parent) is writable.
type StateDirCap struct {
	Cap
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
	// Probed is the directory actually examined: Path, or its nearest
	// existing parent when Path does not exist yet.
	Probed string `json:"probed"`
	FSType string `json:"fs_type"`
}

// FreeDiskCap is the free space on the state dir's filesystem. OK is false
// under FailFreeBytes; Low is true under WarnFreeBytes.
type FreeDiskCap struct {
	Cap
	Bytes uint64 `json:"bytes"`
	Low   bool   `json:"low"`
}

// Free-space thresholds for the state dir's filesystem.
const (
	WarnFreeBytes = 10 << 30
	FailFreeBytes = 2 << 30
)

// MinFirecracker is the oldest Firecracker banger uses (ACPI guests).
var MinFirecracker = Version{1, 8, 0}

// Caps is the result of Probe: one field per capability.
type Caps struct {
	Root Cap    `json:"root"`
	KVM  KVMCap `json:"kvm"`
	// HostTSCkHz is the host TSC frequency in kHz (0 when unknown); TCG
	// guests need it as tsc_early_khz= or they may hang calibrating.
	HostTSCkHz int64 `json:"host_tsc_khz"`
	// TSCSource says where HostTSCkHz came from.
	TSCSource    string      `json:"tsc_source,omitempty"`
	Firecracker  Binary      `json:"firecracker"`
	Jailer       *Binary     `json:"jailer,omitempty"` // nil when not configured
	QEMU         Binary      `json:"qemu"`
	QEMUImg      Binary      `json:"qemu_img"`
	DeviceMapper Cap         `json:"device_mapper"`
	VhostVsock   Cap         `json:"vhost_vsock"`
	Loop         Cap         `json:"loop"`
	Tun          Cap         `json:"tun"`
	Bridge       Cap         `json:"bridge"`
	Nftables     Cap         `json:"nftables"`
	IPForward    Cap         `json:"ip_forward"`
	Tools        []Tool      `json:"tools"`
	StateDir     StateDirCap `json:"state_dir"`
	Reflink      Cap         `json:"reflink"`
	FreeDisk     FreeDiskCap `json:"free_disk"`
}

// Tool returns the probed tool called name, or a zero Tool when Probe did
// not look for it.
func (c Caps) Tool(name string) Tool {
	for _, t := range c.Tools {
		if t.Name == name {
			return t
		}
	}
	return Tool{Name: name}
}

// Probe examines the host for cfg. It runs the independent probes
// concurrently; each external command is bounded by a short timeout.
func Probe(ctx context.Context, cfg config.Config) Caps {
	var c Caps
	c.Root = probeRoot()
	c.HostTSCkHz, c.TSCSource = probeTSC()
	c.VhostVsock = probeVhostVsock()
	c.Tun = probeTun()
	c.Bridge = probeBridge()
	c.IPForward = probeIPForward()
	c.Tools = probeTools()

	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	run(func() { c.KVM = probeKVM() })
	run(func() { c.Firecracker = probeFirecracker(ctx, cfg.FirecrackerBin) })
	if cfg.JailerBin != "" {
		run(func() { j := probeJailer(ctx, cfg.JailerBin); c.Jailer = &j })
	}
	run(func() { c.QEMU = probeQEMU(ctx, cfg.QEMUBin) })
	run(func() { c.QEMUImg = probeQEMUImg(ctx) })
	run(func() { c.DeviceMapper = probeDeviceMapper(ctx) })
	run(func() { c.Loop = probeLoop(ctx) })
	run(func() { c.Nftables = probeNftables(ctx) })
	run(func() { c.StateDir, c.Reflink, c.FreeDisk = probeStateDir(cfg.StateDir) })
	wg.Wait()
	return c
}

func probeRoot() Cap {
	if os.Geteuid() == 0 {
		return Cap{OK: true, Detail: "running as root"}
	}
	return Cap{
		Detail: "not running as root (euid " + itoa(os.Geteuid()) + "): the daemon needs root for taps, loop devices and nftables",
		Fix:    "run bangerd as root (e.g. via its systemd unit) or use sudo",
	}
}
