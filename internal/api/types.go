// Package api holds the types shared by the daemon, the CLI and the web UI:
// the model (Image, VM), operations with their stages, request and response
// bodies, the error kinds and the API version. Changes here are additive
// only (a removal bumps APIVersion's minor number and says so): the JSON is
// a stable contract for scripts (--json) and for older clients. It must not
// know how the daemon works: no driver's internals (a disk driver's kernel
// state, an engine's sockets beyond VMHandles.Engine) belong on the wire.
package api

import (
	"encoding/json"
	"strings"
	"time"
)

// APIVersion is the API version carried in the X-Banger-API header; its
// major number is the path prefix (/v1/...). Peers with the same major
// number talk (SameMajor); a minor bump marks a change old peers survive:
//
//	1.1: VMHandles no longer carries loops, dm_name and dm_device (a disk
//	     driver's state is its own); old clients see them empty.
const (
	APIVersion    = "1.1"
	VersionHeader = "X-Banger-API"
	// BuildHeader carries the daemon's build version so the client can report
	// a client/daemon mismatch.
	BuildHeader = "X-Banger-Version"
)

// SameMajor reports whether API versions a and b ("1", "1.1") share their
// major number, i.e. whether a client and a daemon speaking them can talk.
func SameMajor(a, b string) bool {
	ma, _, _ := strings.Cut(a, ".")
	mb, _, _ := strings.Cut(b, ".")
	return ma == mb
}

// Image is a managed boot set: kernel (bzImage for QEMU, vmlinux for
// Firecracker), initramfs, root filesystem and work-disk seed.
type Image struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Fingerprint   string    `json:"fingerprint"`
	Parent        string    `json:"parent,omitempty"` // parent image name, "" for images from nothing
	Managed       bool      `json:"managed"`
	Source        string    `json:"source"` // "debian:bookworm", "register", "build", "promote"
	KernelVersion string    `json:"kernel_version"`
	Dir           string    `json:"dir"`
	Kernel        string    `json:"kernel"`            // bzImage path
	Vmlinux       string    `json:"vmlinux,omitempty"` // uncompressed ELF path
	Initrd        string    `json:"initrd"`
	Rootfs        string    `json:"rootfs"`
	WorkSeed      string    `json:"work_seed,omitempty"`
	KernelSize    int64     `json:"kernel_size"`
	VmlinuxSize   int64     `json:"vmlinux_size,omitempty"`
	InitrdSize    int64     `json:"initrd_size"`
	RootfsSize    int64     `json:"rootfs_size"`
	WorkSeedSize  int64     `json:"work_seed_size,omitempty"`
	Engines       []string  `json:"engines"`            // engines that can boot it: "firecracker", "qemu"
	Features      []string  `json:"features,omitempty"` // e.g. "opencode", "agent"
	Recipe        string    `json:"recipe,omitempty"`   // JSON of the recipe inputs
	CreatedAt     time.Time `json:"created_at"`
	// Warm is the image's warm snapshot, when it has one (image warm).
	Warm *WarmInfo `json:"warm,omitempty"`
}

// VM states.
type VMState string

const (
	VMCreating VMState = "creating"
	VMStarting VMState = "starting"
	VMRunning  VMState = "running"
	VMStopping VMState = "stopping"
	VMStopped  VMState = "stopped"
	VMFailed   VMState = "failed"
	VMDeleting VMState = "deleting"
)

// VM is a sandbox: its configuration and its durable runtime record.
type VM struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	ImageID   string    `json:"image_id"`
	ImageName string    `json:"image_name"`
	VCPUs     int       `json:"vcpus"`
	MemoryMiB int       `json:"memory_mib"`
	DiskBytes int64     `json:"disk_bytes"` // work disk size
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Runtime   VMRuntime `json:"runtime"`
	// Lifetime is set when the daemon deletes or stops the VM on its own
	// (TTL, idle-stop, owned by a vm run).
	Lifetime *VMLifetime `json:"lifetime,omitempty"`
	// Origin is the snapshot the VM was started from (vm fork, create
	// --from, a warm image); "" for a VM that booted cold.
	Origin string `json:"origin,omitempty"`
}

