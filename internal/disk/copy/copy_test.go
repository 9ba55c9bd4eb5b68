package copy_test

import (
	"testing"

	"banger/internal/disk"
	"banger/internal/disk/copy"
	"banger/internal/disk/disktest"
)

func TestConformance(t *testing.T) {
	disktest.Run(t, func(t *testing.T, dir string) disk.Driver { return copy.New() })
}

func TestInfo(t *testing.T) {
	info := copy.New().Info()
	if !info.Available || info.Instant || info.Format != "raw" || info.QEMUOnly || info.KernelState {
		t.Errorf("Info = %+v", info)
	}
}

func BenchmarkCreate2GiB(b *testing.B) {
	disktest.Bench(b, copy.New(), b.TempDir())
}
