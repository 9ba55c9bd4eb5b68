package vm

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/disk"
	diskcopy "banger/internal/disk/copy"
	"banger/internal/progress"
	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// These tests drive the orchestrator with a real store, real disks (sparse
// copies of real ext4 images, grown with e2fsck/resize2fs) and a scripted
// engine and network, to prove every failure path leaves nothing behind.
// Real guests boot in test/live.

// fakeNet records taps handed out.
type fakeNet struct {
	mu         sync.Mutex
	inUse      map[string]bool
	hosts      map[string]netip.Addr
	n          int
	deleteHook func(tap string) // sees DeleteTap calls, when set
}

func newFakeNet() *fakeNet {
	return &fakeNet{inUse: map[string]bool{}, hosts: map[string]netip.Addr{}}
}

func (f *fakeNet) AcquireTap(context.Context) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	name := "tap-pool-" + string(rune('0'+f.n))
	f.inUse[name] = true
	return name, true, nil
}
func (f *fakeNet) ReleaseTap(_ context.Context, n string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.inUse, n)
	return nil
}
func (f *fakeNet) MarkInUse(n string) { f.mu.Lock(); f.inUse[n] = true; f.mu.Unlock() }
func (f *fakeNet) DeleteTap(_ context.Context, n string) error {
	if f.deleteHook != nil {
		f.deleteHook(n)
	}
	return f.ReleaseTap(nil, n)
}
func (f *fakeNet) Gateway() netip.Addr                   { return netip.MustParseAddr("10.203.0.1") }
func (f *fakeNet) Netmask() string                       { return "255.255.255.0" }
func (f *fakeNet) SetHost(n string, ip netip.Addr)       { f.mu.Lock(); f.hosts[n] = ip; f.mu.Unlock() }
func (f *fakeNet) RemoveHost(n string)                   { f.mu.Lock(); delete(f.hosts, n); f.mu.Unlock() }
func (f *fakeNet) TapStats(string) (int64, int64, error) { return 0, 0, nil }
func (f *fakeNet) taps() int                             { f.mu.Lock(); defer f.mu.Unlock(); return len(f.inUse) }
func (f *fakeNet) hostCount() int                        { f.mu.Lock(); defer f.mu.Unlock(); return len(f.hosts) }

type work struct{}

func (work) CloneAndGrow(ctx context.Context, seed, dst string, size int64) error {
	return disk.CloneAndGrow(ctx, seed, dst, size, disk.SparseCopy)
}
func (work) Grow(ctx context.Context, p string, size int64) error { return disk.Grow(ctx, p, size) }

type fixture struct {
	m   *Manager
	st  *store.Store
	net *fakeNet
	eng *vmmtest.Fake
	dir string
}

func mkext4(t *testing.T, path, size string) {
	t.Helper()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "hello"), []byte("hi\n"), 0o644)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, path, size).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4 unavailable (apt-get install e2fsprogs): %v %s", err, out)
	}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	img := api.Image{Name: "img", Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"),
		Rootfs: filepath.Join(dir, "rootfs.ext4"), WorkSeed: filepath.Join(dir, "seed.ext4"),
		Engines: []string{vmm.QEMU}, Managed: true, WorkSeedSize: 16 << 20}
	mkext4(t, img.Rootfs, "32M")
	mkext4(t, img.WorkSeed, "16M")
	for _, p := range []string{img.Kernel, img.Initrd} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.ReadyTimeout = config.Duration(1500 * time.Millisecond)
	cfg.DefaultImage = "img"
	cfg.VCPUs, cfg.Memory, cfg.DiskSize = 1, 256<<20, 64<<20
	// A guest whose agent never answers.
	eng := vmmtest.NewFake(vmm.Info{Name: vmm.QEMU})
	eng.Console = "Linux version test\n"
	f := &fixture{st: st, net: newFakeNet(), eng: eng, dir: dir}
	t.Cleanup(func() { f.eng.KillAll(ctx) })
	m, err := New(Options{Config: cfg, Store: st, Engines: map[string]vmm.Engine{vmm.QEMU: f.eng},
		DefaultEngine: vmm.QEMU, Disk: diskcopy.New(), WorkDisks: work{}, Net: f.net,
		VMsDir: filepath.Join(dir, "vms")})
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

