// Package mcp is `banger mcp`: a Model Context Protocol server over stdio
// (the official Go SDK) that gives an AI agent banger's VMs as tools. It
// talks to the daemon through internal/client exactly like the CLI, so it
// can do what the user running it can do, and nothing more.
//
// Tool errors (a missing VM, a stopped one, a bad path) are returned as tool
// results with isError set, carrying banger's fix hint in their text, so the
// model can correct itself; the SDK answers unknown tools and arguments that
// do not match a tool's schema with protocol errors. Output a guest prints
// is bounded (maxOutput per stream, a marker saying how much was cut).
package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
	"banger/internal/client"
)

// Connect returns a daemon client (the CLI starts the daemon if needed).
type Connect func(ctx context.Context) (*client.Client, error)

// Server holds what the tools need.
type Server struct {
	connect Connect
}

// New returns the MCP server with every banger tool added.
func New(connect Connect, version string) *sdk.Server {
	s := &Server{connect: connect}
	srv := sdk.NewServer(&sdk.Implementation{Name: "banger", Title: "banger microVMs", Version: version},
		&sdk.ServerOptions{Instructions: instructions})
	s.addVMTools(srv)
	s.addExecTools(srv)
	s.addFileTools(srv)
	s.addForwardTools(srv)
	s.addDiffTools(srv)
	s.addSnapshotTools(srv)
	return srv
}

// Run serves one session on in/out (the process's stdin and stdout) until
// the client goes away.
func Run(ctx context.Context, connect Connect, version string, in io.Reader, out io.Writer) error {
	return New(connect, version).Run(ctx, &sdk.IOTransport{Reader: io.NopCloser(in), Writer: nopWriteCloser{out}})
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

const instructions = `banger runs disposable Linux microVMs (Debian, root inside) on this machine.
Typical flow: create_vm (remember its name) → exec / write_file / read_file / copy_in / copy_out →
port_forward to open a guest web server in a browser → delete_vm when done. VMs persist until deleted.
Commands run as root in /root unless cwd is given. Errors include a "fix:" hint; follow it.`

func (s *Server) client(ctx context.Context) (*client.Client, error) {
	return s.connect(ctx)
}

// dialer opens agent streams to vm through the daemon.
func (s *Server) dialer(c *client.Client, vm string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) { return c.Exec(ctx, vm) }
}

// follow waits for an operation and decodes its result into out (may be nil).
func follow(ctx context.Context, c *client.Client, op api.Operation, out any) error {
	final, err := c.Follow(ctx, op, nil)
	if err != nil {
		return err
	}
	if out != nil && len(final.Result) > 0 {
		if err := json.Unmarshal(final.Result, out); err != nil {
			return fmt.Errorf("decoding the result of %s: %w", op.Kind, err)
		}
	}
	return nil
}

// needVM rejects an empty vm argument with a hint.
func needVM(vm string) error {
	if vm == "" {
		return api.Invalid("the \"vm\" argument is empty").WithFix("pass a VM name from list_vms or create_vm")
	}
	return nil
}
