package vm

import (
	"context"

	"banger/internal/api"
	"banger/internal/progress"
)

// Snapshots, forks and warm images (daemon.SnapshotService).

func (m *Manager) CreateSnapshot(ctx context.Context, req api.SnapshotCreateRequest, rep progress.Reporter) (api.Snapshot, error) {
	return api.Snapshot{}, api.Unavailable("snapshots are not built yet")
}

func (m *Manager) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) { return nil, nil }

func (m *Manager) GetSnapshot(ctx context.Context, name string) (api.Snapshot, error) {
	return api.Snapshot{}, api.NotFound("snapshot %q not found", name)
}

func (m *Manager) DeleteSnapshot(ctx context.Context, name string) error {
	return api.NotFound("snapshot %q not found", name)
}

func (m *Manager) Fork(ctx context.Context, req api.VMForkRequest, rep progress.Reporter) (api.VMForkResult, error) {
	return api.VMForkResult{}, api.Unavailable("fork is not built yet")
}

func (m *Manager) WarmImage(ctx context.Context, req api.ImageWarmRequest, rep progress.Reporter) (api.Snapshot, error) {
	return api.Snapshot{}, api.Unavailable("image warm is not built yet")
}

func (m *Manager) UnwarmImage(ctx context.Context, image string) error {
	return api.NotFound("image %q has no warm snapshot", image)
}

func (m *Manager) WarmInfo(ctx context.Context) (map[string]api.WarmInfo, error) { return nil, nil }
