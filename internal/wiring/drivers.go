package wiring

import (
	"context"
	"os"
	"path/filepath"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/disk"
	diskcopy "banger/internal/disk/copy"
	"banger/internal/disk/dmsnap"
	"banger/internal/disk/qcow2"
	"banger/internal/disk/reflink"
	"banger/internal/image"
	"banger/internal/image/build"
	"banger/internal/netw"
	"banger/internal/vm"
)

// diskDriver is the system disk driver of that name.
func diskDriver(name string) disk.Driver {
	switch name {
	case disk.DMSnap:
		return dmsnap.New()
	case disk.Reflink:
		return reflink.New()
	case disk.Qcow2:
		return qcow2.New("")
	default:
		return diskcopy.New()
	}
}

// workDisks clones work-seeds (reflink when possible, else a sparse copy)
// and grows them.
type workDisks struct{}

func (workDisks) CloneAndGrow(ctx context.Context, seed, dst string, size int64) error {
	return disk.CloneAndGrow(ctx, seed, dst, size, disk.Clone)
}

func (workDisks) Grow(ctx context.Context, path string, size int64) error {
	return disk.Grow(ctx, path, size)
}

// agentBin is the banger-agent baked into new images: the config's, else
// the one next to bangerd (the build that matches this daemon).
func agentBin(cfg config.Config) string {
	if cfg.AgentBin != "" {
		return cfg.AgentBin
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Join(filepath.Dir(exe), "banger-agent")
	}
	return "banger-agent"
}

// The wiring between the VM and image services, checked at compile time.
var (
	_ build.Guests           = (*vm.Manager)(nil)
	_ daemon.ImageService    = (*image.Service)(nil)
	_ daemon.VMService       = (*vm.Manager)(nil)
	_ daemon.SnapshotService = (*vm.Manager)(nil)
	_ hostNetwork            = (*netw.Manager)(nil)
)
