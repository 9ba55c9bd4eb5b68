package api

import "time"

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
//	POST   /v1/images/{name}/warm         ImageWarmRequest → Operation (begin; result Snapshot)
//	DELETE /v1/images/{name}/warm         {}
//	GET    /v1/snapshots                  []Snapshot
//	GET    /v1/snapshots/{name}           Snapshot
//	POST   /v1/snapshots                  SnapshotCreateRequest → Operation (begin; result Snapshot)
//	DELETE /v1/snapshots/{name}           {}
//	GET    /v1/vms                        []VM
//	GET    /v1/vms/{name}                 VMDetail
//	POST   /v1/vms                        VMCreateRequest → Operation (begin)
//	POST   /v1/vms/fork                   VMForkRequest → Operation (begin; result VMForkResult)
//	POST   /v1/vms/{name}/start|stop|restart → Operation
//	DELETE /v1/vms/{name}                 → Operation
//	PATCH  /v1/vms/{name}                 VMEditRequest → VM
//	PATCH  /v1/vms/{name}/lifetime        VMLifetimeRequest → VM (TTL, idle-stop)
//	GET    /v1/vms/{name}/diff            text/plain: the workspace's git patch (read-only view)
//	GET    /v1/vms/{name}/logs?follow=1&tail=N text/plain stream (serial console; LogOptions)
//	POST   /v1/vms/{name}/exec            upgrade to a raw stream speaking the agent's exec protocol
//	GET    /v1/vms/{name}/stats           VMStats
//	GET    /v1/vms/{name}/policy          NetStatus
//	PUT    /v1/vms/{name}/policy          SetNetPolicyRequest → NetStatus (live when running)
//	POST   /v1/vms/{name}/known-hosts     KnownHosts (host keys learned through the agent)
//	POST   /v1/vms/{name}/forwards        ForwardRequest → Forward (daemon-held port forward)
//	DELETE /v1/vms/{name}/forwards/{port} {} (the forward on that host port)
//	GET    /v1/operations/{id}?wait=DUR   Operation (long-poll: answers when it changes or after DUR)

// ImageCreateRequest builds an image from nothing (debootstrap).
type ImageCreateRequest struct {
	Name     string   `json:"name"`
	Suite    string   `json:"suite"`              // default "bookworm"
	Mirror   string   `json:"mirror,omitempty"`   // deprecated: must equal the daemon's debian_mirror (Invalid otherwise)
	Packages []string `json:"packages,omitempty"` // extra packages
	Size     int64    `json:"size,omitempty"`     // rootfs size in bytes; 0 = fit + headroom
	With     []string `json:"with,omitempty"`     // features, e.g. "opencode"
}

// ImageRegisterRequest adopts existing artefacts (host paths). The daemon
// opens them as root, so it accepts this request only from a root peer of
// its Unix socket (see HostPathPolicy).
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
	Name string `json:"name"`
	From string `json:"from"`
	// Script is the absolute host path of an executable script, opened by
	// the daemon: accepted from a root peer only (old CLIs send it).
	Script string `json:"script,omitempty"`
	// ScriptFile is the script's contents, read by the client as its user
	// (the CLI and the web UI send this, never Script).
	ScriptFile *FileUpload `json:"script_file,omitempty"`
	Copy       []ImageCopy `json:"copy,omitempty"`
	Size       int64       `json:"size,omitempty"` // rootfs size in bytes; 0 = the parent's
	With       []string    `json:"with,omitempty"` // features, e.g. "opencode" (runs the shipped script)
	Env        []string    `json:"env,omitempty"`  // KEY=VALUE for the scripts, e.g. http_proxy=…
	// TimeoutSeconds bounds the whole build (0 = 30 minutes).
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// ImageCopy is one file copied into a builder VM before its script runs:
// either File (its contents, read by the client) or Src (a host path the
// daemon opens, accepted from a root peer only).
type ImageCopy struct {
	Src  string      `json:"src,omitempty"` // absolute host path of a regular file
	File *FileUpload `json:"file,omitempty"`
	Dst  string      `json:"dst"` // absolute guest path
}

// FileUpload is a file's contents sent in a request, read by the client as
// the user running it, so that the daemon never opens a path a caller names.
type FileUpload struct {
	Name string `json:"name"`           // the client's name for it (logs and errors only)
	Mode uint32 `json:"mode,omitempty"` // permission bits (0 = 0644; a script is always 0755)
	Data []byte `json:"data"`
}

