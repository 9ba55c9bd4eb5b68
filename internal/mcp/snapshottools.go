package mcp

import (
	"context"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
)

type snapshotVMIn struct {
	VM   string `json:"vm" jsonschema:"the running VM to snapshot"`
	Name string `json:"name,omitempty" jsonschema:"the snapshot's name; generated from the VM's when empty"`
}

// SnapshotSummary is what the snapshot tools return about a snapshot.
type SnapshotSummary struct {
	Name      string   `json:"name"`
	VM        string   `json:"vm,omitempty"`
	Image     string   `json:"image"`
	SizeBytes int64    `json:"size_bytes"`
	Children  []string `json:"children,omitempty"`
}

type forkVMIn struct {
	Source     string `json:"source" jsonschema:"a running VM or a snapshot to start the new VMs from"`
	Count      int    `json:"count,omitempty" jsonschema:"how many VMs (1 to 64; default 1)"`
	Name       string `json:"name,omitempty" jsonschema:"the new VM's name (count 1), or the prefix of NAME-1, NAME-2, … (count > 1)"`
	TTLSeconds int64  `json:"ttl_seconds,omitempty" jsonschema:"delete each new VM this many seconds after it is made; 0 = no limit"`
}

type forkVMOut struct {
	Snapshot string      `json:"snapshot"`
	VMs      []VMSummary `json:"vms"`
}

type snapshotIn struct {
	Snapshot string `json:"snapshot" jsonschema:"the snapshot's name"`
}

func (s *Server) addSnapshotTools(srv *sdk.Server) {
	sdk.AddTool(srv, &sdk.Tool{Name: "snapshot_vm",
		Description: "Save a running VM's memory, processes and disks as a snapshot (it pauses well under a second, then " +
			"runs on). fork_vm starts new VMs from the snapshot in about a second each, exactly as the VM was.",
	}, s.snapshotVM)
	sdk.AddTool(srv, &sdk.Tool{Name: "fork_vm",
		Description: "Start new VMs from a snapshot or from a running VM (snapshotted first), in about a second each: " +
			"each has the source's files, processes and memory as they were, with its own name, IP address, " +
			"hostname, machine-id and SSH host keys. Use it to try several approaches in parallel from one prepared state.",
	}, s.forkVM)
	sdk.AddTool(srv, &sdk.Tool{Name: "delete_snapshot",
		Description: "Delete a snapshot and its files. Refused while VMs started from it still exist: delete them first.",
	}, s.deleteSnapshot)
}

func snapSummary(sn api.Snapshot) SnapshotSummary {
	return SnapshotSummary{Name: sn.Name, VM: sn.VMName, Image: sn.ImageName, SizeBytes: sn.SizeBytes, Children: sn.Children}
}

func (s *Server) snapshotVM(ctx context.Context, _ *sdk.CallToolRequest, in snapshotVMIn) (*sdk.CallToolResult, SnapshotSummary, error) {
	if err := needVM(in.VM); err != nil {
		return nil, SnapshotSummary{}, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, SnapshotSummary{}, err
	}
	op, err := c.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: in.VM, Name: in.Name})
	if err != nil {
		return nil, SnapshotSummary{}, err
	}
	var sn api.Snapshot
	if err := follow(ctx, c, op, &sn); err != nil {
		return nil, SnapshotSummary{}, err
	}
	return nil, snapSummary(sn), nil
}

func (s *Server) forkVM(ctx context.Context, _ *sdk.CallToolRequest, in forkVMIn) (*sdk.CallToolResult, forkVMOut, error) {
	if in.Source == "" {
		return nil, forkVMOut{}, api.Invalid("fork_vm: no source").WithFix("pass a running VM's or a snapshot's name as \"source\"")
	}
	if in.Count < 0 || in.Count > api.MaxForkCount || in.TTLSeconds < 0 {
		return nil, forkVMOut{}, api.Invalid("fork_vm: count must be 1 to %d and ttl_seconds not negative", api.MaxForkCount)
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, forkVMOut{}, err
	}
	op, err := c.ForkVM(ctx, api.VMForkRequest{Source: in.Source, Count: in.Count, Name: in.Name, TTLSeconds: in.TTLSeconds})
	if err != nil {
		return nil, forkVMOut{}, err
	}
	var res api.VMForkResult
	if err := follow(ctx, c, op, &res); err != nil {
		return nil, forkVMOut{}, err
	}
	out := forkVMOut{Snapshot: res.Snapshot, VMs: []VMSummary{}}
	for _, v := range res.VMs {
		out.VMs = append(out.VMs, summary(v))
	}
	return nil, out, nil
}

func (s *Server) deleteSnapshot(ctx context.Context, _ *sdk.CallToolRequest, in snapshotIn) (*sdk.CallToolResult, okOut, error) {
	if in.Snapshot == "" {
		return nil, okOut{}, api.Invalid("delete_snapshot: no snapshot named").WithFix("pass its name as \"snapshot\"")
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, okOut{}, err
	}
	if err := c.DeleteSnapshot(ctx, in.Snapshot); err != nil {
		return nil, okOut{}, err
	}
	return nil, okOut{OK: true}, nil
}
