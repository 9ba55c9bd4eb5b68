package disktest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"banger/internal/disk"
)

var _ disk.Driver = (*Fake)(nil)

// Fake is a disk driver with pretend kernel state, for the tests of callers
// that must keep and tear down a driver's state without reading it
// (dm-snapshot, the real one, needs device-mapper, which many hosts lack).
// Its disks are sparse copies; while attached a disk's State is
// {"fake_attached":"<path>"} and the path is remembered in memory. A
// record carrying any State counts as attached (its kernel state, as far
// as the record knows, is still there). It passes Run.
type Fake struct {
	disk.RawFile

	mu       sync.Mutex
	attached map[string]bool // by disk path; guarded by mu
	detached []disk.Disk     // every record Detach got; guarded by mu
}

// FakeName is the Fake driver's name.
const FakeName = "fake"

// Info reports a raw driver with kernel state that grows and snapshots.
func (f *Fake) Info() disk.Info {
	return disk.Info{Name: FakeName, Available: true, Reason: "test fake", Format: "raw",
		KernelState: true, Grows: true, Snapshots: true}
}

// Create copies base to dst and attaches it.
func (f *Fake) Create(ctx context.Context, base, dst string) (disk.Disk, error) {
	if err := disk.CheckPaths(base, dst); err != nil {
		return disk.Disk{}, err
	}
	if err := disk.SparseCopy(base, dst); err != nil {
		return disk.Disk{}, fmt.Errorf("creating fake disk %s: %w", dst, err)
	}
	return f.Attach(ctx, disk.Disk{Driver: FakeName, Path: dst, Format: "raw", Files: []string{dst}})
}

// Attach marks the disk attached.
func (f *Fake) Attach(ctx context.Context, d disk.Disk) (disk.Disk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.attached == nil {
		f.attached = map[string]bool{}
	}
	f.attached[d.Path] = true
	d.State, _ = json.Marshal(map[string]string{"fake_attached": d.Path})
	return d, nil
}

// Attached reports the in-memory mark, or any State on the record.
func (f *Fake) Attached(d disk.Disk) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attached[d.Path] || len(d.State) > 0
}

// Detach records d and clears the mark and the State.
func (f *Fake) Detach(ctx context.Context, d disk.Disk) (disk.Disk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = append(f.detached, d)
	delete(f.attached, d.Path)
	d.State = nil
	return d, nil
}

// Remove detaches and deletes the files.
func (f *Fake) Remove(ctx context.Context, d disk.Disk) error {
	if _, err := f.Detach(ctx, d); err != nil {
		return err
	}
	return disk.RemoveFiles(d)
}

// Snapshot copies the disk to dst, detached.
func (f *Fake) Snapshot(ctx context.Context, d disk.Disk, dst string) (disk.Disk, error) {
	if err := disk.SparseCopy(d.Path, dst); err != nil {
		return disk.Disk{}, err
	}
	return disk.Snapshotted(d, dst), nil
}

// DetachedRecords returns the records Detach was given, oldest first.
func (f *Fake) DetachedRecords() []disk.Disk {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]disk.Disk(nil), f.detached...)
}
