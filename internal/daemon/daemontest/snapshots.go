package daemontest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/names"
	"banger/internal/progress"
	"banger/internal/store"
)

// Snapshots is a strict in-memory fake of daemon.SnapshotService: it checks
// what the real one checks (the VM exists and runs, names are valid and
// free, a snapshot with live children or an image's warm snapshot is not
// deleted, fork counts are bounded) and refuses with the same kinds. VMs
// and images are read from, and forks written to, the daemon's store;
// snapshots live in memory. A fork's children are running VMs of the
// snapshot's image; a nil function field takes that default.
type Snapshots struct {
	Store *store.Store

	// ForkFunc, when set, replaces Fork (after the request's checks).
	ForkFunc func(ctx context.Context, req api.VMForkRequest, rep progress.Reporter) (api.VMForkResult, error)
	// WarmFunc, when set, replaces WarmImage (after the image is found).
	WarmFunc func(ctx context.Context, req api.ImageWarmRequest, rep progress.Reporter) (api.Snapshot, error)

	mu       sync.Mutex
	snaps    map[string]api.Snapshot // guarded by mu; by name
	children map[string][]string     // guarded by mu; snapshot name → VM names forked from it
	seq      int                     // guarded by mu
}

var _ daemon.SnapshotService = (*Snapshots)(nil)

// Put stores s as it is (a test seeding a snapshot).
func (f *Snapshots) Put(s api.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.snaps[s.Name] = s
}

func (f *Snapshots) init() {
	if f.snaps == nil {
		f.snaps, f.children = map[string]api.Snapshot{}, map[string][]string{}
	}
}

func snapNotFound(name string) error {
	return api.NotFound("snapshot %q not found", name).WithFix("banger snapshot list")
}

func (f *Snapshots) CreateSnapshot(ctx context.Context, req api.SnapshotCreateRequest, rep progress.Reporter) (api.Snapshot, error) {
	vm, err := f.Store.GetVM(ctx, req.VM)
	if err != nil {
		return api.Snapshot{}, err
	}
	if vm.Runtime.State != api.VMRunning {
		return api.Snapshot{}, api.FailedPrecondition("vm %s is %s: only a running VM can be snapshotted", vm.Name, vm.Runtime.State).
			WithFix("banger vm start " + vm.Name)
	}
	name := req.Name
	if name == "" {
		f.mu.Lock()
		name = fmt.Sprintf("%s-%08x", vm.Name, f.seq+1) // the real one: a random suffix
		f.mu.Unlock()
	}
	if err := names.Validate(name); err != nil {
		return api.Snapshot{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if _, ok := f.snaps[name]; ok {
		return api.Snapshot{}, api.AlreadyExists("snapshot %q already exists", name).
			WithFix("pick another name, or banger snapshot delete " + name)
	}
	for _, st := range []string{"pause", "save state", "capture disks"} {
		rep.Stage(st)(nil)
	}
	s := f.newLocked(name, api.SnapshotVM, vm.ImageID, vm.ImageName, vm.Runtime.Engine, vm.VCPUs, vm.MemoryMiB, vm.DiskBytes)
	s.VMName, s.PausedMillis = vm.Name, 42
	if req.Stop {
		rep.Stage("stop")(nil)
		vm.Runtime.State = api.VMStopped
		if err := f.Store.UpdateVMRuntime(ctx, vm.ID, vm.Runtime); err != nil {
			return api.Snapshot{}, err
		}
	} else {
		rep.Stage("resume")(nil)
	}
	f.snaps[name] = s
	return s, nil
}

// newLocked makes a snapshot record with fake files and sizes.
func (f *Snapshots) newLocked(name, kind, imageID, imageName, engine string, vcpus, memMiB int, disk int64) api.Snapshot {
	f.seq++
	if engine == "" {
		engine = "qemu"
	}
	dir := "/fake/snapshots/" + name
	files := []api.SnapshotFile{
		{Role: "state", Path: dir + "/state", Size: 64 << 10},
		{Role: "memory", Path: dir + "/memory", Size: int64(max(memMiB, 1)) << 20},
		{Role: "system disk", Path: dir + "/rootfs", Size: 1 << 30},
		{Role: "work disk", Path: dir + "/work", Size: max(disk, 1<<30)},
	}
	s := api.Snapshot{ID: fmt.Sprintf("snap-%d", f.seq), Name: name, Kind: kind, ImageID: imageID, ImageName: imageName,
		Engine: engine, EngineVersion: "fake-1.0", VCPUs: max(vcpus, 1), MemoryMiB: max(memMiB, 1), DiskBytes: disk,
		Dir: dir, Files: files, CreatedAt: time.Now().UTC()}
	for _, fl := range files {
		s.SizeBytes += fl.Size / 4 // sparse
	}
	return s
}

func (f *Snapshots) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]api.Snapshot, 0, len(f.snaps))
	for _, s := range f.snaps {
		out = append(out, f.withChildrenLocked(ctx, s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *Snapshots) GetSnapshot(ctx context.Context, name string) (api.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snaps[name]
	if !ok {
		return api.Snapshot{}, snapNotFound(name)
	}
	return f.withChildrenLocked(ctx, s), nil
}

// withChildrenLocked sets s.Children to its forks still in the store.
func (f *Snapshots) withChildrenLocked(ctx context.Context, s api.Snapshot) api.Snapshot {
	s.Children = nil
	for _, n := range f.children[s.Name] {
		if _, err := f.Store.GetVM(ctx, n); err == nil {
			s.Children = append(s.Children, n)
		}
	}
	return s
}

func (f *Snapshots) DeleteSnapshot(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snaps[name]
	if !ok {
		return snapNotFound(name)
	}
	if s.Kind == api.SnapshotWarm {
		return api.FailedPrecondition("snapshot %s is image %s's warm snapshot", name, s.ImageName).
			WithFix("banger image unwarm " + s.ImageName)
	}
	if s = f.withChildrenLocked(ctx, s); len(s.Children) > 0 {
		return api.FailedPrecondition("snapshot %s still has %d live VMs started from it (%s)", name, len(s.Children), s.Children[0]).
			WithFix("banger vm delete " + s.Children[0])
	}
	delete(f.snaps, name)
	delete(f.children, name)
	return nil
}

func (f *Snapshots) Fork(ctx context.Context, req api.VMForkRequest, rep progress.Reporter) (api.VMForkResult, error) {
	if req.Count == 0 {
		req.Count = 1
	}
	if req.Count < 1 || req.Count > api.MaxForkCount {
		return api.VMForkResult{}, api.Invalid("fork count %d is not from 1 to %d", req.Count, api.MaxForkCount)
	}
	f.mu.Lock()
	f.init()
	s, ok := f.snaps[req.Source]
	f.mu.Unlock()
	if !ok {
		vm, err := f.Store.GetVM(ctx, req.Source)
		if err != nil {
			return api.VMForkResult{}, api.NotFound("no snapshot or VM named %q", req.Source).
				WithFix("banger snapshot list, banger vm list")
		}
		if s, err = f.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: vm.Name, Name: fmt.Sprintf("%s-fork-%d", vm.Name, time.Now().UnixNano()%100000)}, rep); err != nil {
			return api.VMForkResult{}, err
		}
	}
	if f.ForkFunc != nil {
		return f.ForkFunc(ctx, req, rep)
	}
	prefix := req.Name
	if prefix == "" {
		prefix = req.Source + "-fork"
	}
	var childNames []string
	if req.Count == 1 {
		childNames = []string{prefix}
	} else {
		for i := 1; i <= req.Count; i++ {
			childNames = append(childNames, fmt.Sprintf("%s-%d", prefix, i))
		}
	}
	res := api.VMForkResult{Snapshot: s.Name}
	undo := func() {
		for _, vm := range res.VMs {
			_ = f.Store.DeleteVM(context.Background(), vm.ID)
		}
	}
	for _, n := range childNames {
		if err := names.Validate(n); err != nil {
			undo()
			return api.VMForkResult{}, err
		}
		// the real one's stages; with several children each is prefixed "<child>: "
		prefix := ""
		if len(childNames) > 1 {
			prefix = n + ": "
		}
		done := rep.Stage(prefix + "restore")
		vm := api.VM{Name: n, ImageID: s.ImageID, ImageName: s.ImageName, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB,
			DiskBytes: s.DiskBytes, Origin: s.Name}
		vm.Runtime.State, vm.Runtime.Engine = api.VMRunning, s.Engine
		err := f.Store.CreateVM(ctx, &vm, store.Alloc{Subnet: config.Default().Subnet})
		done(err)
		if err != nil {
			undo()
			return api.VMForkResult{}, err
		}
		rep.Stage(prefix + "agent ready")(nil)
		vm.Origin = s.Name
		res.VMs = append(res.VMs, vm)
	}
	f.mu.Lock()
	f.children[s.Name] = append(f.children[s.Name], childNames...)
	f.mu.Unlock()
	return res, nil
}

