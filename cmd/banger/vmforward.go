package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/forward"
	"banger/internal/termsafe"
)

func vmPortForwardCmd(e *env) *cobra.Command {
	var detach, remove bool
	cmd := &cobra.Command{
		Use:   "port-forward VM [HOST_ADDR:]HOST_PORT:GUEST_PORT",
		Short: "Forward a host port to a port inside a VM through its guest agent",
		Long: "Listens on HOST_ADDR:HOST_PORT (127.0.0.1 unless given; HOST_PORT 0 picks a free port) and\n" +
			"connects each connection to GUEST_PORT on the guest's loopback through the guest agent (no SSH,\n" +
			"no bridge address needed). It runs until Ctrl-C. With --detach the daemon holds the forward: it\n" +
			"is listed by vm show and ends with the VM, or with --remove VM HOST_PORT. A guest port nothing\n" +
			"listens on fails that connection only; the forward stays up.",
		Example: "  banger vm port-forward myvm 8080:80\n  banger vm port-forward --detach myvm 0:3000\n  banger vm port-forward --remove myvm 8080",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if remove {
				port, err := strconv.Atoi(args[1])
				if err != nil {
					return api.Invalid("--remove wants the host port, got %q", args[1])
				}
				_, err = call(ctx, e, func(c *client.Client) (struct{}, error) {
					return struct{}{}, c.RemoveForward(ctx, args[0], port)
				})
				return err
			}
			req, err := forward.ParseSpec(args[1])
			if err != nil {
				return err
			}
			if detach {
				return show(ctx, e, func(c *client.Client) (api.Forward, error) { return c.AddForward(ctx, args[0], req) },
					func(w io.Writer, f api.Forward) { fmt.Fprintln(w, f.URL) })
			}
			return e.portForward(ctx, args[0], req)
		},
	}
	cmd.Flags().BoolVar(&detach, "detach", false, "let the daemon hold the forward (listed by vm show, ended with the VM)")
	cmd.Flags().BoolVar(&remove, "remove", false, "end the daemon-held forward on host port (VM HOST_PORT)")
	return cmd
}

// portForward forwards from this process until SIGINT/SIGTERM.
func (e *env) portForward(ctx context.Context, name string, req api.ForwardRequest) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	d, err := c.GetVM(ctx, name)
	if err != nil {
		return err
	}
	if d.VM.Runtime.State != api.VMRunning {
		return api.FailedPrecondition("vm %s is %s, not running", name, d.VM.Runtime.State).WithAction("vm start", name)
	}
	l, err := forward.Listen(req)
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	f := api.Forward{VM: name, HostAddr: req.HostAddr, HostPort: port, GuestPort: req.GuestPort,
		URL: "http://" + net.JoinHostPort(req.HostAddr, strconv.Itoa(port))}
	if e.jsonOut {
		if err := e.printJSON(f); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(e.stdout, f.URL)
	}
	fmt.Fprintf(e.stderr, "forwarding %s to port %d in %s; Ctrl-C to stop\n", l.Addr(), req.GuestPort, name)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return forward.Serve(ctx, l, execDialer(c, name), req.GuestPort, func(err error) {
		fmt.Fprintln(e.stderr, termsafe.String(err.Error()))
	})
}