// VMRuntime is the durable part of a VM's runtime state: it is stored in
// SQLite and survives daemon restarts. What is only true while the engine
// process lives (pid, tap, loop devices, dm names) is in VMHandles instead.
type VMRuntime struct {
	State          VMState   `json:"state"`
	GuestIP        string    `json:"guest_ip"`
	MAC            string    `json:"mac"`
	DNSName        string    `json:"dns_name"`
	Engine         string    `json:"engine"`          // "firecracker" or "qemu"
	Accel          string    `json:"accel,omitempty"` // "kvm" or "tcg"
	APISocket      string    `json:"api_socket"`      // Firecracker API socket or QMP socket
	AgentSocket    string    `json:"agent_socket"`    // hybrid-vsock UDS or virtio-serial socket
	AgentTransport string    `json:"agent_transport"` // "vsock-hybrid", "vsock", "serial"
	VsockCID       uint32    `json:"vsock_cid"`
	SerialLogPath  string    `json:"serial_log_path"`
	EngineLogPath  string    `json:"engine_log_path"`
	MetricsPath    string    `json:"metrics_path"`
	VMDir          string    `json:"vm_dir"`
	SystemDisk     string    `json:"system_disk"`
	SystemDiskKind string    `json:"system_disk_kind"` // disk driver: dmsnap, reflink, qcow2, copy
	WorkDisk       string    `json:"work_disk"`
	LastError      string    `json:"last_error,omitempty"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	StoppedAt      time.Time `json:"stopped_at,omitzero"`
}

// VMHandles is the API view of what is true only while a VM's engine runs:
// process id, tap device and engine-specific bits. The disk driver's kernel
// state is not shown: it is the driver's own (since API 1.1). The daemon's
// full record (vm.Handles, in handles.json in the VM dir) never goes into
// SQLite.
type VMHandles struct {
	PID    int               `json:"pid"`
	Tap    string            `json:"tap,omitempty"`
	Engine map[string]string `json:"engine,omitempty"`
}

// Operation is a long-running piece of work (create, delete, image create…).
// Callers begin it, get its ID, then follow its stages.
type Operation struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`   // "vm.create", "image.create", …
	Target   string          `json:"target"` // the VM or image name
	State    OpState         `json:"state"`
	Stages   []Stage         `json:"stages"`
	Error    *Error          `json:"error,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Started  time.Time       `json:"started"`
	Finished time.Time       `json:"finished,omitzero"`
}

type OpState string

const (
	OpRunning   OpState = "running"
	OpSucceeded OpState = "succeeded"
	OpFailed    OpState = "failed"
)

// Stage is one named step of an operation.
type Stage struct {
	Name     string        `json:"name"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Outcome  string        `json:"outcome"` // "running", "ok", "failed", "skipped"
	Detail   string        `json:"detail,omitempty"`
}

// Stage outcomes.
const (
	StageRunning = "running"
	StageOK      = "ok"
	StageFailed  = "failed"
	StageSkipped = "skipped"
)

// Check is one doctor line.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // "ok", "warn", "fail"
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

const (
	CheckOK   = "ok"
	CheckWarn = "warn"
	CheckFail = "fail"
)

// DoctorReport is the doctor's result.
type DoctorReport struct {
	Checks []Check `json:"checks"`
}

// DaemonStatus is GET /v1/status.
type DaemonStatus struct {
	Version    string    `json:"version"`
	APIVersion string    `json:"api_version"`
	PID        int       `json:"pid"`
	StateDir   string    `json:"state_dir"`
	SocketPath string    `json:"socket_path"`
	ConfigPath string    `json:"config_path"`
	StartedAt  time.Time `json:"started_at"`
	VMs        int       `json:"vms"`
	Running    int       `json:"running"`
	Images     int       `json:"images"`
	Engine     string    `json:"engine"`
	Accel      string    `json:"accel"`
	DiskDriver string    `json:"disk_driver"`
}
