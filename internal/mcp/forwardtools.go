package mcp

import (
	"context"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
)

type forwardIn struct {
	VM        string `json:"vm" jsonschema:"the VM's name"`
	GuestPort int    `json:"guest_port" jsonschema:"TCP port a server listens on inside the VM"`
	HostPort  int    `json:"host_port,omitempty" jsonschema:"port on the host's 127.0.0.1; a free one is picked when 0"`
}

type unforwardIn struct {
	VM       string `json:"vm" jsonschema:"the VM's name"`
	HostPort int    `json:"host_port" jsonschema:"the host port of the forward to end"`
}

func (s *Server) addForwardTools(srv *sdk.Server) {
	sdk.AddTool(srv, &sdk.Tool{Name: "port_forward",
		Description: "Make a server inside a VM reachable from the host at http://127.0.0.1:PORT (returned as url), " +
			"e.g. a dev server for the user to open in a browser. It lasts until remove_port_forward or delete_vm. " +
			"The guest server must listen on the guest's loopback or on all addresses; a connection fails while nothing listens.",
	}, s.portForward)
	sdk.AddTool(srv, &sdk.Tool{Name: "remove_port_forward",
		Description: "End a port forward made by port_forward.",
	}, s.removeForward)
}

func (s *Server) portForward(ctx context.Context, _ *sdk.CallToolRequest, in forwardIn) (*sdk.CallToolResult, api.Forward, error) {
	if err := needVM(in.VM); err != nil {
		return nil, api.Forward{}, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, api.Forward{}, err
	}
	f, err := c.AddForward(ctx, in.VM, api.ForwardRequest{HostAddr: "127.0.0.1", HostPort: in.HostPort, GuestPort: in.GuestPort})
	return nil, f, err
}

func (s *Server) removeForward(ctx context.Context, _ *sdk.CallToolRequest, in unforwardIn) (*sdk.CallToolResult, okOut, error) {
	if err := needVM(in.VM); err != nil {
		return nil, okOut{}, err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, okOut{}, err
	}
	if err := c.RemoveForward(ctx, in.VM, in.HostPort); err != nil {
		return nil, okOut{}, err
	}
	return nil, okOut{OK: true}, nil
}
