// Package forward forwards host TCP ports to guest ports through the guest
// agent (its dial op): `banger vm port-forward` in the CLI's process, and
// the daemon-held forwards of `--detach`. Each accepted host connection
// opens one agent stream; the guest connects to its own loopback port.
//
// Loopback is the default host address; another address must be asked for
// by the user. A guest port nothing listens on fails that connection only
// (its error goes to OnError), the listener stays up.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"banger/internal/agent"
	"banger/internal/api"
)

// ParseSpec parses [HOST_ADDR:]HOST_PORT:GUEST_PORT (HOST_ADDR an IP,
// "[::1]" style for IPv6; 127.0.0.1 when omitted; HOST_PORT 0 picks a free
// port).
func ParseSpec(s string) (api.ForwardRequest, error) {
	bad := func(why string) (api.ForwardRequest, error) {
		return api.ForwardRequest{}, api.Invalid("port forward %q: %s", s, why).
			WithFix("write it as [HOST_ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80")
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return bad("no ':' between the host and guest ports")
	}
	hostPart, guestPart := s[:i], s[i+1:]
	guest, err := strconv.ParseUint(guestPart, 10, 16)
	if err != nil || guest == 0 {
		return bad("guest port " + strconv.Quote(guestPart) + " is not a port between 1 and 65535")
	}
	req := api.ForwardRequest{HostAddr: "127.0.0.1", GuestPort: int(guest)}
	if j := strings.LastIndexByte(hostPart, ':'); j >= 0 {
		req.HostAddr = strings.Trim(hostPart[:j], "[]")
		hostPart = hostPart[j+1:]
		if _, err := netip.ParseAddr(req.HostAddr); err != nil {
			return bad("host address " + strconv.Quote(req.HostAddr) + " is not an IP address")
		}
	}
	host, err := strconv.ParseUint(hostPart, 10, 16)
	if err != nil {
		return bad("host port " + strconv.Quote(hostPart) + " is not a port between 0 and 65535")
	}
	req.HostPort = int(host)
	return req, nil
}

// Listen listens on the request's host address and port, with errors that
// say what to do.
func Listen(req api.ForwardRequest) (net.Listener, error) {
	addr := net.JoinHostPort(req.HostAddr, strconv.Itoa(req.HostPort))
	l, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, api.FailedPrecondition("host port %s is already in use", addr).
			WithFix("pick another host port, or 0 for a free one")
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return nil, api.Invalid("host address %s is not an address of this host", req.HostAddr)
	case errors.Is(err, syscall.EACCES):
		return nil, api.FailedPrecondition("listening on %s needs privileges", addr).WithFix("use a host port above 1023")
	case err != nil:
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return l, nil
}

// Dialer opens a stream speaking the agent protocol to the VM's guest agent.
type Dialer = func(ctx context.Context) (net.Conn, error)

// Serve accepts connections on l until ctx ends or l is closed and forwards
// each to guestPort in the guest. onErr (may be nil) hears each failed
// connection. Serve closes l and waits for its connections to end.
func Serve(ctx context.Context, l net.Listener, dial Dialer, guestPort int, onErr func(error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			l.Close()
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting on %s: %w", l.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := forwardConn(ctx, c, dial, guestPort); err != nil && onErr != nil {
				onErr(err)
			}
		}()
	}
}

// forwardConn connects one host connection to the guest port.
func forwardConn(ctx context.Context, c net.Conn, dial Dialer, guestPort int) error {
	defer c.Close()
	stream, err := dial(ctx)
	if err != nil {
		return fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err)
	}
	g, err := agent.Dial(ctx, stream, uint16(guestPort))
	if err != nil {
		return fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err)
	}
	defer g.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); g.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(g, c)
		if cw, ok := g.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
			g.Close()
		}
	}()
	io.Copy(c, g)
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	<-done
	return nil
}
