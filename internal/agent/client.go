package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"

	"banger/internal/api"
)

// Client is the host side of one agent channel: a yamux client session over
// one connection. It is safe for concurrent use; every request runs on its
// own stream. A Client lives until Close, the connection ends or keepalives
// fail; Closed reports that, and the caller dials again. A virtio-serial
// channel has room for one connection at a time, so keep one Client per VM.
type Client struct {
	conn net.Conn
	sess *yamux.Session
}

// NewClient starts a yamux client session over conn. The Client owns conn.
//
// The host never accepts a stream the guest opens: the session refuses them
// all (yamux GoAway, so each is reset as it arrives) instead of leaving them
// in its accept backlog, where each would pin a receive window (256 × 256
// KiB per VM). The session reads nothing from conn until that refusal is in
// force, so even frames the guest queued before the host connected are
// refused.
func NewClient(conn net.Conn) (*Client, error) {
	refusing := make(chan struct{})
	sess, err := yamux.Client(gatedConn{Conn: conn, open: refusing}, sessionConfig(slog.Default()))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("starting agent session: %w", err)
	}
	go func() {
		// GoAway marks the session refusing at once, then waits for its
		// frame to be written; a failed write leaves a dead session.
		_ = sess.GoAway()
		close(refusing)
	}()
	return &Client{conn: conn, sess: sess}, nil
}

// gatedConn holds reads until open is closed.
type gatedConn struct {
	net.Conn
	open <-chan struct{}
}

func (g gatedConn) Read(p []byte) (int, error) {
	<-g.open
	return g.Conn.Read(p)
}

// DialSerial connects to the unix socket QEMU exposes for the guest's
// virtio-serial port (chardev socket, server=on) and starts a session.
func DialSerial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, api.Unavailable("connecting to guest agent socket %s: %w", socketPath, err)
	}
	return NewClient(conn)
}

// DialHybridVsock connects to a Firecracker vsock unix socket, asks for the
// guest port with "CONNECT <port>\n", expects "OK <host port>\n" and then
// starts a session over the raw stream.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, api.Unavailable("connecting to firecracker vsock socket %s: %w", udsPath, err)
	}
	if err := hybridHandshake(ctx, conn, port); err != nil {
		conn.Close()
		return nil, api.Unavailable("vsock %s port %d: %w", udsPath, port, err)
	}
	return NewClient(conn)
}

// hybridHandshakeTimeout bounds the CONNECT exchange when ctx has no deadline.
const hybridHandshakeTimeout = 10 * time.Second

func hybridHandshake(ctx context.Context, conn net.Conn, port uint32) error {
	// ctx ends the handshake through AfterFunc, which runs after ctx.Err()
	// is set, so a read cut short by it reports ctx's error.
	if _, ok := ctx.Deadline(); !ok {
		if err := conn.SetDeadline(time.Now().Add(hybridHandshakeTimeout)); err != nil {
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return fmt.Errorf("sending CONNECT: %w", err)
	}
	// Read byte by byte: everything after the line belongs to the session.
	var line []byte
	var b [1]byte
	for len(line) < 64 {
		if _, err := conn.Read(b[:]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("connection closed without an answer to CONNECT (is the guest agent listening on that port?)")
			}
			return fmt.Errorf("reading CONNECT answer: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	reply := strings.TrimSpace(string(line))
	fields := strings.Fields(reply)
	if len(fields) != 2 || fields[0] != "OK" {
		return fmt.Errorf("unexpected answer to CONNECT: %q", reply)
	}
	if _, err := strconv.ParseUint(fields[1], 10, 32); err != nil {
		return fmt.Errorf("unexpected answer to CONNECT: %q", reply)
	}
	return conn.SetDeadline(time.Time{})
}

// DialVsock connects to a guest's AF_VSOCK port through the host kernel
// (vhost-vsock) and starts a session.
func DialVsock(ctx context.Context, cid, port uint32) (*Client, error) {
	conn, err := vsock.DialContext(ctx, cid, port, nil)
	if err != nil {
		return nil, api.Unavailable("connecting to guest agent on vsock cid %d port %d: %w", cid, port, err)
	}
	return NewClient(conn)
}

// OpenStream opens a fresh stream to the guest. The caller writes the
// request line (Exec does that) and closes the stream.
func (c *Client) OpenStream(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type result struct {
		s   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := c.sess.OpenStream()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, api.Unavailable("opening guest agent stream: %w", r.err)
		}
		return r.s, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// roundTrip sends req on a new stream and returns the one-line answer.
func (c *Client) roundTrip(ctx context.Context, req Request) ([]byte, error) {
	return c.roundTripLimit(ctx, req, maxRequestLine)
}

// roundTripLimit is roundTrip with an answer of at most limit bytes.
func (c *Client) roundTripLimit(ctx context.Context, req Request, limit int) ([]byte, error) {
	stream, err := c.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	stop := context.AfterFunc(ctx, func() { stream.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeJSONLine(stream, req); err != nil {
		return nil, c.streamErr(ctx, "sending "+req.Op+" request", err)
	}
	line, err := readLine(bufio.NewReader(stream), limit)
	if err != nil {
		return nil, c.streamErr(ctx, "reading "+req.Op+" answer", err)
	}
	return line, nil
}

// streamErr prefers the context's error over the deadline it caused.
func (c *Client) streamErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	return api.Unavailable("%s: %w", what, err)
}

// Health asks the guest for its health.
func (c *Client) Health(ctx context.Context) (Health, error) {
	line, err := c.roundTrip(ctx, Request{Op: OpHealth})
	if err != nil {
		return Health{}, err
	}
	var h struct {
		Health
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return Health{}, fmt.Errorf("malformed health answer from guest agent: %w", err)
	}
	if !h.OK {
		return h.Health, fmt.Errorf("guest agent unhealthy: %s", h.Error)
	}
	return h.Health, nil
}

// SetClock sets the guest's realtime clock to t (after a snapshot restore
// the guest clock is stuck at snapshot time).
func (c *Client) SetClock(ctx context.Context, t time.Time) error {
	line, err := c.roundTrip(ctx, Request{Op: OpClock, UnixNano: t.UnixNano()})
	if err != nil {
		return err
	}
	return decodeReplyError(line)
}

// Exec runs req in the guest on a new stream; see the package-level Exec.
func (c *Client) Exec(ctx context.Context, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	stream, err := c.OpenStream(ctx)
	if err != nil {
		return -1, err
	}
	return Exec(ctx, stream, req, stdin, stdout, stderr)
}

// Closed is closed when the session has ended.
func (c *Client) Closed() <-chan struct{} { return c.sess.CloseChan() }

// Close ends the session and closes the connection. Running execs see their
// streams drop and the guest kills their process groups.
func (c *Client) Close() error { return c.sess.Close() }
