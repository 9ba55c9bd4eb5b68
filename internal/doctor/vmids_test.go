package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/config"
)

func TestVMIDsCheck(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\nvmx:x:1900000005:5::/:/bin/false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := idFiles
	t.Cleanup(func() { idFiles = old })
	idFiles = []string{passwd}
	cfg := config.Default()
	if ch := vmIDsCheck(cfg); ch.Status != api.CheckFail || !strings.Contains(ch.Detail, `"vmx" with id 1900000005`) || ch.Fix == "" {
		t.Errorf("colliding range: %+v", ch)
	}
	cfg.VMUIDBase = 1950000000
	if ch := vmIDsCheck(cfg); ch.Status != api.CheckOK {
		t.Errorf("free range: %+v", ch)
	}
}

func TestConfinementCheck(t *testing.T) {
	cfg := config.Default()
	cfg.JailerBin = "/opt/fc/jailer"
	if ch := confinementCheck(cfg, "/opt/fc/firecracker"); ch.Status != api.CheckOK || !strings.Contains(ch.Detail, "/opt/fc/jailer") {
		t.Errorf("configured jailer: %+v", ch)
	}
	cfg.JailerBin, cfg.FirecrackerUnjailed = "", true
	t.Setenv("PATH", t.TempDir())
	if ch := confinementCheck(cfg, filepath.Join(t.TempDir(), "firecracker")); ch.Status != api.CheckWarn || !strings.Contains(ch.Detail, "as root") {
		t.Errorf("unjailed: %+v", ch)
	}
}
