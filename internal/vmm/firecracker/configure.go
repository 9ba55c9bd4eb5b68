package firecracker

import (
	"net/http"

	"banger/internal/vmm"
)

// bootArgs are appended to every guest's kernel command line: the serial
// console; reboot=k so a guest reboot resets through the i8042 keyboard
// controller, which is how Firecracker learns the guest ended (it has no
// ACPI power-off on x86: a guest that powers off only halts); panic=1;
// and, as in Firecracker's own default boot args, pci=off (no PCI bus
// without --enable-pci; Firecracker adds it itself only from v1.13) and
// the i8042 flags that skip probing a mouse, a multiplexer and PnP and
// treat the controller as a dumb keyboard — they keep i8042 itself (and
// so reboot=k and SendCtrlAltDel) working.
const bootArgs = "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"

// logLevel is Firecracker's logger level (--level).
const logLevel = "Info"

// MaxVCPUs is Firecracker's limit on vcpu_count (the API spec's maximum).
const MaxVCPUs = 32

// apiRequest is one configuration call.
type apiRequest struct {
	Method string
	Path   string
	Body   any
}

// Request bodies, field for field from the Firecracker API spec.
type (
	bootSource struct {
		KernelImagePath string `json:"kernel_image_path"`
		InitrdPath      string `json:"initrd_path,omitempty"`
		BootArgs        string `json:"boot_args"`
	}
	machineConfig struct {
		VCPUCount  int  `json:"vcpu_count"`
		MemSizeMiB int  `json:"mem_size_mib"`
		SMT        bool `json:"smt"`
	}
	drive struct {
		DriveID      string `json:"drive_id"`
		IsRootDevice bool   `json:"is_root_device"`
		PathOnHost   string `json:"path_on_host"`
		IsReadOnly   bool   `json:"is_read_only"`
	}
	networkInterface struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
		GuestMAC    string `json:"guest_mac,omitempty"`
	}
	vsock struct {
		GuestCID uint32 `json:"guest_cid"`
		UDSPath  string `json:"uds_path"`
	}
	action struct {
		ActionType string `json:"action_type"`
	}
)

// paths are the file names Firecracker itself opens: the host paths, or
// the in-jail paths when the jailer runs it.
type paths struct {
	LogPath     string   `json:"log_path"`
	MetricsPath string   `json:"metrics_path,omitempty"`
	Kernel      string   `json:"kernel"`
	Initrd      string   `json:"initrd,omitempty"`
	Disks       []string `json:"disks"` // same order as spec.Disks
	VsockUDS    string   `json:"vsock_uds"`
}

// processArgs are Firecracker's own command-line arguments. The logger
// and metrics are set here, not with PUT /logger and /metrics: until a
// logger exists Firecracker logs to stdout — the guest's serial console —
// so its banner and every API request would look like guest output.
func processArgs(apiSocket, id string, p paths) []string {
	args := []string{"--api-sock", apiSocket}
	if id != "" {
		args = append(args, "--id", id)
	}
	if p.LogPath != "" {
		args = append(args, "--log-path", p.LogPath, "--level", logLevel)
	}
	if p.MetricsPath != "" {
		args = append(args, "--metrics-path", p.MetricsPath)
	}
	return args
}

// configRequests is the configuration sequence for spec, ending with
// InstanceStart. It is pure, for golden tests.
func configRequests(spec vmm.Spec, p paths) []apiRequest {
	var reqs []apiRequest
	put := func(path string, body any) {
		reqs = append(reqs, apiRequest{Method: http.MethodPut, Path: path, Body: body})
	}
	args := bootArgs
	if spec.Cmdline != "" {
		args = spec.Cmdline + " " + bootArgs
	}
	put("/boot-source", bootSource{KernelImagePath: p.Kernel, InitrdPath: p.Initrd, BootArgs: args})
	put("/machine-config", machineConfig{VCPUCount: spec.VCPUs, MemSizeMiB: spec.MemoryMiB, SMT: false})
	for i, d := range spec.Disks {
		put("/drives/"+d.ID, drive{DriveID: d.ID, IsRootDevice: i == 0, PathOnHost: p.Disks[i], IsReadOnly: d.ReadOnly})
	}
	if spec.Tap != "" {
		put("/network-interfaces/eth0", networkInterface{IfaceID: "eth0", HostDevName: spec.Tap, GuestMAC: spec.MAC})
	}
	if p.VsockUDS != "" {
		put("/vsock", vsock{GuestCID: spec.VsockCID, UDSPath: p.VsockUDS})
	}
	put("/actions", action{ActionType: "InstanceStart"})
	return reqs
}
