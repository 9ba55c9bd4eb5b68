package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/names"
	"banger/internal/progress"
	"banger/internal/revert"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Snapshots, forks and warm images (daemon.SnapshotService).
//
// A snapshot is taken from a running VM: its engine pauses the guest and
// flushes its disks (Pause), writes device state and memory into the
// snapshot's dir (Save), the disk driver snapshots the system disk and the
// work disk is cloned (reflinks on the pool), and the VM resumes. The
// snapshot's files never change afterwards: children map its memory
// copy-on-write (the engine's business) and get their own disks cloned
// from its disks. A child is a VM like any other (row, IP, MAC, tap, DNS
// name, disks, handles) whose guest wakes with its parent's identity until
// the agent's identity op gives it its own (identity.go).

// Snapshot and fork stage names.
const (
	StagePause    = "pause"
	StageSave     = "save state"
	StageCapture  = "capture disks"
	StageResume   = "resume"
	StageRestore  = "restore"
	StageIdentity = "identity"
)

// maxForkCount bounds one fork.
const maxForkCount = api.MaxForkCount

// snapFiles is the orchestrator's record of a snapshot's files (the store
// keeps it opaque).
type snapFiles struct {
	Engine     vmm.Snapshot `json:"engine"`
	SystemDisk disk.Disk    `json:"system_disk"`
	WorkDisk   string       `json:"work_disk"`
	// HostCAs are the host CA files the parent's guest had (its children
	// have them too).
	HostCAs []string `json:"host_cas,omitempty"`
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (m *Manager) snapshotter(engine string) (vmm.Snapshotter, error) {
	e, err := m.engine(engine)
	if err != nil {
		return nil, err
	}
	sn, ok := e.(vmm.Snapshotter)
	if !ok || !e.Info().Snapshots {
		return nil, api.FailedPrecondition("the %s engine cannot take or restore snapshots on this host", engine).
			WithFix("banger doctor says what this host lacks; VMs of another engine may snapshot").WithAction("doctor")
	}
	return sn, nil
}

// CreateSnapshot snapshots a running VM.
func (m *Manager) CreateSnapshot(ctx context.Context, req api.SnapshotCreateRequest, rep progress.Reporter) (api.Snapshot, error) {
	if req.VM == "" {
		return api.Snapshot{}, api.Invalid("snapshot create: no vm named").WithFix("banger snapshot create VM [NAME]")
	}
	if req.Name != "" {
		if err := names.Validate(req.Name); err != nil {
			return api.Snapshot{}, err
		}
	}
	v, unlock, err := m.lockedVM(ctx, req.VM)
	if err != nil {
		return api.Snapshot{}, err
	}
	defer unlock()
	name := req.Name
	if name == "" {
		name = m.snapshotName(ctx, v.Name)
	}
	row, err := m.snapshotLocked(ctx, &v, name, api.SnapshotVM, rep)
	if err != nil {
		return api.Snapshot{}, err
	}
	if req.Stop {
		done := rep.Stage(StageStop)
		err := m.stopLocked(ctx, &v, "")
		done(err)
		if err != nil {
			return row.Snapshot, fmt.Errorf("snapshot %s was taken, but stopping vm %s failed: %w", row.Name, v.Name, err)
		}
	}
	return row.Snapshot, nil
}

// snapshotName makes a free snapshot name from a VM's name.
func (m *Manager) snapshotName(ctx context.Context, base string) string {
	base = strings.TrimRight(base[:min(len(base), names.MaxLen-9)], "-")
	for {
		n := base + "-" + randomID()[:8]
		if _, err := m.st.GetSnapshot(ctx, n); api.IsNotFound(err) {
			return n
		}
	}
}

// snapshotLocked snapshots the running v (its lock held) as name. The VM
// runs on afterwards; on failure it is resumed and nothing is kept.
func (m *Manager) snapshotLocked(ctx context.Context, v *api.VM, name, kind string, rep progress.Reporter) (store.SnapshotRow, error) {
	h, alive := m.vmAlive(*v)
	if !alive || v.Runtime.State != api.VMRunning {
		return store.SnapshotRow{}, api.FailedPrecondition("vm %q is %s: only a running vm can be snapshotted (a snapshot is its memory as well as its disks)", v.Name, v.Runtime.State).
			WithFix("start it first; to keep a stopped vm's disks as an image, use banger image promote").WithAction("vm start", v.Name)
	}
	sn, err := m.snapshotter(h.Engine)
	if err != nil {
		return store.SnapshotRow{}, err
	}
	img, err := m.st.GetImage(ctx, v.ImageID)
	if err != nil {
		return store.SnapshotRow{}, fmt.Errorf("vm %s: its image: %w", v.Name, err)
	}
	log := m.log.With("vm", v.Name, "snapshot", name)
	r := revert.New()
	defer r.Fail()

	id := randomID()
	dir := filepath.Join(m.snapsDir, id)
	row := store.SnapshotRow{
		Snapshot: api.Snapshot{
			ID: id, Name: name, Kind: kind, VMName: v.Name, ImageID: img.ID, ImageName: img.Name,
			Engine: h.Engine, VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB, DiskBytes: v.DiskBytes,
			Features: img.Features, Dir: dir,
		},
		VMID: v.ID, State: store.SnapshotCreating,
	}
	if err := m.st.CreateSnapshot(ctx, &row); err != nil {
		return store.SnapshotRow{}, err
	}
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if err := m.st.DeleteSnapshot(c, id); err != nil {
			log.Error("reverting the snapshot record", "err", err)
		}
	})
	if err := os.Mkdir(dir, 0o700); err != nil {
		return store.SnapshotRow{}, fmt.Errorf("creating snapshot dir: %w", err)
	}
	r.Add(func() { os.RemoveAll(dir) })

	done := rep.Stage(StagePause)
	start := time.Now()
	if err := sn.Pause(ctx, h.VMM); err != nil {
		done(err)
		return store.SnapshotRow{}, fmt.Errorf("pausing vm %s: %w", v.Name, err)
	}
	resumed := false
	resume := func() error {
		if resumed {
			return nil
		}
		resumed = true
		c, cancel := bg()
		defer cancel()
		return sn.Resume(c, h.VMM)
	}
	defer func() {
		if err := resume(); err != nil {
			log.Error("resuming the vm after a failed snapshot", "err", err)
		}
	}()
	done(nil)
	m.stageHook("snapshot", StagePause)

	done = rep.Stage(StageSave)
	es, err := sn.Save(ctx, h.VMM, dir)
	if err != nil {
		done(err)
		return store.SnapshotRow{}, fmt.Errorf("saving vm %s: %w", v.Name, err)
	}
	rep.Detail(fmt.Sprintf("state %s, memory %s", humanBytes(es.StateSize), humanBytes(es.MemorySize)))
	done(nil)
	m.stageHook("snapshot", StageSave)

	done = rep.Stage(StageCapture)
	ext := filepath.Ext(h.SystemDisk.Path)
	if ext == "" {
		ext = ".raw"
	}
	sys, err := m.disk.Snapshot(ctx, h.SystemDisk, filepath.Join(dir, "system"+ext))
	if err != nil {
		done(err)
		return store.SnapshotRow{}, fmt.Errorf("capturing the system disk: %w", err)
	}
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if err := m.disk.Remove(c, sys); err != nil {
			log.Error("reverting the snapshot's system disk", "err", err)
		}
	})
	work := filepath.Join(dir, "work.ext4")
	if err := disk.Clone(v.Runtime.WorkDisk, work); err != nil {
		done(err)
		return store.SnapshotRow{}, fmt.Errorf("capturing the work disk: %w", err)
	}
	done(nil)
	m.stageHook("snapshot", StageCapture)

	done = rep.Stage(StageResume)
	if err := resume(); err != nil {
		done(err)
		return store.SnapshotRow{}, fmt.Errorf("resuming vm %s: %w", v.Name, err)
	}
	paused := time.Since(start)
	rep.Detail(fmt.Sprintf("paused %d ms", paused.Milliseconds()))
	done(nil)

	rec := snapFiles{Engine: es, SystemDisk: sys, WorkDisk: work, HostCAs: guestCAs(*v)}
	row.Record, _ = json.Marshal(rec)
	row.EngineVersion, row.Accel = es.Version, es.Accel
	row.PausedMillis = paused.Milliseconds()
	row.Files, row.SizeBytes = snapshotFiles(rec)
	row.State = store.SnapshotReady
	if err := m.st.UpdateSnapshot(ctx, row); err != nil {
		return store.SnapshotRow{}, err
	}
	r.Success()
	log.Info("snapshot taken", "paused_ms", paused.Milliseconds(), "size", row.SizeBytes)
	return row, nil
}

