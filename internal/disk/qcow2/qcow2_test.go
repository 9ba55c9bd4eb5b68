package qcow2_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/disk"
	"banger/internal/disk/disktest"
	"banger/internal/disk/qcow2"
)

func TestConformance(t *testing.T) {
	disktest.RequireTools(t, "qemu-img", "qemu-io")
	disktest.Run(t, func(t *testing.T, dir string) disk.Driver { return qcow2.New("") })
}

func TestInfo(t *testing.T) {
	tests := []struct {
		name    string
		bin     string
		avail   bool
		inWhy   string
		needBin bool
	}{
		{"on PATH", "", true, "qemu-img", true},
		{"missing", "/nonexistent/qemu-img", false, "apt-get install qemu-utils", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needBin {
				disktest.RequireTools(t, "qemu-img")
			}
			info := qcow2.New(tt.bin).Info()
			if info.Available != tt.avail || !strings.Contains(info.Reason, tt.inWhy) {
				t.Errorf("Info = %+v, want available=%v reason containing %q", info, tt.avail, tt.inWhy)
			}
			if info.Format != "qcow2" || !info.QEMUOnly || !info.Instant {
				t.Errorf("Info = %+v", info)
			}
		})
	}
}

// The overlay records the base by absolute path, even when Create was
// given a relative one, so the disk works from any working directory.
func TestBackingPathIsAbsolute(t *testing.T) {
	disktest.RequireTools(t, "qemu-img", "mkfs.ext4")
	dir := t.TempDir()
	t.Chdir(dir)
	disktest.MakeExt4(t, filepath.Join(dir, "base.ext4"), "16M")
	dk, err := qcow2.New("").Create(t.Context(), "base.ext4", filepath.Join(dir, "o.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", dk.Path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	want := "backing file: " + filepath.Join(dir, "base.ext4")
	if !strings.Contains(string(out), want) {
		t.Errorf("qemu-img info lacks %q:\n%s", want, out)
	}
}

func BenchmarkCreate2GiB(b *testing.B) {
	disktest.RequireTools(b, "qemu-img")
	disktest.Bench(b, qcow2.New(""), b.TempDir())
}
