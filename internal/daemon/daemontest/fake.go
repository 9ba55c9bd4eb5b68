// Package daemontest holds the hand-written fakes of daemon.VMService,
// daemon.ImageService and daemon.SnapshotService that the daemon's and the
// CLI's tests run a real daemon with. Reads (List, Detail, Get) and the default Create and Delete
// go to the daemon's real store, so a test can seed it directly; every
// other behaviour is a function field a test sets, with a small default.
//
// It must not know about engines, disks or networks: nothing here boots
// anything.
package daemontest

import (
	"context"
	"io"
	"log/slog"
	"net"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/progress"
	"banger/internal/store"
)

// VMs is a fake daemon.VMService. A nil function field takes the default
// noted beside it.
type VMs struct {
	// Store backs List, Detail and the default Create and Delete; Services
	// sets it to the daemon's store.
	Store *store.Store
	// HostInfo is what Info returns.
	HostInfo api.HostInfo

	// CreateFunc: default stores a running VM, reporting "allocate" and "boot".
	CreateFunc func(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error)
	// StartFunc: default reports "boot" and returns {Name: name}.
	StartFunc func(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	// DeleteFunc: default reports "remove" and deletes the VM's record.
	DeleteFunc func(ctx context.Context, name string, rep progress.Reporter) error
	// EditFunc: default refuses with FailedPrecondition "vm is running".
	EditFunc func(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error)
	// ExecFunc: default is Unavailable "no agent".
	ExecFunc func(ctx context.Context, name string) (net.Conn, error)
	// LogsFunc: default writes nothing.
	LogsFunc func(ctx context.Context, name string, opt api.LogOptions, w io.Writer) error
	// LatestStatsFunc: default has no samples.
	LatestStatsFunc func() []api.VMStats
	// DetailFunc, when set, adds to the stored record's detail (URLs,
	// Access…): it gets the default detail and returns the answer.
	DetailFunc func(d api.VMDetail) api.VMDetail
}

var _ daemon.VMService = (*VMs)(nil)

func (f *VMs) Create(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
	if f.CreateFunc != nil {
		return f.CreateFunc(ctx, req, rep)
	}
	done := rep.Stage("allocate")
	if req.Name == "" {
		req.Name = "generated-name"
	}
	vm := api.VM{Name: req.Name, VCPUs: max(req.VCPUs, 1), MemoryMiB: max(req.MemoryMiB, 512), DiskBytes: req.DiskBytes}
	vm.Runtime.State = api.VMRunning
	err := f.store().CreateVM(ctx, &vm, store.Alloc{Subnet: config.Default().Subnet})
	done(err)
	if err != nil {
		return api.VM{}, err
	}
	rep.Stage("boot")(nil)
	return vm, nil
}

func (f *VMs) Start(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	if f.StartFunc != nil {
		return f.StartFunc(ctx, name, rep)
	}
	defer rep.Stage("boot")(nil)
	return api.VM{Name: name}, nil
}

func (f *VMs) Stop(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	return api.VM{Name: name}, nil
}

func (f *VMs) Restart(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	return api.VM{Name: name}, nil
}

func (f *VMs) Delete(ctx context.Context, name string, rep progress.Reporter) error {
	if f.DeleteFunc != nil {
		return f.DeleteFunc(ctx, name, rep)
	}
	defer rep.Stage("remove")(nil)
	vm, err := f.store().GetVM(ctx, name)
	if err != nil {
		return err
	}
	return f.store().DeleteVM(ctx, vm.ID)
}

func (f *VMs) Edit(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error) {
	if f.EditFunc != nil {
		return f.EditFunc(ctx, name, req)
	}
	return api.VM{}, api.FailedPrecondition("vm is running")
}

func (f *VMs) Diff(ctx context.Context, name string) ([]byte, error) {
	if _, err := f.store().GetVM(ctx, name); err != nil {
		return nil, err
	}
	return nil, nil
}

func (f *VMs) SetLifetime(ctx context.Context, name string, req api.VMLifetimeRequest) (api.VM, error) {
	return f.store().GetVM(ctx, name)
}

func (f *VMs) List(ctx context.Context) ([]api.VM, error) { return f.store().ListVMs(ctx) }

func (f *VMs) Detail(ctx context.Context, name string) (api.VMDetail, error) {
	vm, err := f.store().GetVM(ctx, name)
	if err != nil {
		return api.VMDetail{}, err
	}
	d := api.VMDetail{VM: vm}
	if f.DetailFunc != nil {
		d = f.DetailFunc(d)
	}
	return d, nil
}

func (f *VMs) Exec(ctx context.Context, name string) (net.Conn, error) {
	if f.ExecFunc != nil {
		return f.ExecFunc(ctx, name)
	}
	return nil, api.Unavailable("no agent")
}

func (f *VMs) Logs(ctx context.Context, name string, opt api.LogOptions, w io.Writer) error {
	if f.LogsFunc != nil {
		return f.LogsFunc(ctx, name, opt, w)
	}
	return nil
}

func (f *VMs) Stats(ctx context.Context, name string) (api.VMStats, error) {
	return api.VMStats{Name: name, CPUPercent: 1.5}, nil
}

func (f *VMs) LatestStats() []api.VMStats {
	if f.LatestStatsFunc != nil {
		return f.LatestStatsFunc()
	}
	return nil
}

func (f *VMs) Info() api.HostInfo { return f.HostInfo }

func (f *VMs) store() *store.Store {
	if f.Store == nil {
		panic("daemontest.VMs: Store is not set (start the daemon with daemontest.Services)")
	}
	return f.Store
}

// Images is a fake daemon.ImageService: List and Get read the store, Delete
// deletes the record; the long operations run their function field or
// fail with Unavailable.
type Images struct {
	Store *store.Store

	CreateFunc   func(ctx context.Context, req api.ImageCreateRequest, rep progress.Reporter) (api.Image, error)
	RegisterFunc func(ctx context.Context, req api.ImageRegisterRequest, rep progress.Reporter) (api.Image, error)
	BuildFunc    func(ctx context.Context, req api.ImageBuildRequest, rep progress.Reporter) (api.Image, error)
	PromoteFunc  func(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error)
}

var _ daemon.ImageService = (*Images)(nil)

func (f *Images) List(ctx context.Context) ([]api.Image, error) { return f.Store.ListImages(ctx) }

func (f *Images) Get(ctx context.Context, name string) (api.Image, error) {
	return f.Store.GetImage(ctx, name)
}

func (f *Images) Create(ctx context.Context, req api.ImageCreateRequest, rep progress.Reporter) (api.Image, error) {
	return call(f.CreateFunc, ctx, req, rep, "create")
}

func (f *Images) Register(ctx context.Context, req api.ImageRegisterRequest, rep progress.Reporter) (api.Image, error) {
	return call(f.RegisterFunc, ctx, req, rep, "register")
}

func (f *Images) Build(ctx context.Context, req api.ImageBuildRequest, rep progress.Reporter) (api.Image, error) {
	return call(f.BuildFunc, ctx, req, rep, "build")
}

func (f *Images) Promote(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error) {
	return call(f.PromoteFunc, ctx, req, rep, "promote")
}

func (f *Images) Delete(ctx context.Context, name string, force bool) error {
	img, err := f.Store.GetImage(ctx, name)
	if err != nil {
		return err
	}
	return f.Store.DeleteImage(ctx, img.ID)
}

func call[R any](fn func(context.Context, R, progress.Reporter) (api.Image, error), ctx context.Context, req R, rep progress.Reporter, what string) (api.Image, error) {
	if fn == nil {
		return api.Image{}, api.Unavailable("daemontest: no image %s behaviour set", what)
	}
	return fn(ctx, req, rep)
}

// Services is a daemon.ServicesFunc handing the daemon vms and images
// (each made when nil) and a fresh Snapshots, with their Store set to the
// daemon's.
func Services(vms *VMs, images *Images) daemon.ServicesFunc {
	return ServicesWith(vms, images, nil)
}

// ServicesWith is Services with the snapshot fake given too (made when nil).
func ServicesWith(vms *VMs, images *Images, snaps *Snapshots) daemon.ServicesFunc {
	if vms == nil {
		vms = &VMs{}
	}
	if images == nil {
		images = &Images{}
	}
	if snaps == nil {
		snaps = &Snapshots{}
	}
	return func(st *store.Store, _ *slog.Logger) (daemon.Services, error) {
		vms.Store, images.Store, snaps.Store = st, st, st
		return daemon.Services{VMs: vms, Images: images, Snapshots: snaps}, nil
	}
}

func (f *VMs) AddForward(ctx context.Context, name string, req api.ForwardRequest) (api.Forward, error) {
	if _, err := f.store().GetVM(ctx, name); err != nil {
		return api.Forward{}, err
	}
	return api.Forward{VM: name, HostAddr: req.HostAddr, HostPort: req.HostPort, GuestPort: req.GuestPort}, nil
}

func (f *VMs) RemoveForward(ctx context.Context, name string, hostPort int) error {
	_, err := f.store().GetVM(ctx, name)
	return err
}
