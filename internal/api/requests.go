package api

// Request and response bodies of the daemon's API. Paths (all under /v1):
//
//	GET    /v1/status                     DaemonStatus
//	POST   /v1/shutdown                   {}
//	GET    /v1/doctor                     DoctorReport
//	GET    /v1/web                        WebInfo (the web UI's login URL)
//	GET    /v1/metrics                    Prometheus text format (internal/metrics; the web UI's /metrics)
//	GET    /v1/images                     []Image
//	GET    /v1/images/{name}              Image
//	POST   /v1/images                     ImageCreateRequest   → Operation (begin)
//	POST   /v1/images/register            ImageRegisterRequest → Operation (begin)
//	POST   /v1/images/build               ImageBuildRequest    → Operation (begin)
//	POST   /v1/images/promote             ImagePromoteRequest  → Operation (begin)
//	DELETE /v1/images/{name}?force=1      {}
//	GET    /v1/vms                        []VM
//	GET    /v1/vms/{name}                 VMDetail
//	POST   /v1/vms                        VMCreateRequest → Operation (begin)
//	POST   /v1/vms/{name}/start|stop|restart → Operation
//	DELETE /v1/vms/{name}                 → Operation
//	PATCH  /v1/vms/{name}                 VMEditRequest → VM
//	GET    /v1/vms/{name}/logs?follow=1   text/plain stream (serial console)
//	POST   /v1/vms/{name}/exec            upgrade to a raw stream speaking the agent's exec protocol
//	GET    /v1/vms/{name}/stats           VMStats
//	GET    /v1/operations/{id}?wait=DUR   Operation (long-poll: answers when it changes or after DUR)

// ImageCreateRequest builds an image from nothing (debootstrap).
type ImageCreateRequest struct {
	Name     string   `json:"name"`
	Suite    string   `json:"suite"`              // default "bookworm"
	Mirror   string   `json:"mirror,omitempty"`   // default deb.debian.org/debian
	Packages []string `json:"packages,omitempty"` // extra packages
	Size     int64    `json:"size,omitempty"`     // rootfs size in bytes; 0 = fit + headroom
	With     []string `json:"with,omitempty"`     // features, e.g. "opencode"
}

// ImageRegisterRequest adopts existing artefacts (host paths).
type ImageRegisterRequest struct {
	Name     string `json:"name"`
	Kernel   string `json:"kernel"`
	Initrd   string `json:"initrd"`
	Rootfs   string `json:"rootfs"`
	WorkSeed string `json:"work_seed,omitempty"`
	Vmlinux  string `json:"vmlinux,omitempty"`
}

// ImageBuildRequest builds an image from an image: a builder VM boots from
// From, gets Copy files, runs Script as root and is captured as Name.
type ImageBuildRequest struct {
	Name   string      `json:"name"`
	From   string      `json:"from"`
	Script string      `json:"script,omitempty"` // absolute host path of an executable script
	Copy   []ImageCopy `json:"copy,omitempty"`
	Size   int64       `json:"size,omitempty"` // rootfs size in bytes; 0 = the parent's
	With   []string    `json:"with,omitempty"` // features, e.g. "opencode" (runs the shipped script)
	Env    []string    `json:"env,omitempty"`  // KEY=VALUE for the scripts, e.g. http_proxy=…
	// TimeoutSeconds bounds the whole build (0 = 30 minutes).
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// ImageCopy is one file copied into a builder VM before its script runs.
type ImageCopy struct {
	Src string `json:"src"` // absolute host path of a regular file
	Dst string `json:"dst"` // absolute guest path
}

// ImagePromoteRequest turns a stopped VM's disks into image Name.
type ImagePromoteRequest struct {
	VM           string `json:"vm"`
	Name         string `json:"name"`
	WithWorkDisk bool   `json:"with_work_disk,omitempty"` // the VM's /root becomes the work-seed
}

// VMCreateRequest creates (and starts) a VM.
type VMCreateRequest struct {
	Name      string `json:"name,omitempty"` // generated when empty
	Image     string `json:"image,omitempty"`
	VCPUs     int    `json:"vcpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskBytes int64  `json:"disk_bytes,omitempty"`
	Engine    string `json:"engine,omitempty"` // override config engine
	NoStart   bool   `json:"no_start,omitempty"`
	// NoWait ends the operation after the engine stage: the VM shows state
	// "starting" until its agent answers, then "running" (or "failed" with
	// the reason). Delete at any time stops it and cleans everything.
	NoWait bool `json:"no_wait,omitempty"`
	// Wait names what the create waits for once the agent answers: "" (the
	// default) waits for every service the image's features serve (opencode
	// on :4096); WaitAgent waits for the guest agent only (vm run, which
	// needs no service); a feature name ("opencode") waits for that one and
	// is Invalid for an image without it.
	Wait string `json:"wait,omitempty"`
}

// WaitAgent is VMCreateRequest.Wait for "the guest agent only".
const WaitAgent = "agent"

// VMEditRequest changes a stopped VM's resources; zero fields are unchanged.
type VMEditRequest struct {
	VCPUs     int   `json:"vcpus,omitempty"`
	MemoryMiB int   `json:"memory_mib,omitempty"`
	DiskBytes int64 `json:"disk_bytes,omitempty"`
}

// VMDetail is GET /v1/vms/{name}: the record plus live handles.
type VMDetail struct {
	VM      VM         `json:"vm"`
	Handles *VMHandles `json:"handles,omitempty"`
	Alive   bool       `json:"alive"`
	URLs    []string   `json:"urls,omitempty"`
}

// ExecRequest is the first message of an exec stream.
type ExecRequest struct {
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env,omitempty"`
	Dir  string            `json:"dir,omitempty"`
	TTY  bool              `json:"tty,omitempty"`
}

// VMStats is a VM's latest counters.
type VMStats struct {
	Name       string  `json:"name"`
	CPUPercent float64 `json:"cpu_percent"`
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   int64   `json:"rss_bytes"`
	DiskRead   int64   `json:"disk_read_bytes"`
	DiskWrite  int64   `json:"disk_write_bytes"`
	NetRxBytes int64   `json:"net_rx_bytes"`
	NetTxBytes int64   `json:"net_tx_bytes"`
	SampledAt  string  `json:"sampled_at"`
}
