package vm

import (
	"context"

	"banger/internal/api"
	"banger/internal/progress"
)

// resetIdentity gives a restored guest its own identity through its agent.
func (m *Manager) resetIdentity(ctx context.Context, v *api.VM, h *Handles, rep progress.Reporter) error {
	return api.Unavailable("identity reset is not wired yet")
}
