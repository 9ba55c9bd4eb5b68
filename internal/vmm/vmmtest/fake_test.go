package vmmtest_test

import (
	"os"
	"path/filepath"
	"testing"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// The fake keeps the contract it stands in for, as a QEMU-like engine and
// as a Firecracker-like one (vmlinux, vCPU limit, reboot).
func TestFakeConformance(t *testing.T) {
	for _, caps := range []vmm.Info{
		{},
		{Name: vmm.Firecracker, Accel: "kvm", AgentTransport: vmm.TransportVsockHybrid, NeedsVmlinux: true,
			MaxVCPUs: 32, GuestShutdown: vmm.ShutdownReboot},
	} {
		f := vmmtest.NewFake(caps)
		t.Run(f.Info().Name, func(t *testing.T) {
			vmmtest.Run(t, vmmtest.Target{Engine: f, Spec: FakeSpec})
		})
	}
	f := vmmtest.NewFake(vmm.Info{})
	f.IgnoreStop = true
	t.Run("ignore-stop", func(t *testing.T) {
		vmmtest.Run(t, vmmtest.Target{Engine: f, Spec: FakeSpec, StopTimeout: 300e6})
	})
}

// FakeSpec names empty boot files made in a temporary directory and puts
// the engine's paths in dir.
func FakeSpec(t *testing.T, dir string) vmm.Spec {
	boot := t.TempDir()
	spec := vmm.Spec{
		Name: "fake1", VMDir: dir, VCPUs: 2, MemoryMiB: 256,
		Kernel: filepath.Join(boot, "vmlinuz"), Vmlinux: filepath.Join(boot, "vmlinux"),
		Disks: []vmm.Disk{{ID: "root", Path: filepath.Join(boot, "root.ext4"), Format: "raw"}},
		Tap:   "tap0", MAC: "06:00:00:00:00:01", VsockCID: 3,
		APISocket: filepath.Join(dir, "api.sock"), AgentSocket: filepath.Join(dir, "agent.sock"),
		SerialLog: filepath.Join(dir, "serial.log"), EngineLog: filepath.Join(dir, "engine.log"),
	}
	for _, p := range []string{spec.Kernel, spec.Vmlinux, spec.Disks[0].Path} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return spec
}
