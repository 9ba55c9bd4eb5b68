// Package agent is banger's guest agent: the protocol, the host-side client
// and the guest-side server.
//
// One channel connection (a virtio-serial port, a vsock connection or, in
// tests, a unix socket) carries one yamux session. The host is the yamux
// client and opens one stream per request; the guest is the yamux server.
// Every stream starts with one JSON request line (see Request):
//
//   - health: the guest answers one JSON line, a Health.
//   - clock:  the guest sets its clock to unix_nano and answers {"ok":true}
//     or {"ok":false,"error":"…"}.
//   - dial:   the guest connects to 127.0.0.1:port (::1 if that fails) and
//     answers {"ok":true} or {"ok":false,"error":"…"}; after ok the stream
//     carries the TCP connection's bytes both ways.
//   - identity: the guest takes the Identity in the request (a VM forked
//     from a snapshot wakes up as its parent): clock, kernel RNG, hostname,
//     machine-id, systemd-networkd's file, the interface's MAC/address/route,
//     networkd restarted, resolv.conf, SSH host keys, then restarts of the
//     named units, in that order (see Identity), and answers one
//     IdentityResult line (at most 64 KiB, 32 steps): each step's name and
//     milliseconds, ok:false with the failed step's error (later steps are
//     not run). A bad Identity is refused before any step runs.
//   - exec, pty: after the request line both sides exchange binary frames,
//     [1 byte type][4 bytes big-endian length][payload]. The host sends
//     STDIN, STDIN_CLOSE, SIGNAL and RESIZE; the guest sends STDOUT, STDERR,
//     ERROR (a start failure's text) and finally EXIT (a big-endian int32).
//     The host never half-closes an exec stream before EXIT: the guest reads
//     end-of-stream before EXIT as "host gone" and kills the process group.
//
// A request the guest cannot parse or does not know is answered with an
// error line {"ok":false,"error":"…"}, also on exec streams (its first byte,
// '{', is never a frame type).
//
// What the host trusts: nothing the guest sends. Exec frames are
// length-bounded (readFrame), answers are single lines of bounded length (readLine), and streams are the host's
// alone: the host session refuses every stream the guest opens (NewClient),
// so a guest cannot pin host memory in an accept backlog. The guest trusts
// the host (it is root inside its own VM on the host's behalf).
package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"banger/internal/api"
)

// Request ops.
const (
	OpHealth = "health"
	OpExec   = "exec"
	OpClock  = "clock"
	OpPTY    = "pty"
	OpDial   = "dial"
	// OpIdentity gives a forked guest its own identity (see Identity).
	OpIdentity = "identity"
)

