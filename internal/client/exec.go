package client

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"banger/internal/api"
)

// Exec opens POST /v1/vms/{name}/exec, does the upgrade handshake and
// returns the raw connection, which then speaks the guest agent's exec
// protocol (see agent.Exec). ctx bounds the handshake only.
func (c *Client) Exec(ctx context.Context, name string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, c.unreachable(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req, err := http.NewRequest(http.MethodPost, "http://banger/v1/vms/"+esc(name)+"/exec", nil)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("building exec request: %w", err)
	}
	req.Header.Set(api.VersionHeader, api.APIVersion)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "banger-exec")
	if err := req.Write(conn); err != nil {
		_ = conn.Close()
		return nil, c.unreachable(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.unreachable(err)
	}
	c.noteVersion(resp.Header)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	if !stop() && ctx.Err() != nil {
		_ = conn.Close()
		return nil, ctx.Err()
	}
	_ = conn.SetDeadline(time.Time{})
	return &bufConn{Conn: conn, r: br}, nil
}

// bufConn reads through the bufio.Reader that may hold bytes read past the
// handshake.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes the connection: the daemon passes the EOF on.
func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
