package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/progress"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
)

// These tests run the real Firecracker driver against fctest's fake
// firecracker (this test binary, re-executed), whose guest behaves like a
// real x86 Firecracker guest: its console stays empty until it boots, its
// agent answers on the hybrid vsock, a power-off only halts it and a
// reboot (reboot=k) ends the process.

// fakeFCEnv makes this test binary run as the fake firecracker.
const fakeFCEnv = "BANGER_VM_FAKE_FIRECRACKER"

func TestMain(m *testing.M) {
	if os.Getenv(fakeFCEnv) != "" {
		os.Exit(fctest.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// withFirecracker adds the fake-backed Firecracker engine to f and lets
// the test image boot on it.
func withFirecracker(t *testing.T, f *fixture) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeFCEnv, "1")
	ctx := context.Background()
	img, err := f.st.GetImage(ctx, "img")
	if err != nil {
		t.Fatal(err)
	}
	img.Vmlinux = filepath.Join(f.dir, "vmlinux")
	img.Engines = []string{vmm.QEMU, vmm.Firecracker}
	for _, p := range []string{img.Vmlinux, img.Initrd} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.st.UpdateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	f.m.engines[vmm.Firecracker] = firecracker.New(firecracker.Config{Binary: exe, Version: fctest.Version})
	f.m.cfg.ReadyTimeout = config.Duration(10 * time.Second)
}

// A Firecracker VM stops quickly: the guest is asked to reboot (which ends
// Firecracker), not to power off (which would only halt it and leave the
// stop to wait out its timeout and SIGKILL).
func TestFirecrackerStopEndsWithoutKill(t *testing.T) {
	f := newFixture(t)
	withFirecracker(t, f)
	ctx := context.Background()
	v, err := f.m.Create(ctx, api.VMCreateRequest{Name: "fc", Engine: vmm.Firecracker}, progress.Nop{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := f.m.Stop(ctx, "fc", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	t.Logf("vm stop of a firecracker VM took %v", took)
	if took > 5*time.Second {
		t.Errorf("stop took %v: the guest was not ended, the stop timed out", took)
	}
	serial, _ := os.ReadFile(v.Runtime.SerialLogPath)
	if !strings.Contains(string(serial), "reboot: Restarting system") {
		t.Errorf("the guest did not reboot itself; serial log: %q", serial)
	}
	got, _ := f.st.GetVM(ctx, "fc")
	if got.Runtime.State != api.VMStopped {
		t.Errorf("state after stop = %s", got.Runtime.State)
	}
	if err := f.m.Delete(ctx, "fc", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

// The boot stage waits for the guest's own console output: Firecracker's
// log lines never count, so a guest that never writes fails the stage with
// "wrote nothing" and the VM is undone.
func TestFirecrackerBootStageWaitsForTheGuest(t *testing.T) {
	f := newFixture(t)
	withFirecracker(t, f)
	f.m.cfg.ReadyTimeout = config.Duration(1500 * time.Millisecond)
	t.Setenv(fctest.EnvSilentGuest, "1")
	rec := &progress.Recorder{}
	_, err := f.m.Create(context.Background(), api.VMCreateRequest{Name: "mute", Engine: vmm.Firecracker}, rec)
	if err == nil || !strings.Contains(err.Error(), "wrote nothing to its console") {
		t.Fatalf("create = %v, want the boot stage to fail with the guest silent", err)
	}
	if names := rec.Names(); names[len(names)-1] != StageBoot {
		t.Errorf("stages = %v, want the failure in %q", names, StageBoot)
	}
	f.assertEmpty(t)
}

// A VM whose engine the daemon has not loaded (firecracker's binary moved,
// its probe failed) but whose process still runs is kept by reconcile —
// state, tap and process untouched, the reason shown — and every
// operation that would tear it down or boot it again refuses with that
// reason.
func TestReconcileKeepsVMsOfAnUnloadedEngine(t *testing.T) {
	f := newFixture(t)
	f.m.unavailable = map[string]string{vmm.Firecracker: "firecracker not found on PATH"}
	ctx := context.Background()
	v, err := f.m.Create(ctx, api.VMCreateRequest{Name: "orphan", NoStart: true}, progress.Nop{})
	if err != nil {
		t.Fatal(err)
	}
	guest := exec.Command("sleep", "300") // stands in for the running firecracker
	if err := guest.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guest.Process.Kill(); guest.Wait() })
	h, _ := readHandles(v.Runtime.VMDir)
	h.Engine, h.Tap = vmm.Firecracker, "bgtap-orphan"
	h.VMM = vmm.Handles{PID: guest.Process.Pid, APISocket: v.Runtime.APISocket}
	writeHandles(v.Runtime.VMDir, h)
	v.Runtime.State, v.Runtime.Engine = api.VMRunning, vmm.Firecracker
	f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)

	var deleted []string
	f.net.deleteHook = func(tap string) { deleted = append(deleted, tap) }
	if err := f.m.Reconcile(ctx, func() ([]string, error) { return []string{"bgtap-orphan", "bgtap-leaked"}, nil }); err != nil {
		t.Fatal(err)
	}
	got, _ := f.st.GetVM(ctx, "orphan")
	if got.Runtime.State != api.VMRunning || !strings.Contains(got.Runtime.LastError, "firecracker not found on PATH") {
		t.Fatalf("after reconcile: state %s, reason %q; want running with the engine's reason", got.Runtime.State, got.Runtime.LastError)
	}
	if len(deleted) != 1 || deleted[0] != "bgtap-leaked" {
		t.Errorf("taps deleted = %v, want only the leaked one", deleted)
	}
	if !f.net.inUse["bgtap-orphan"] {
		t.Error("the kept VM's tap is not claimed")
	}
	if d, err := f.m.Detail(ctx, "orphan"); err != nil || !d.Alive || d.Handles == nil {
		t.Errorf("detail = %+v, %v; want alive with its handles", d, err)
	}
	ops := map[string]func() error{
		"stop":   func() error { _, err := f.m.Stop(ctx, "orphan", progress.Nop{}); return err },
		"start":  func() error { _, err := f.m.Start(ctx, "orphan", progress.Nop{}); return err },
		"delete": func() error { return f.m.Delete(ctx, "orphan", progress.Nop{}) },
	}
	for name, op := range ops {
		err := op()
		if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not loaded") || api.AsError(err).Fix == "" {
			t.Errorf("%s = %v, want FailedPrecondition saying the engine is not loaded, with a fix", name, err)
		}
	}
	if err := guest.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the guest process was touched: %v", err)
	}
	if got, _ := f.st.GetVM(ctx, "orphan"); got.Runtime.State != api.VMRunning {
		t.Errorf("state after refused operations = %s", got.Runtime.State)
	}
	if _, err := os.Stat(v.Runtime.SystemDisk); err != nil {
		t.Errorf("system disk removed: %v", err)
	}

	// Once the process is gone, the VM can be deleted as usual.
	guest.Process.Kill()
	guest.Wait()
	if err := f.m.Delete(ctx, "orphan", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

// An engine's vCPU limit is checked when the request is validated, as
// Invalid with a fix, not left to fail late in the engine.
func TestCheckResourcesEngineVCPULimit(t *testing.T) {
	f := newFixture(t)
	img := api.Image{WorkSeedSize: 16 << 20}
	v := api.VM{Name: "x", VCPUs: 2, MemoryMiB: 256, DiskBytes: 64 << 20}
	err := f.m.checkResources(v, img, vmm.Info{Name: vmm.Firecracker, MaxVCPUs: 1})
	if !api.IsInvalid(err) || !strings.Contains(err.Error(), "firecracker runs at most 1 vcpus") || api.AsError(err).Fix == "" {
		t.Errorf("checkResources = %v, want Invalid naming the engine's limit, with a fix", err)
	}
	if v.VCPUs <= runtime.NumCPU() {
		if err := f.m.checkResources(v, img, vmm.Info{Name: vmm.Firecracker, MaxVCPUs: firecracker.MaxVCPUs}); err != nil {
			t.Errorf("checkResources within the limit = %v", err)
		}
	}
}
