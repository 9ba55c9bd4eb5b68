package mcp

import (
	"context"
	"fmt"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
	"banger/internal/workspace"
)

// VMSummary is what the VM tools return about a VM.
type VMSummary struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Image     string `json:"image"`
	IP        string `json:"ip,omitempty"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int    `json:"memory_mib"`
	// ExpiresAt is when its TTL deletes (or stops) it, RFC 3339; IdleStop
	// how long idle before it is stopped.
	ExpiresAt string `json:"expires_at,omitempty"`
	IdleStop  string `json:"idle_stop,omitempty"`
}

func summary(v api.VM) VMSummary {
	s := VMSummary{Name: v.Name, State: string(v.Runtime.State), Image: v.ImageName,
		IP: v.Runtime.GuestIP, VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB}
	if lt := v.Lifetime; lt != nil {
		if !lt.ExpiresAt.IsZero() {
			s.ExpiresAt = lt.ExpiresAt.UTC().Format(time.RFC3339)
		}
		if lt.IdleStop > 0 {
			s.IdleStop = lt.IdleStop.String()
		}
	}
	return s
}

type listVMsOut struct {
	VMs []VMSummary `json:"vms"`
}

type createVMIn struct {
	Name      string `json:"name,omitempty" jsonschema:"VM name (lowercase letters, digits, dashes); generated when empty"`
	Image     string `json:"image,omitempty" jsonschema:"image to boot; the default image when empty"`
	VCPUs     int    `json:"vcpus,omitempty" jsonschema:"virtual CPUs; the configured default when 0"`
	MemoryMiB int    `json:"memory_mib,omitempty" jsonschema:"memory in MiB; the configured default when 0"`
	DiskGiB   int    `json:"disk_gib,omitempty" jsonschema:"work disk (/root) size in GiB; the configured default when 0"`
	// lifetimes (the daemon carries them out even when this client is gone)
	TTLSeconds      int64  `json:"ttl_seconds,omitempty" jsonschema:"delete the VM this many seconds after it is created (or stop it, with ttl_action stop); 0 = no limit. Set one so a forgotten VM does not linger"`
	TTLAction       string `json:"ttl_action,omitempty" jsonschema:"what the end of ttl_seconds does: delete (default) or stop"`
	Workspace       string `json:"workspace,omitempty" jsonschema:"host path of a git repository to copy into the VM at /root/work (uncommitted and untracked files included); get the changes back with the diff tool"`
	IdleStopSeconds int64  `json:"idle_stop_seconds,omitempty" jsonschema:"stop the VM after this many seconds without exec, file or port-forward activity, network traffic or CPU use; 0 = never"`
}

type vmIn struct {
	VM string `json:"vm" jsonschema:"the VM's name"`
}

type okOut struct {
	OK bool `json:"ok"`
}

func (s *Server) addVMTools(srv *sdk.Server) {
	sdk.AddTool(srv, &sdk.Tool{Name: "list_vms",
		Description: "List every banger VM with its state (running, stopped, …), image and IP address. " +
			"Use it to find a VM's name before exec or file tools.",
	}, s.listVMs)
	sdk.AddTool(srv, &sdk.Tool{Name: "create_vm",
		Description: "Create and boot a fresh disposable Linux microVM (Debian, you are root inside) and wait until " +
			"commands can run in it. Returns its name: pass that as \"vm\" to the other tools. Takes tens of seconds. " +
			"Delete it with delete_vm when done.",
	}, s.createVM)
	sdk.AddTool(srv, &sdk.Tool{Name: "delete_vm",
		Description: "Stop and delete a VM with its disks and port forwards. Everything inside it is lost; copy out what you need first.",
	}, s.deleteVM)
}

func (s *Server) listVMs(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, listVMsOut, error) {
	c, err := s.client(ctx)
	if err != nil {
		return nil, listVMsOut{}, err
	}
	vms, err := c.ListVMs(ctx)
	if err != nil {
		return nil, listVMsOut{}, err
	}
	out := listVMsOut{VMs: []VMSummary{}}
	for _, v := range vms {
		out.VMs = append(out.VMs, summary(v))
	}
	return nil, out, nil
}

func (s *Server) createVM(ctx context.Context, _ *sdk.CallToolRequest, in createVMIn) (*sdk.CallToolResult, VMSummary, error) {
	if in.VCPUs < 0 || in.MemoryMiB < 0 || in.DiskGiB < 0 {
		return nil, VMSummary{}, api.Invalid("vcpus, memory_mib and disk_gib must not be negative")
	}
	var repo *workspace.Repo
	if in.Workspace != "" {
		r, err := workspace.Open(ctx, in.Workspace)
		if err != nil {
			return nil, VMSummary{}, err
		}
		repo = &r
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, VMSummary{}, err
	}
	op, err := c.CreateVM(ctx, api.VMCreateRequest{Name: in.Name, Image: in.Image, VCPUs: in.VCPUs,
		MemoryMiB: in.MemoryMiB, DiskBytes: int64(in.DiskGiB) << 30, Wait: api.WaitAgent,
		TTLSeconds: in.TTLSeconds, TTLAction: in.TTLAction, IdleStopSeconds: in.IdleStopSeconds})
	if err != nil {
		return nil, VMSummary{}, err
	}
	var vm api.VM
	if err := follow(ctx, c, op, &vm); err != nil {
		return nil, VMSummary{}, err
	}
	if repo != nil {
		if _, err := workspace.Push(ctx, s.dialer(c, vm.Name), *repo, vm.Name); err != nil {
			if op, derr := c.DeleteVM(context.WithoutCancel(ctx), vm.Name); derr == nil {
				follow(context.WithoutCancel(ctx), c, op, nil)
			}
			return nil, VMSummary{}, fmt.Errorf("workspace: %w (vm %s deleted)", err, vm.Name)
		}
	}
	return nil, summary(vm), nil
}

func (s *Server) deleteVM(ctx context.Context, _ *sdk.CallToolRequest, in vmIn) (*sdk.CallToolResult, okOut, error) {
	if err := needVM(in.VM); err != nil {
		return nil, okOut{}, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, okOut{}, err
	}
	op, err := c.DeleteVM(ctx, in.VM)
	if err != nil {
		return nil, okOut{}, err
	}
	if err := follow(ctx, c, op, nil); err != nil {
		return nil, okOut{}, err
	}
	return nil, okOut{OK: true}, nil
}
