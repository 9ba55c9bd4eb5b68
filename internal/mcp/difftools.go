package mcp

import (
	"context"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/workspace"
)

// maxToolPatch bounds the patch text a diff tool call returns.
const maxToolPatch = 1 << 20

type diffIn struct {
	VM    string `json:"vm" jsonschema:"the VM's name"`
	Repo  string `json:"repo,omitempty" jsonschema:"host path of the git repository given as the VM's workspace; the MCP server's working directory when empty"`
	Apply bool   `json:"apply,omitempty" jsonschema:"instead of only returning the patch, commit it as the new branch banger/VM in the repository (the user's current branch and working tree are not touched)"`
}

type diffOut struct {
	Patch     string             `json:"patch"`
	Bytes     int                `json:"bytes"`
	Truncated bool               `json:"truncated,omitempty"`
	Base      string             `json:"base"`
	Applied   *workspace.Applied `json:"applied,omitempty"`
}

func (s *Server) addDiffTools(srv *sdk.Server) {
	sdk.AddTool(srv, &sdk.Tool{Name: "diff",
		Description: "Show what changed in a VM's workspace (" + workspace.GuestDir + ", made by create_vm with workspace) " +
			"as a git patch: committed or not, new files included. With apply=true the changes become the new git branch " +
			"banger/VM in the user's repository for them to review and merge; nothing else in their repository changes.",
	}, s.diff)
}

func (s *Server) diff(ctx context.Context, _ *sdk.CallToolRequest, in diffIn) (*sdk.CallToolResult, diffOut, error) {
	if err := needVM(in.VM); err != nil {
		return nil, diffOut{}, err
	}
	dir := in.Repo
	if dir == "" {
		dir = "."
	}
	r, err := workspace.Open(ctx, dir)
	if err != nil {
		return nil, diffOut{}, err
	}
	base, err := r.Base(ctx, in.VM)
	if err != nil {
		return nil, diffOut{}, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, diffOut{}, err
	}
	patch, err := workspace.Diff(ctx, s.dialer(c, in.VM), base, 0)
	if err != nil {
		return nil, diffOut{}, err
	}
	out := diffOut{Bytes: len(patch), Base: base}
	if in.Apply {
		a, err := r.Apply(ctx, in.VM, patch)
		if err != nil {
			return nil, diffOut{}, err
		}
		out.Applied = &a
	}
	if len(patch) > maxToolPatch {
		patch, out.Truncated = patch[:maxToolPatch], true
	}
	out.Patch = strings.ToValidUTF8(string(patch), "\uFFFD")
	if out.Truncated {
		out.Patch += "\n[… patch truncated at 1 MiB; banger vm diff " + in.VM + " prints all of it]"
	}
	return nil, out, nil
}