// Request is the JSON line that starts every stream.
type Request struct {
	Op string `json:"op"`
	// Exec is the command of an exec or pty request.
	Exec *api.ExecRequest `json:"exec,omitempty"`
	// UnixNano is the time a clock request sets, in nanoseconds since 1970.
	UnixNano int64 `json:"unix_nano,omitempty"`
	// Rows and Cols are the initial terminal size of a pty request
	// (24x80 when zero).
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Port is the guest TCP port a dial request connects to (on the
	// guest's loopback).
	Port uint16 `json:"port,omitempty"`
	// Identity is what an identity request gives the guest.
	Identity *Identity `json:"identity,omitempty"`
}

// Health is the guest's answer to a health request.
type Health struct {
	OK       bool    `json:"ok"`
	Version  string  `json:"version"`
	Hostname string  `json:"hostname"`
	Uptime   float64 `json:"uptime"` // seconds since the guest booted
	BootID   string  `json:"boot_id"`
	Kernel   string  `json:"kernel"`
}

// reply is the answer to a clock request and to any refused request.
type reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Code classifies a refusal a caller acts on: codeRefused (dial: nothing
	// listens on the port). Agents before the dial op send none.
	Code string `json:"code,omitempty"`
}

// codeRefused is a dial's "nothing listens on that port".
const codeRefused = "refused"

// frameType is the first byte of an exec frame.
type frameType byte

// Frame types. Host → guest: stdin … resize; guest → host: stdout … error.
const (
	frameStdin      frameType = 1 // payload: bytes for the command's stdin
	frameStdinClose frameType = 2 // no payload: stdin reached EOF
	frameSignal     frameType = 3 // payload: big-endian uint32 signal number
	frameResize     frameType = 4 // payload: big-endian uint16 rows, uint16 cols
	frameStdout     frameType = 5 // payload: output bytes
	frameStderr     frameType = 6 // payload: output bytes
	frameExit       frameType = 7 // payload: big-endian int32 exit code
	frameError      frameType = 8 // payload: start failure text
)

const (
	// maxRequestLine bounds a request line (argv and env included).
	maxRequestLine = 1 << 20
	// maxFramePayload bounds one frame; senders split larger data.
	maxFramePayload = 1 << 20
	// chunkSize is how much output or stdin one frame carries at most.
	chunkSize = 32 << 10
	// frameHeaderSize is the type byte plus the length.
	frameHeaderSize = 5
)

// errLineTooLong is returned for a request or reply line over the limit.
var errLineTooLong = errors.New("line too long")

// readLine reads one '\n'-terminated line of at most limit bytes (without
// the newline). A final line without newline is accepted at EOF.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit+1 {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// readRequest reads and validates the request line that starts a stream.
// Errors are api.Invalid and name the problem; io errors are returned as is.
func readRequest(r *bufio.Reader) (Request, error) {
	line, err := readLine(r, maxRequestLine)
	if errors.Is(err, errLineTooLong) {
		return Request{}, api.Invalid("request line longer than %d bytes", maxRequestLine)
	}
	if err != nil {
		return Request{}, err
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Request{}, api.Invalid("malformed request line: %v", err)
	}
	if err := req.validate(); err != nil {
		return Request{}, err
	}
	return req, nil
}

// validate checks a request for the fields its op needs.
func (r Request) validate() error {
	switch r.Op {
	case OpHealth:
		return nil
	case OpClock:
		if r.UnixNano <= 0 {
			return api.Invalid("clock request needs a positive unix_nano, got %d", r.UnixNano)
		}
		return nil
	case OpExec, OpPTY:
		if r.Exec == nil {
			return api.Invalid("%s request without \"exec\"", r.Op)
		}
		return validateExec(*r.Exec)
	case OpDial:
		if r.Port == 0 {
			return api.Invalid("dial request needs a port between 1 and 65535")
		}
		return nil
	case OpIdentity:
		if r.Identity == nil {
			return api.Invalid("identity request without \"identity\"")
		}
		return r.Identity.Validate()
	case "":
		return api.Invalid("request without \"op\"")
	default:
		return api.Invalid("unknown op %q (want health, exec, pty, dial, clock or identity)", r.Op)
	}
}

// validateExec rejects commands the kernel could not run anyway.
func validateExec(e api.ExecRequest) error {
	if len(e.Argv) == 0 || e.Argv[0] == "" {
		return api.Invalid("exec request with an empty argv")
	}
	for _, a := range e.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return api.Invalid("argv contains a NUL byte")
		}
	}
	for k, v := range e.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			return api.Invalid("invalid environment variable %q", k)
		}
	}
	if strings.IndexByte(e.Dir, 0) >= 0 {
		return api.Invalid("dir contains a NUL byte")
	}
	return nil
}

// writeJSONLine writes v as one JSON line in a single Write.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %T: %w", v, err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readFrame reads one exec frame. A payload over maxFramePayload is an error.
func readFrame(r io.Reader) (frameType, []byte, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFramePayload {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds the %d-byte limit", n, maxFramePayload)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return frameType(hdr[0]), payload, nil
}

// appendFrame appends the encoding of one frame to b.
func appendFrame(b []byte, t frameType, payload []byte) []byte {
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// frameWriter writes whole frames from several goroutines; each frame is one
// Write, so frames never interleave.
type frameWriter struct {
	mu sync.Mutex // serialises Write on w
	w  io.Writer
}

func (fw *frameWriter) write(t frameType, payload []byte) error {
	buf := appendFrame(make([]byte, 0, frameHeaderSize+len(payload)), t, payload)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	_, err := fw.w.Write(buf)
	return err
}

func (fw *frameWriter) writeUint32(t frameType, v uint32) error {
	return fw.write(t, binary.BigEndian.AppendUint32(nil, v))
}

// decodeReplyError turns an error reply line into an error.
func decodeReplyError(line []byte) error {
	var rep reply
	if err := json.Unmarshal(bytes.TrimSpace(line), &rep); err != nil {
		return fmt.Errorf("malformed reply from guest agent: %w", err)
	}
	if rep.OK {
		return nil
	}
	if rep.Error == "" {
		rep.Error = "unspecified error"
	}
	return fmt.Errorf("guest agent: %s", rep.Error)
}