// snapshotFiles lists a snapshot's files and the space they take.
func snapshotFiles(rec snapFiles) ([]api.SnapshotFile, int64) {
	var files []api.SnapshotFile
	var total int64
	add := func(role, path string) {
		if path == "" {
			return
		}
		f := api.SnapshotFile{Role: role, Path: path}
		if fi, err := os.Stat(path); err == nil {
			f.Size = fi.Size()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		files = append(files, f)
	}
	add("state", rec.Engine.State)
	add("memory", rec.Engine.Memory)
	add("system disk", rec.SystemDisk.Path)
	add("work disk", rec.WorkDisk)
	return files, total
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// ListSnapshots returns every snapshot.
func (m *Manager) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	rows, err := m.st.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Snapshot, 0, len(rows))
	for _, r := range rows {
		if r.State == store.SnapshotReady {
			out = append(out, r.Snapshot)
		}
	}
	return out, nil
}

// GetSnapshot returns one snapshot.
func (m *Manager) GetSnapshot(ctx context.Context, name string) (api.Snapshot, error) {
	r, err := m.readySnapshot(ctx, name)
	return r.Snapshot, err
}

func (m *Manager) readySnapshot(ctx context.Context, name string) (store.SnapshotRow, error) {
	r, err := m.st.GetSnapshot(ctx, name)
	if err != nil {
		return store.SnapshotRow{}, err
	}
	if r.State != store.SnapshotReady {
		return store.SnapshotRow{}, api.FailedPrecondition("snapshot %q is still being taken", r.Name)
	}
	return r, nil
}

