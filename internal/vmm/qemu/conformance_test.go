package qemu

import (
	"path/filepath"
	"testing"
	"time"

	"banger/internal/testimage"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// TestIntegrationConformance holds the driver to the engine contract with
// real guests under TCG, one at a time: the cached test image's kernel and
// initrd, its root filesystem opened read-only, a tap in a network
// namespace.
func TestIntegrationConformance(t *testing.T) {
	requireBoot(t)
	img := testimage.Get(t)
	cfg := Config{Binary: DefaultBinary, Accel: "tcg", TSCkHz: hostTSCkHz(t), TapNetns: tapInNetns(t, "bgt0")}
	vmmtest.Run(t, vmmtest.Target{
		Engine: New(cfg),
		Spec: func(t *testing.T, dir string) vmm.Spec {
			return vmm.Spec{
				Name: "conf" + randHex(3), VMDir: dir, VCPUs: 1, MemoryMiB: 256, UID: testUID, GID: testUID,
				Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: "root=/dev/vda ro",
				Disks: []vmm.Disk{{ID: "root", Path: img.Rootfs, Format: "raw", ReadOnly: true}},
				Tap:   "bgt0", MAC: "06:00:ac:1e:00:0a",
				APISocket: filepath.Join(dir, "qmp.sock"), AgentSocket: filepath.Join(dir, "agent.sock"),
				SerialLog: filepath.Join(dir, "serial.log"), EngineLog: filepath.Join(dir, "qemu.log"),
			}
		},
		BootTimeout: 90 * time.Second,
		Confined:    true,
	})
}
