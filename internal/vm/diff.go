package vm

import (
	"context"
	"net"

	"banger/internal/workspace"
)

// maxViewDiff bounds the workspace diff the daemon reads for a view.
const maxViewDiff = 4 << 20

// Diff returns the changes in a running VM's workspace (vm create
// --workspace) since it was made, as a git patch, against the base the
// guest recorded: a read-only view (the web UI). The guest wrote all of
// it, base included; callers show it as text and never apply it (the CLI's
// vm diff --apply uses the host repository's own record of the base).
func (m *Manager) Diff(ctx context.Context, name string) ([]byte, error) {
	dial := func(ctx context.Context) (net.Conn, error) { return m.Exec(ctx, name) }
	return workspace.Diff(ctx, dial, "", maxViewDiff)
}
