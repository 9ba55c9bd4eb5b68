package vm

import (
	"context"
	"fmt"
	"strings"

	"banger/internal/api"
	"banger/internal/progress"
	"banger/internal/store"
)

// Warm images: `image warm` boots the image once in a temporary VM, waits
// until its agent and feature servers answer, snapshots it (kind warm,
// named warm-<image>) and deletes the VM. `vm create`/`vm run` of that image
// then restore from the snapshot unless --cold, or unless it cannot serve
// (another engine, shape or disk size asked; files missing, truncated or
// changed; an engine that refuses it) — then they boot cold and say why.

// warmName is the name of image's warm snapshot.
func warmName(image string) string { return "warm-" + image }

// WarmImage makes (or replaces) an image's warm snapshot.
func (m *Manager) WarmImage(ctx context.Context, req api.ImageWarmRequest, rep progress.Reporter) (api.Snapshot, error) {
	img, err := m.st.GetImage(ctx, req.Image)
	if err != nil {
		return api.Snapshot{}, err
	}
	engine := req.Engine
	if engine == "" {
		engine = m.defEngine
	}
	if _, err := m.snapshotter(engine); err != nil {
		return api.Snapshot{}, err
	}
	tmp := "warm-" + randomID()[:10]
	v, err := m.Create(ctx, api.VMCreateRequest{Name: tmp, Image: img.Name, Engine: engine, Cold: true}, rep)
	if err != nil {
		return api.Snapshot{}, fmt.Errorf("booting image %s once: %w", img.Name, err)
	}
	defer func() {
		c, cancel := bg()
		defer cancel()
		if err := m.Delete(c, v.Name, progress.Nop{}); err != nil {
			m.log.Error("deleting the vm an image warm booted", "vm", v.Name, "err", err)
		}
	}()
	v, unlock, err := m.lockedVM(ctx, v.Name)
	if err != nil {
		return api.Snapshot{}, err
	}
	row, err := m.snapshotLocked(ctx, &v, "warm-new-"+randomID()[:10], api.SnapshotWarm, rep)
	unlock()
	if err != nil {
		return api.Snapshot{}, err
	}
	// The old warm snapshot: removed, or, while VMs it started still run,
	// kept as an ordinary snapshot under a dated name.
	if old, err := m.st.GetSnapshot(ctx, warmName(img.Name)); err == nil {
		if len(old.Children) == 0 {
			if err := m.removeSnapshot(ctx, old); err != nil {
				m.log.Warn("removing the old warm snapshot", "snapshot", old.Name, "err", err)
			}
		} else {
			old.Kind = api.SnapshotVM
			old.Name = m.snapshotName(ctx, warmName(img.Name))
			if err := m.st.UpdateSnapshot(ctx, old); err != nil {
				m.log.Warn("renaming the old warm snapshot", "err", err)
			}
		}
	}
	row.Name, row.VMName = warmName(img.Name), ""
	if err := m.st.UpdateSnapshot(ctx, row); err != nil {
		m.removeSnapshotRow(ctx, row)
		return api.Snapshot{}, err
	}
	return row.Snapshot, nil
}

func (m *Manager) removeSnapshotRow(ctx context.Context, row store.SnapshotRow) {
	if err := m.st.DeleteSnapshot(ctx, row.ID); err == nil {
		m.removeSnapshotFiles(row)
	}
}

// UnwarmImage deletes an image's warm snapshot.
func (m *Manager) UnwarmImage(ctx context.Context, image string) error {
	img, err := m.st.GetImage(ctx, image)
	if err != nil {
		return err
	}
	row, err := m.st.GetSnapshot(ctx, warmName(img.Name))
	if api.IsNotFound(err) {
		return api.NotFound("image %q has no warm snapshot", img.Name).WithAction("image warm", img.Name)
	}
	if err != nil {
		return err
	}
	return m.removeSnapshot(ctx, row)
}

// WarmInfo maps image IDs to their warm snapshot.
func (m *Manager) WarmInfo(ctx context.Context) (map[string]api.WarmInfo, error) {
	rows, err := m.st.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]api.WarmInfo{}
	for _, r := range rows {
		if r.Kind != api.SnapshotWarm || r.State != store.SnapshotReady || r.Name != warmName(r.ImageName) {
			continue
		}
		w := api.WarmInfo{Snapshot: r.Name, Engine: r.Engine, VCPUs: r.VCPUs, MemoryMiB: r.MemoryMiB, CreatedAt: r.CreatedAt, Usable: true}
		if why := m.warmUnusable(r); why != "" {
			w.Usable, w.Reason = false, why
		}
		out[r.ImageID] = w
	}
	return out, nil
}

// warmUnusable says why r cannot serve a create now ("" when it can, as far
// as can be told without reading its files).
func (m *Manager) warmUnusable(r store.SnapshotRow) string {
	e, err := m.engine(r.Engine)
	if err != nil {
		return fmt.Sprintf("engine %s is not available", r.Engine)
	}
	if v := e.Info().Version; v != r.EngineVersion {
		return fmt.Sprintf("taken with %s %s; this host runs %s", r.Engine, r.EngineVersion, v)
	}
	if a := e.Info().Accel; r.Accel != "" && a != r.Accel {
		return fmt.Sprintf("taken under %s; this host runs %s", r.Accel, a)
	}
	return ""
}

// warmFor returns the warm snapshot a create of req should restore, or
// why it boots cold ("" reason and ok false: the image has none).
func (m *Manager) warmFor(ctx context.Context, req api.VMCreateRequest) (store.SnapshotRow, bool, string) {
	imgName := req.Image
	if imgName == "" {
		imgName = m.cfg.DefaultImage
	}
	img, err := m.st.GetImage(ctx, imgName)
	if err != nil {
		return store.SnapshotRow{}, false, ""
	}
	row, err := m.st.GetSnapshot(ctx, warmName(img.Name))
	if err != nil || row.Kind != api.SnapshotWarm || row.State != store.SnapshotReady {
		return store.SnapshotRow{}, false, ""
	}
	engine := req.Engine
	if engine == "" {
		engine = m.defEngine
	}
	var why []string
	if engine != row.Engine {
		why = append(why, fmt.Sprintf("it was taken with %s, this create uses %s", row.Engine, engine))
	}
	if req.VCPUs != 0 && req.VCPUs != row.VCPUs {
		why = append(why, fmt.Sprintf("it has %d vcpus, %d asked", row.VCPUs, req.VCPUs))
	}
	if req.MemoryMiB != 0 && req.MemoryMiB != row.MemoryMiB {
		why = append(why, fmt.Sprintf("it has %d MiB of memory, %d asked", row.MemoryMiB, req.MemoryMiB))
	}
	if req.DiskBytes != 0 && req.DiskBytes != row.DiskBytes {
		why = append(why, fmt.Sprintf("its work disk is %s, %s asked", humanBytes(row.DiskBytes), humanBytes(req.DiskBytes)))
	}
	if w := m.warmUnusable(row); w != "" {
		why = append(why, w)
	}
	if len(why) > 0 {
		return store.SnapshotRow{}, false, "the warm snapshot " + row.Name + " does not fit: " + strings.Join(why, "; ")
	}
	return row, true, ""
}
