// Package vmm defines the engine interface that runs a VM's guest: a
// Firecracker process or a QEMU microvm process.
//
// Lifecycle: the orchestrator (internal/vm) prepares disks, a tap and a VM
// dir, then calls Start with a Spec. Start launches the engine process
// detached from the daemon (its own session, stdio to files, not a child
// that dies with the daemon), configures it and boots the guest; it returns
// the Handles (pid, sockets) as soon as the guest is booting — guest
// readiness is the agent's business, not the engine's. Stop asks the guest to
// shut down and kills the process after the timeout. Kill ends it at once.
// An orchestrator that shuts a guest down from inside (through its agent)
// asks for Info.GuestShutdown: the one guest action that ends the engine
// process (a Firecracker guest that powers off only halts; it must reboot).
// State and Alive look at a running VM from its Handles alone, so they work
// after a daemon restart.
//
// Terms: "accel" is "kvm" when hardware virtualisation runs real guests, or
// "tcg" for QEMU software emulation (Firecracker has no such fallback).
package vmm

import (
	"context"
	"time"

	"banger/internal/api"
)

// Engine names.
const (
	Firecracker = "firecracker"
	QEMU        = "qemu"
)

// Agent transports.
const (
	// TransportVsockHybrid: Firecracker's vsock: a Unix socket on the host;
	// connect, send "CONNECT <port>\n", read "OK <n>\n".
	TransportVsockHybrid = "vsock-hybrid"
	// TransportVsock: vhost-vsock, AF_VSOCK to (cid, port).
	TransportVsock = "vsock"
	// TransportSerial: virtio-serial port org.banger.agent exposed by QEMU as
	// a Unix socket server; one host connection at a time.
	TransportSerial = "serial"
)

// AgentPort is the vsock port the guest agent listens on.
const AgentPort = 1024

// Engine runs guests. Implementations: vmm/firecracker, vmm/qemu.
type Engine interface {
	// Info reports what this engine can do on this host.
	Info() Info
	// Start launches and boots a guest described by spec; see the package doc.
	Start(ctx context.Context, spec Spec) (Handles, error)
	// Stop asks the guest to end (Firecracker: SendCtrlAltDel, which makes
	// the guest reboot and, with reboot=k, Firecracker exit; QEMU:
	// system_powerdown) and kills the process when it has not exited within
	// timeout. It returns once the process is gone.
	Stop(ctx context.Context, h Handles, timeout time.Duration) error
	// Kill ends the engine process at once and waits for it to be gone.
	Kill(ctx context.Context, h Handles) error
	// State asks the engine (API/QMP socket) what the guest is doing.
	State(ctx context.Context, h Handles) (State, error)
	// Alive reports whether the engine process in h still runs (pid exists,
	// is not a zombie, and is the engine we started: its cmdline names the
	// API/QMP socket).
	Alive(h Handles) bool
}

// Snapshotter is an Engine that can save a running guest and start new
// guests from what it saved (banger snapshot, vm fork, warm images).
//
// Sequence for a snapshot: Pause (the guest's vCPUs stop; when it returns
// the engine has flushed every disk write, so the orchestrator may capture
// the disks through its disk driver) → Save (device state and memory into
// files in dir; the guest stays paused) → the orchestrator captures disks →
// Resume (the parent runs on, unharmed) or Kill/Stop.
//
// Restore starts a new engine process for spec (the child's own name,
// sockets, tap, MAC, disks — copies the orchestrator made of the snapshot's
// disks) from a Snapshot, and returns once the guest runs. The guest inside
// still has its parent's identity (hostname, IP, MAC, keys, clock): the
// orchestrator resets it through the agent. Restore refuses (an error, no
// process left running) a snapshot made by another engine or version or for
// another machine shape, or whose files are missing, truncated or changed
// (checked against the Snapshot's sizes and SHA-256 sums).
type Snapshotter interface {
	Engine
	// Pause stops the guest's vCPUs and flushes its disks.
	Pause(ctx context.Context, h Handles) error
	// Resume continues a paused guest.
	Resume(ctx context.Context, h Handles) error
	// Save writes a paused guest's device state and memory into dir (which
	// exists and is the orchestrator's) and describes what it wrote. The
	// files are never written again once Save returns: children map the
	// memory file copy-on-write, so the engine never hands the file itself
	// to a process that could write it.
	Save(ctx context.Context, h Handles, dir string) (Snapshot, error)
	// Restore starts a guest for spec from snap; see the interface doc.
	Restore(ctx context.Context, spec Spec, snap Snapshot) (Handles, error)
	// Forget releases what the engine holds for snap (QEMU: the sealed
	// in-memory copy of its memory that children share); called when the
	// snapshot is deleted. Children already running are unaffected.
	Forget(snap Snapshot)
}

// Snapshot is what an engine saved: the files and everything a restore
// must match. Paths are absolute (inside the dir given to Save).
type Snapshot struct {
	Engine  string `json:"engine"`
	Version string `json:"version"` // engine version that wrote it
	Accel   string `json:"accel,omitempty"`
	// Machine shape: a restore with other values is refused.
	VCPUs     int `json:"vcpus"`
	MemoryMiB int `json:"memory_mib"`
	// State is the device state (QEMU: the migration stream; Firecracker:
	// the snapshot file). Memory is the guest RAM file mapped by children;
	// empty when the RAM is inside State (QEMU, a guest whose RAM was not a
	// shared file: a fork).
	State        string `json:"state"`
	StateSize    int64  `json:"state_size"`
	StateSHA256  string `json:"state_sha256"`
	Memory       string `json:"memory,omitempty"`
	MemorySize   int64  `json:"memory_size,omitempty"`
	MemorySHA256 string `json:"memory_sha256,omitempty"`
	// Extra is the engine's own record (opaque above it).
	Extra map[string]string `json:"extra,omitempty"`
}

