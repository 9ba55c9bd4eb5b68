package vmmtest_test

import (
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
			vmmtest.Run(t, vmmtest.Target{Engine: f, Spec: vmmtest.Spec})
		})
	}
	f := vmmtest.NewFake(vmm.Info{})
	f.IgnoreStop = true
	t.Run("ignore-stop", func(t *testing.T) {
		vmmtest.Run(t, vmmtest.Target{Engine: f, Spec: vmmtest.Spec, StopTimeout: 300e6})
	})
}
