package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"banger/internal/api"
)

// dialTimeout bounds the guest's connect to its own port.
const dialTimeout = 10 * time.Second

// serveDial connects to a guest port and pipes the stream to it.
func (s *Server) serveDial(stream net.Conn, br *bufio.Reader, port uint16) {
	var conn net.Conn
	var err error
	for _, host := range []string{"127.0.0.1", "::1"} {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))), dialTimeout)
		if err == nil {
			break
		}
	}
	if err != nil {
		writeJSONLine(stream, reply{Error: fmt.Sprintf("nothing listens on port %d in the guest (%v)", port, err), Code: codeRefused})
		return
	}
	defer conn.Close()
	if writeJSONLine(stream, reply{OK: true}) != nil {
		return
	}
	splice(stream, io.MultiReader(br, stream), conn)
}

// splice copies both ways between a stream (read through r) and conn until
// both directions end; a side that stops sending half-closes the other (a
// yamux stream's Close is its half-close: it sends FIN and still reads).
func splice(stream net.Conn, r io.Reader, conn net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(conn, r)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			conn.Close()
		}
	}()
	io.Copy(stream, conn)
	stream.Close()
	wg.Wait()
}

// Dial asks the guest agent over stream (an agent stream or a daemon
// connection piped into one) to connect to the guest's TCP port and returns
// the connection: reads and writes then reach the guest port. The guest's
// refusal (nothing listening) is an Unavailable error naming the port.
// Closing the returned conn closes stream.
func Dial(ctx context.Context, stream net.Conn, port uint16) (net.Conn, error) {
	if port == 0 {
		stream.Close()
		return nil, api.Invalid("guest port 0 is not a port")
	}
	stop := context.AfterFunc(ctx, func() { stream.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeJSONLine(stream, Request{Op: OpDial, Port: port}); err != nil {
		stream.Close()
		return nil, fmt.Errorf("sending dial request: %w", err)
	}
	br := bufio.NewReaderSize(stream, 4096)
	line, err := readLine(br, 4096)
	if err != nil {
		stream.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, api.Unavailable("reading the guest's answer to dial port %d: %w", port, err)
	}
	var rep reply
	if err := json.Unmarshal(bytes.TrimSpace(line), &rep); err != nil {
		stream.Close()
		return nil, api.Unavailable("malformed answer to dial port %d from the guest agent: %w", port, err)
	}
	switch {
	case rep.OK:
	case rep.Code == codeRefused:
		stream.Close()
		return nil, api.Unavailable("guest port %d: guest agent: %s", port, rep.Error).
			WithFix("start a server listening on port " + strconv.Itoa(int(port)) + " in the guest")
	default:
		stream.Close()
		return nil, api.FailedPrecondition("the guest agent cannot forward ports (%s): the image was made by an older banger", rep.Error).
			WithFix("use an image made by this banger (banger image create), whose agent forwards ports")
	}
	if !stop() && ctx.Err() != nil {
		stream.Close()
		return nil, ctx.Err()
	}
	return &dialConn{Conn: stream, r: br}, nil
}

// dialConn reads through the buffer that may hold bytes read past the reply.
type dialConn struct {
	net.Conn
	r *bufio.Reader
}

func (d *dialConn) Read(p []byte) (int, error) { return d.r.Read(p) }

// CloseWrite half-closes the stream when it can.
func (d *dialConn) CloseWrite() error {
	if cw, ok := d.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
