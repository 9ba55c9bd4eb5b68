package daemon

import (
	"context"
	"io"
	"net"

	"banger/internal/api"
	"banger/internal/progress"
)

// VMService does the VM work behind the API, and is the daemon's only way
// to read VMs (the daemon never reads the store for them). The daemon calls
// the long methods (Create, Start, Stop, Restart, Delete) from an
// operation's goroutine with a context tied to the daemon's lifetime, not
// the request's: the context ends when the user cancels the operation or
// the daemon shuts down, and the implementation must then revert what it
// half-did. Progress goes to rep. name is a VM name or ID. Errors carry api
// kinds (NotFound, FailedPrecondition, …), which reach the CLI unchanged.
//
// Engine processes must not be children that die with the daemon: they are
// started detached (setsid) so VMs outlive daemon restarts.
//
// Implemented by vm.Manager; daemontest.VMs is the fake for tests.
type VMService interface {
	Create(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error)
	Start(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	Stop(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	Restart(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	Delete(ctx context.Context, name string, rep progress.Reporter) error
	Edit(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error)
	// Diff returns a running VM's workspace changes as a git patch (a
	// read-only view; guest-written).
	Diff(ctx context.Context, name string) ([]byte, error)
	// SetLifetime changes a VM's TTL and idle-stop, running or not.
	SetLifetime(ctx context.Context, name string, req api.VMLifetimeRequest) (api.VM, error)
	// List returns every VM's record; Detail one VM with what is live.
	List(ctx context.Context) ([]api.VM, error)
	Detail(ctx context.Context, name string) (api.VMDetail, error)
	// Exec returns a raw stream to the guest agent speaking the agent's exec
	// protocol; the daemon pipes it to the client's hijacked connection and
	// closes it when either side is done.
	Exec(ctx context.Context, name string) (net.Conn, error)
	// AddForward starts a daemon-held forward from a host port (loopback
	// unless asked) to a guest port, listed in Detail and ended with the
	// VM; RemoveForward ends the one on a host port.
	AddForward(ctx context.Context, name string, req api.ForwardRequest) (api.Forward, error)
	RemoveForward(ctx context.Context, name string, hostPort int) error
	// Logs writes the VM's serial console to w; with follow it keeps writing
	// until ctx ends.
	Logs(ctx context.Context, name string, opt api.LogOptions, w io.Writer) error
	// Stats returns one VM's counters; LatestStats the stats loop's latest
	// sample of every VM it sampled, without sampling on the caller's time
	// (for the metrics scrape).
	Stats(ctx context.Context, name string) (api.VMStats, error)
	LatestStats() []api.VMStats
	// Info reports what VMs run with on this host (engine, accel, disk
	// driver), shown by GET /v1/status.
	Info() api.HostInfo
}

// ImageService does the image work behind the API, and is the daemon's
// only way to read images. Create, Register, Build and Promote are long
// operations run like VMService.Create (daemon-lifetime context, progress
// and script output to rep, nothing left behind on failure or cancel):
// Build boots a builder VM, runs a script in it and captures it; Promote
// captures a stopped VM. Delete is synchronous and refuses
// (FailedPrecondition) an image VMs still use unless force is set.
//
// Implemented by image.Service; daemontest.Images is the fake for tests.
type ImageService interface {
	List(ctx context.Context) ([]api.Image, error)
	Get(ctx context.Context, name string) (api.Image, error)
	Create(ctx context.Context, req api.ImageCreateRequest, rep progress.Reporter) (api.Image, error)
	Register(ctx context.Context, req api.ImageRegisterRequest, rep progress.Reporter) (api.Image, error)
	Build(ctx context.Context, req api.ImageBuildRequest, rep progress.Reporter) (api.Image, error)
	Promote(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error)
	Delete(ctx context.Context, name string, force bool) error
}

// SnapshotService does snapshots, forks and warm images (banger snapshot,
// vm fork, vm create --from, image warm). CreateSnapshot, Fork and
// WarmImage are long operations run like VMService.Create (daemon-lifetime
// context, stages to rep, nothing half-made left on failure or cancel).
// name is a snapshot name; image an image name.
//
// Implemented by vm.Manager; daemontest.Snapshots is the fake for tests.
type SnapshotService interface {
	CreateSnapshot(ctx context.Context, req api.SnapshotCreateRequest, rep progress.Reporter) (api.Snapshot, error)
	ListSnapshots(ctx context.Context) ([]api.Snapshot, error)
	GetSnapshot(ctx context.Context, name string) (api.Snapshot, error)
	// DeleteSnapshot refuses (FailedPrecondition) a snapshot live VMs were
	// started from and still map, and an image's warm snapshot (use
	// UnwarmImage).
	DeleteSnapshot(ctx context.Context, name string) error
	Fork(ctx context.Context, req api.VMForkRequest, rep progress.Reporter) (api.VMForkResult, error)
	// WarmImage boots the image once, waits for its agent and feature
	// servers, and keeps that snapshot as the image's warm snapshot
	// (replacing an older one).
	WarmImage(ctx context.Context, req api.ImageWarmRequest, rep progress.Reporter) (api.Snapshot, error)
	UnwarmImage(ctx context.Context, image string) error
	// WarmInfo maps image IDs to their warm snapshot, for image list/show.
	WarmInfo(ctx context.Context) (map[string]api.WarmInfo, error)
}