func (f *Snapshots) WarmImage(ctx context.Context, req api.ImageWarmRequest, rep progress.Reporter) (api.Snapshot, error) {
	img, err := f.Store.GetImage(ctx, req.Image)
	if err != nil {
		return api.Snapshot{}, err
	}
	if req.Engine != "" && !slices.Contains([]string{"qemu", "firecracker"}, req.Engine) {
		return api.Snapshot{}, api.Invalid("unknown engine %q", req.Engine).WithFix("--engine qemu or --engine firecracker")
	}
	if f.WarmFunc != nil {
		return f.WarmFunc(ctx, req, rep)
	}
	for _, st := range []string{"boot", "agent ready", "pause", "save state", "capture disks"} {
		rep.Stage(st)(nil)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	for n, old := range f.snaps {
		if old.Kind == api.SnapshotWarm && old.ImageID == img.ID {
			delete(f.snaps, n)
		}
	}
	s := f.newLocked("warm-"+img.Name, api.SnapshotWarm, img.ID, img.Name, req.Engine, 1, 512, 0)
	f.snaps[s.Name] = s
	return s, nil
}

func (f *Snapshots) UnwarmImage(ctx context.Context, image string) error {
	img, err := f.Store.GetImage(ctx, image)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, s := range f.snaps {
		if s.Kind == api.SnapshotWarm && s.ImageID == img.ID {
			delete(f.snaps, n)
			return nil
		}
	}
	return api.NotFound("image %s has no warm snapshot", img.Name).WithFix("banger image warm " + img.Name)
}

func (f *Snapshots) WarmInfo(ctx context.Context) (map[string]api.WarmInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]api.WarmInfo{}
	for _, s := range f.snaps {
		if s.Kind == api.SnapshotWarm {
			out[s.ImageID] = api.WarmInfo{Snapshot: s.Name, Engine: s.Engine, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB,
				CreatedAt: s.CreatedAt, Usable: true}
		}
	}
	return out, nil
}
