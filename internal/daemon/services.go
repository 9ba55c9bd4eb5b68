package daemon

import (
	"context"
	"io"
	"net"

	"banger/internal/api"
	"banger/internal/progress"
)

// VMService does the VM work behind the API. The daemon calls the long
// methods (Create, Start, Stop, Restart, Delete) from an operation's
// goroutine with a context tied to the daemon's lifetime, not the request's:
// the context ends when the user cancels the operation or the daemon shuts
// down, and the implementation must then revert what it half-did. Progress
// goes to rep. name is a VM name or ID. Errors carry api kinds (NotFound,
// FailedPrecondition, …), which reach the CLI unchanged.
//
// Engine processes must not be children that die with the daemon: they are
// started detached (setsid) so VMs outlive daemon restarts.
type VMService interface {
	Create(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error)
	Start(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	Stop(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	Restart(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	Delete(ctx context.Context, name string, rep progress.Reporter) error
	Edit(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error)
	Detail(ctx context.Context, name string) (api.VMDetail, error)
	// Exec returns a raw stream to the guest agent speaking the agent's exec
	// protocol; the daemon pipes it to the client's hijacked connection and
	// closes it when either side is done.
	Exec(ctx context.Context, name string) (net.Conn, error)
	// Logs writes the VM's serial console to w; with follow it keeps writing
	// until ctx ends.
	Logs(ctx context.Context, name string, follow bool, w io.Writer) error
	Stats(ctx context.Context, name string) (api.VMStats, error)
}

// ImageService does the image work behind the API. Create and Register are
// long operations run like VMService.Create (daemon-lifetime context,
// progress to rep, revert on failure); Delete is synchronous and refuses
// (FailedPrecondition) an image VMs still use unless force is set.
type ImageService interface {
	Create(ctx context.Context, req api.ImageCreateRequest, rep progress.Reporter) (api.Image, error)
	Register(ctx context.Context, req api.ImageRegisterRequest, rep progress.Reporter) (api.Image, error)
	Delete(ctx context.Context, name string, force bool) error
}

// StatusInfo is optionally implemented by a VMService to report what the
// daemon chose at startup; GET /v1/status then shows it instead of the
// config's "auto" values.
type StatusInfo interface {
	StatusInfo() (engine, accel, diskDriver string)
}
