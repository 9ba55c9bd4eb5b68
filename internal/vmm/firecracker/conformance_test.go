package firecracker

import (
	"path/filepath"
	"testing"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// The driver keeps the engine contract, run against fctest's fake binary.
func TestConformance(t *testing.T) {
	e, _ := fakeEngine(t)
	vmmtest.Run(t, vmmtest.Target{Engine: e, Spec: func(t *testing.T, dir string) vmm.Spec {
		spec := fakeSpec(t) // boot files in their own directory
		spec.VMDir = dir
		spec.APISocket, spec.AgentSocket = filepath.Join(dir, "fc.sock"), filepath.Join(dir, "agent.sock")
		spec.SerialLog, spec.EngineLog = filepath.Join(dir, "serial.log"), filepath.Join(dir, "firecracker.log")
		spec.MetricsPath = filepath.Join(dir, "metrics.json")
		return spec
	}})
}