// MaxBuildUpload bounds the files (--copy and --script together) one image
// build request may carry; MaxBuildBody is the request body that allows it
// (base64 is 4/3 of the bytes, plus the rest of the request).
const (
	MaxBuildUpload = 32 << 20
	MaxBuildBody   = MaxBuildUpload/3*4 + 1<<20
)

// HostPaths lists the host paths the request asks the daemon to open
// (old clients' Script and Copy Src); nil when everything is uploaded.
func (r ImageBuildRequest) HostPaths() []string {
	var ps []string
	if r.Script != "" {
		ps = append(ps, r.Script)
	}
	for _, c := range r.Copy {
		if c.Src != "" {
			ps = append(ps, c.Src)
		}
	}
	return ps
}

// UploadBytes is the size of the files the request carries.
func (r ImageBuildRequest) UploadBytes() int {
	n := 0
	if r.ScriptFile != nil {
		n += len(r.ScriptFile.Data)
	}
	for _, c := range r.Copy {
		if c.File != nil {
			n += len(c.File.Data)
		}
	}
	return n
}

// HostPaths lists the host paths a register request names (all of them).
func (r ImageRegisterRequest) HostPaths() []string {
	var ps []string
	for _, p := range []string{r.Kernel, r.Initrd, r.Rootfs, r.WorkSeed, r.Vmlinux} {
		if p != "" {
			ps = append(ps, p)
		}
	}
	return ps
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
	// NetPolicy is the VM's egress policy (default: the network_policy
	// config key); see `banger vm policy`.
	NetPolicy *NetPolicy `json:"net_policy,omitempty"`
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
	// TTLSeconds deletes the VM (or stops it, TTLAction "stop") that long
	// after it is created; IdleStopSeconds stops it after that long idle
	// (see VMLifetime). Run marks a VM owned by a `vm run`.
	TTLSeconds      int64  `json:"ttl_seconds,omitempty"`
	TTLAction       string `json:"ttl_action,omitempty"`
	IdleStopSeconds int64  `json:"idle_stop_seconds,omitempty"`
	Run             bool   `json:"run,omitempty"`
	// From starts the VM from a snapshot (its image, engine and shape) instead of booting.
	From string `json:"from,omitempty"`
	// Cold boots even when the image has a warm snapshot (which is used by
	// default when it matches the request's engine and shape).
	Cold bool `json:"cold,omitempty"`
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
	// Net is the VM's egress policy and, while it runs, its denied count.
	Net *NetStatus `json:"net,omitempty"`
	// HostCAs are the host CA files (guest_ca_certs) the running guest
	// trusts besides its own bundle.
	HostCAs []string `json:"host_cas,omitempty"`
	// Forwards are the daemon-held port forwards (vm port-forward --detach).
	Forwards []Forward `json:"forwards,omitempty"`
	// IdleStopAt is when an idle-stop will stop the VM if it stays idle
	// (zero: no idle-stop, or not running).
	IdleStopAt time.Time `json:"idle_stop_at,omitzero"`
	// Access says how to reach the running VM's feature servers, with
	// their per-VM credentials: any caller the daemon serves may drive
	// the VM as root anyway, other local users get nothing.
	Access []FeatureAccess `json:"access,omitempty"`
}

// FeatureAccess is how to reach one feature server (opencode) of a VM.
type FeatureAccess struct {
	Feature string `json:"feature"`
	// URL is by address, with the credential in it when the server has
	// one: http://opencode:PASSWORD@10.0.0.2:4096.
	URL      string `json:"url"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// Warning says the server answers without a password (an image whose
	// unit could not be given one), so every local user can drive it.
	Warning string `json:"warning,omitempty"`
}

// LogOptions are GET /v1/vms/{name}/logs's query: follow=1 keeps writing
// new output; tail=N starts at the last N lines (0 = the whole log), read
// from the log's end (at most MaxLogTail lines, within the last
// MaxLogTailBytes).
type LogOptions struct {
	Follow bool
	Tail   int
}

// MaxLogTail and MaxLogTailBytes bound vm logs --tail.
const (
	MaxLogTail      = 100000
	MaxLogTailBytes = 8 << 20
)

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
	// NetDenied counts packets the VM's egress policy dropped.
	NetDenied int64  `json:"net_denied_packets"`
	SampledAt string `json:"sampled_at"`
}