// stoppedVM creates a stopped VM and returns it with its handles file.
func (f *fixture) stoppedVM(t *testing.T, name string) (api.VM, *Handles) {
	t.Helper()
	v, err := f.m.Create(context.Background(), api.VMCreateRequest{Name: name, NoStart: true}, progress.Nop{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := readHandles(v.Runtime.VMDir)
	if err != nil || h == nil {
		t.Fatalf("handles.json: %v %v", h, err)
	}
	return v, h
}

// assertEmpty checks that no VM row, VM dir, tap or DNS name is left.
func (f *fixture) assertEmpty(t *testing.T) {
	t.Helper()
	vms, err := f.st.ListVMs(context.Background())
	if err != nil || len(vms) != 0 {
		t.Errorf("vm rows left: %v %v", vms, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.dir, "vms")); len(ents) != 0 {
		t.Errorf("vm dirs left: %v", ents)
	}
	if n := f.net.taps(); n != 0 {
		t.Errorf("%d taps still in use", n)
	}
	if n := f.net.hostCount(); n != 0 {
		t.Errorf("%d DNS names left", n)
	}
}

func TestCreateRevertsWhenTheEngineFails(t *testing.T) {
	f := newFixture(t)
	f.eng.StartErr = errors.New("qemu exited: could not open tap")
	rec := &progress.Recorder{}
	_, err := f.m.Create(context.Background(), api.VMCreateRequest{Name: "a"}, rec)
	if err == nil {
		t.Fatal("create succeeded with a failing engine")
	}
	want := []string{StageAllocate, StageSystemDisk, StageWorkDisk, StageNetwork, StageEngine}
	if got := rec.Names(); len(got) != len(want) || got[len(got)-1] != StageEngine {
		t.Fatalf("stages = %v, want %v", got, want)
	}
	f.assertEmpty(t)
}

func TestCreateTimesOutWithDiagnosticsAndCleansUp(t *testing.T) {
	f := newFixture(t)
	rec := &progress.Recorder{}
	_, err := f.m.Create(context.Background(), api.VMCreateRequest{Name: "slow"}, rec)
	if err == nil {
		t.Fatal("create succeeded though the agent never answered")
	}
	if !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "diagnostics saved to") {
		t.Fatalf("error lacks the reason or the diagnostics path: %v", err)
	}
	dumped := false
	for _, l := range rec.Lines {
		if strings.Contains(l, "Linux version test") {
			dumped = true
		}
	}
	if !dumped {
		t.Errorf("the serial log tail was not in the diagnostics output: %v", rec.Lines)
	}
	if f.eng.Running() != 0 {
		t.Errorf("engine process left running")
	}
	f.assertEmpty(t)
}

func TestCreateCancelledReverts(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := f.m.Create(ctx, api.VMCreateRequest{Name: "ctrlc"}, progress.Nop{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	f.assertEmpty(t)
}

func TestCreateRejectsBadInput(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cases := []struct {
		name string
		req  api.VMCreateRequest
		kind api.Kind
	}{
		{"bad name", api.VMCreateRequest{Name: "Bad_Name"}, api.KindInvalid},
		{"unknown image", api.VMCreateRequest{Name: "x", Image: "nope"}, api.KindNotFound},
		{"too many vcpus", api.VMCreateRequest{Name: "x", VCPUs: 4096}, api.KindInvalid},
		{"too much memory", api.VMCreateRequest{Name: "x", MemoryMiB: 1 << 30}, api.KindInvalid},
		{"tiny memory", api.VMCreateRequest{Name: "x", MemoryMiB: 16}, api.KindInvalid},
		{"disk smaller than seed", api.VMCreateRequest{Name: "x", DiskBytes: 1 << 20}, api.KindInvalid},
		{"unknown engine", api.VMCreateRequest{Name: "x", Engine: "firecracker"}, api.KindFailedPrecondition},
		{"unknown wait", api.VMCreateRequest{Name: "x", Wait: "sshd"}, api.KindInvalid},
		{"wait for a feature the image lacks", api.VMCreateRequest{Name: "x", Wait: "opencode"}, api.KindInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.m.Create(ctx, c.req, progress.Nop{})
			if api.KindOf(err) != c.kind {
				t.Fatalf("err = %v (kind %s), want kind %s", err, api.KindOf(err), c.kind)
			}
			var ae *api.Error
			if errors.As(err, &ae) && ae.Fix == "" {
				t.Errorf("error without a fix: %v", err)
			}
			f.assertEmpty(t)
		})
	}
}

// A VM recorded as running whose engine is gone is stopped by reconcile,
// with the reason, and its tap returned.
func TestReconcileStopsDeadVMs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v, h := f.stoppedVM(t, "dead")
	h.Tap, h.VMM.PID, h.VMM.APISocket = "tap-pool-9", 999999, v.Runtime.APISocket
	writeHandles(v.Runtime.VMDir, h)
	f.net.MarkInUse("tap-pool-9")
	v.Runtime.State = api.VMRunning
	f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)

	if err := f.m.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := f.st.GetVM(ctx, "dead")
	if got.Runtime.State != api.VMStopped || got.Runtime.LastError == "" {
		t.Fatalf("after reconcile: state %s, reason %q; want stopped with a reason", got.Runtime.State, got.Runtime.LastError)
	}
	if f.net.taps() != 0 {
		t.Fatal("reconcile kept the dead VM's tap")
	}
	if err := f.m.Delete(ctx, "dead", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

// An interrupted delete is finished by reconcile.
func TestReconcileFinishesDelete(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v, err := f.m.Create(ctx, api.VMCreateRequest{Name: "half", NoStart: true}, progress.Nop{})
	if err != nil {
		t.Fatal(err)
	}
	v.Runtime.State = api.VMDeleting
	f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)
	if err := f.m.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

func TestParseHandlesRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "{", `{"vmm":{"pid":-4}}`, "null x"} {
		if _, err := ParseHandles([]byte(in)); err == nil {
			t.Errorf("ParseHandles(%q) accepted garbage", in)
		}
	}
}

func FuzzParseHandles(f *testing.F) {
	f.Add([]byte(`{"engine":"qemu","vmm":{"pid":12,"api_socket":"/x"},"tap":"tap-pool-0","system_disk":{"driver":"copy","path":"/d"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHandles(data)
		if err == nil && h.VMM.PID < 0 {
			t.Fatal("negative pid accepted")
		}
	})
}