// Info is an engine's capability report.
type Info struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"` // why not available, with the fix
	Binary    string `json:"binary,omitempty"`
	Version   string `json:"version,omitempty"`
	Accel     string `json:"accel,omitempty"` // "kvm" or "tcg"
	// AgentTransport is the transport VMs of this engine use on this host.
	AgentTransport string `json:"agent_transport"`
	NeedsVmlinux   bool   `json:"needs_vmlinux"` // boots an uncompressed ELF kernel
	Qcow2          bool   `json:"qcow2"`         // can open qcow2 disks
	// MaxVCPUs is the most vCPUs one guest may have (0: no engine limit).
	MaxVCPUs int `json:"max_vcpus,omitempty"`
	// GuestShutdown is what a guest must do for the engine process to end:
	// ShutdownPoweroff or ShutdownReboot (empty means ShutdownPoweroff).
	GuestShutdown string `json:"guest_shutdown,omitempty"`
	// Snapshots: the engine is a Snapshotter that works on this host.
	Snapshots bool `json:"snapshots,omitempty"`
}

// Guest actions that end an engine process (Info.GuestShutdown).
const (
	// ShutdownPoweroff: the guest powers off (ACPI) and the engine exits.
	ShutdownPoweroff = "poweroff"
	// ShutdownReboot: the engine has no power-off; it exits when the guest
	// resets (Firecracker with reboot=k on the kernel command line).
	ShutdownReboot = "reboot"
)

// Spec describes one guest to start.
type Spec struct {
	Name      string // VM name (also the guest hostname)
	VMDir     string // per-VM directory: sockets, logs, handles.json
	VCPUs     int
	MemoryMiB int

	// UID and GID are the unprivileged ids the engine process runs as, one
	// pair per VM (internal/vm derives them from the VM's vsock CID). 0 is
	// refused: no engine runs as root.
	UID, GID int

	Kernel  string // bzImage (QEMU)
	Vmlinux string // uncompressed ELF (Firecracker)
	Initrd  string
	// Cmdline is the base kernel command line (root=, ip=, hostname); the
	// engine appends its own console and timing arguments.
	Cmdline string

	Disks []Disk // Disks[0] is the root disk

	Tap string // host tap device
	MAC string // guest MAC

	VsockCID uint32

	// Paths the engine creates. The orchestrator chooses them inside VMDir.
	APISocket   string // Firecracker API socket / QEMU QMP socket
	AgentSocket string // hybrid-vsock UDS / virtio-serial socket
	SerialLog   string // guest serial console output
	EngineLog   string // the engine's own stdout/stderr/log
	MetricsPath string // Firecracker metrics (FIFO or file); unused by QEMU

	// MemoryFile, when set, is where the engine keeps guest RAM as a shared
	// file mapping (QEMU: memory-backend-file share=on; on tmpfs, chosen by
	// the orchestrator, outside VMDir): what lets Snapshot save device state
	// only and copy the RAM out. The engine creates it (owned by UID, 0600,
	// sized MemoryMiB) and removes it in Stop and Kill; the orchestrator
	// removes it too once an engine ended on its own (a guest that powered
	// off, a crash), which no engine call sees.
	// Engines that save memory themselves (Firecracker) ignore it.
	MemoryFile string
}

// CheckBasics validates what every engine needs of a spec: a name and
// positive vCPU and memory counts. Engines add their own checks.
func (s Spec) CheckBasics() error {
	switch {
	case s.Name == "":
		return api.Invalid("vm spec: empty name")
	case s.VCPUs <= 0:
		return api.Invalid("vm %s: vcpus must be > 0, got %d", s.Name, s.VCPUs)
	case s.MemoryMiB <= 0:
		return api.Invalid("vm %s: memory must be > 0 MiB, got %d", s.Name, s.MemoryMiB)
	case s.UID <= 0 || s.GID <= 0:
		return api.Invalid("vm %s: the engine needs an unprivileged uid and gid, got %d:%d", s.Name, s.UID, s.GID).
			WithFix("set vm_uid_base in the config to a free id range (banger doctor checks it)")
	}
	return nil
}

// Disk is a block device given to the guest.
type Disk struct {
	ID       string // "root", "work"
	Path     string
	Format   string // "raw" or "qcow2"
	ReadOnly bool
}

// Handles identify a started engine.
type Handles struct {
	PID            int               `json:"pid"`
	APISocket      string            `json:"api_socket"`
	AgentSocket    string            `json:"agent_socket"`
	AgentTransport string            `json:"agent_transport"`
	VsockCID       uint32            `json:"vsock_cid,omitempty"`
	Accel          string            `json:"accel,omitempty"`
	Extra          map[string]string `json:"extra,omitempty"`
}

// State is a guest's run state as the engine reports it.
type State string

const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped"
	StateUnknown State = "unknown"
)
