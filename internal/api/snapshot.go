package api

import "time"

// Snapshot kinds.
const (
	// SnapshotVM: taken from a running VM by `banger snapshot create`.
	SnapshotVM = "vm"
	// SnapshotWarm: an image's warm snapshot (`banger image warm`): the
	// image booted once until its agent (and feature servers) answered.
	SnapshotWarm = "warm"
)

// Snapshot is a saved running VM: device state, memory and disks, from
// which `vm fork` and `vm create --from` start new VMs (and `vm create` of a
// warm image, by default).
type Snapshot struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"` // SnapshotVM or SnapshotWarm
	// VMName is the VM it was taken from ("" once that VM is gone, or for a
	// warm snapshot, whose VM was temporary).
	VMName    string `json:"vm_name,omitempty"`
	ImageID   string `json:"image_id"`
	ImageName string `json:"image_name"`
	// What a restore must match: engine, its version and accel, and the
	// machine shape.
	Engine        string `json:"engine"`
	EngineVersion string `json:"engine_version"`
	Accel         string `json:"accel,omitempty"`
	VCPUs         int    `json:"vcpus"`
	MemoryMiB     int    `json:"memory_mib"`
	DiskBytes     int64  `json:"disk_bytes"`
	// Features are the image's feature servers that were ready when it was
	// taken (a fork waits for none of them to start).
	Features []string `json:"features,omitempty"`
	Dir      string   `json:"dir"`
	// SizeBytes is the space its files take on disk (allocated blocks;
	// reflinked disks count in full).
	SizeBytes int64 `json:"size_bytes"`
	// Files: each file's path and apparent size.
	Files []SnapshotFile `json:"files,omitempty"`
	// Children are the live VMs started from it (they map its memory).
	Children  []string  `json:"children,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// TookMillis is how long the parent was paused.
	PausedMillis int64 `json:"paused_millis,omitempty"`
}

// SnapshotFile is one file of a snapshot.
type SnapshotFile struct {
	Role string `json:"role"` // "state", "memory", "system disk", "work disk"
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// SnapshotCreateRequest is POST /v1/snapshots.
type SnapshotCreateRequest struct {
	VM   string `json:"vm"`
	Name string `json:"name,omitempty"` // generated from the VM's name when empty
	// Stop stops the VM after the snapshot instead of resuming it.
	Stop bool `json:"stop,omitempty"`
}

// VMForkRequest is POST /v1/vms/fork: new VMs from a snapshot, or from a
// running VM (snapshotted first; that snapshot is kept and named).
type VMForkRequest struct {
	// Source is a snapshot name, or a running VM's name.
	Source string `json:"source"`
	// Count is how many children (default 1).
	Count int `json:"count,omitempty"`
	// Name is the child's name when Count is 1; otherwise the prefix of
	// names "<prefix>-1" … (default: the source's name + "-fork").
	Name string `json:"name,omitempty"`
	// NetPolicy, lifetimes: as in VMCreateRequest.
	NetPolicy       *NetPolicy `json:"net_policy,omitempty"`
	TTLSeconds      int64      `json:"ttl_seconds,omitempty"`
	TTLAction       string     `json:"ttl_action,omitempty"`
	IdleStopSeconds int64      `json:"idle_stop_seconds,omitempty"`
	Run             bool       `json:"run,omitempty"`
}

// VMForkResult is a fork operation's result.
type VMForkResult struct {
	Snapshot string `json:"snapshot"`
	VMs      []VM   `json:"vms"`
}

// ImageWarmRequest is POST /v1/images/{name}/warm.
type ImageWarmRequest struct {
	Image string `json:"image"`
	// Engine overrides the default engine (the snapshot serves only it).
	Engine string `json:"engine,omitempty"`
}

// WarmInfo is what an image's warm snapshot offers (Image.Warm).
type WarmInfo struct {
	Snapshot  string    `json:"snapshot"`
	Engine    string    `json:"engine"`
	VCPUs     int       `json:"vcpus"`
	MemoryMiB int       `json:"memory_mib"`
	CreatedAt time.Time `json:"created_at"`
	// Usable is false, with the reason, when a create would boot cold
	// (engine changed since, files missing).
	Usable bool   `json:"usable"`
	Reason string `json:"reason,omitempty"`
}

// MaxForkCount bounds VMForkRequest.Count (vm fork --count).
const MaxForkCount = 64