// DeleteSnapshot deletes a snapshot no live VM was started from.
func (m *Manager) DeleteSnapshot(ctx context.Context, name string) error {
	r, err := m.st.GetSnapshot(ctx, name)
	if err != nil {
		return err
	}
	if r.Kind == api.SnapshotWarm {
		return api.FailedPrecondition("snapshot %q is image %s's warm snapshot", r.Name, r.ImageName).
			WithAction("image unwarm", r.ImageName)
	}
	return m.removeSnapshot(ctx, r)
}

// removeSnapshot deletes r's row (refused while it has children), then its
// files.
func (m *Manager) removeSnapshot(ctx context.Context, r store.SnapshotRow) error {
	if err := m.st.DeleteSnapshot(ctx, r.ID); err != nil {
		if api.IsFailedPrecondition(err) {
			return api.FailedPrecondition("snapshot %q: %w", r.Name, err).WithFix("delete the vms started from it first").
				WithAction("vm delete", r.Children...)
		}
		return err
	}
	m.removeSnapshotFiles(r)
	m.log.Info("snapshot deleted", "snapshot", r.Name)
	return nil
}

func (m *Manager) removeSnapshotFiles(r store.SnapshotRow) {
	var rec snapFiles
	if err := json.Unmarshal(r.Record, &rec); err == nil {
		if e, err := m.engine(rec.Engine.Engine); err == nil {
			if sn, ok := e.(vmm.Snapshotter); ok {
				sn.Forget(rec.Engine)
			}
		}
		if rec.SystemDisk.Path != "" {
			c, cancel := bg()
			if err := m.disk.Remove(c, rec.SystemDisk); err != nil {
				m.log.Warn("removing a snapshot's system disk", "snapshot", r.Name, "err", err)
			}
			cancel()
		}
	}
	// The dir is always banger's own, under the snapshots dir.
	if dir := filepath.Join(m.snapsDir, r.ID); r.ID != "" {
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.log.Warn("removing a snapshot's files", "snapshot", r.Name, "err", err)
		}
	}
}

// preload has the engine load a warm snapshot's memory in the background
// (QEMU: its sealed template), so the first create after a daemon start
// restores as fast as the next ones. Only warm snapshots: each preloaded
// one holds its memory in the daemon.
func (m *Manager) preload(r store.SnapshotRow) {
	var rec snapFiles
	if json.Unmarshal(r.Record, &rec) != nil {
		return
	}
	e, err := m.engine(rec.Engine.Engine)
	if err != nil {
		return
	}
	if p, ok := e.(interface{ Preload(vmm.Snapshot) }); ok {
		go p.Preload(rec.Engine)
	}
}

// reconcileSnapshots, at daemon start: a snapshot caught half-taken by a
// crash is removed, and its VM resumed if the crash left it paused.
func (m *Manager) reconcileSnapshots(ctx context.Context) {
	rows, err := m.st.ListSnapshots(ctx)
	if err != nil {
		m.log.Error("reconcile: listing snapshots", "err", err)
		return
	}
	for _, r := range rows {
		if r.State == store.SnapshotReady {
			if r.Kind == api.SnapshotWarm {
				m.preload(r)
			}
			continue
		}
		m.log.Warn("reconcile: removing a snapshot the daemon stopped while taking", "snapshot", r.Name)
		if v, err := m.st.GetVM(ctx, r.VMID); err == nil {
			if h, alive := m.vmAlive(v); alive {
				if sn, err := m.snapshotter(h.Engine); err == nil {
					if st, err := sn.State(ctx, h.VMM); err == nil && st == vmm.StatePaused {
						if err := sn.Resume(ctx, h.VMM); err != nil {
							m.log.Error("reconcile: resuming the paused parent", "vm", v.Name, "err", err)
						} else {
							m.log.Info("reconcile: resumed the vm a snapshot left paused", "vm", v.Name)
						}
					}
				}
			}
		}
		if err := m.st.DeleteSnapshot(ctx, r.ID); err != nil {
			m.log.Error("reconcile: deleting a half-taken snapshot", "snapshot", r.Name, "err", err)
			continue
		}
		m.removeSnapshotFiles(r)
	}
	// Dirs no row names (a crash between mkdir and the row, or after the
	// row went) go too.
	ents, _ := os.ReadDir(m.snapsDir)
	known := map[string]bool{}
	for _, r := range rows {
		known[r.ID] = true
	}
	for _, e := range ents {
		if !known[e.Name()] {
			m.log.Warn("reconcile: removing a snapshot dir no snapshot owns", "dir", e.Name())
			_ = os.RemoveAll(filepath.Join(m.snapsDir, e.Name()))
		}
	}
}
