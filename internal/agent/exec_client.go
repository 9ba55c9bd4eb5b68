package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"banger/internal/api"
)

// cancelGrace is how long Exec waits for the command's exit after sending
// SIGTERM on context cancellation before it drops the stream (which makes
// the guest SIGKILL the process group).
const cancelGrace = 2 * time.Second

// Exec runs req over stream, which can be any connection to the guest
// agent's exec protocol: an agent stream from OpenStream, or a daemon
// connection that is piped into one. It writes the request line, copies
// stdin into STDIN frames (STDIN_CLOSE at EOF; at once if stdin is nil) and
// STDOUT/STDERR frames into stdout and stderr (nil discards) as they arrive.
// It returns the command's exit code: 128+n for a command killed by signal
// n, 127 or 126 when it could not start (the reason is written to stderr).
//
// Cancelling ctx sends SIGNAL(SIGTERM), waits up to 2 s for the exit and
// then closes the stream; the error is then ctx's. Exec closes stream before
// it returns. A stdin that never reaches EOF leaves the goroutine copying it
// blocked in Read until its next read returns.
func Exec(ctx context.Context, stream net.Conn, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	r := Request{Op: OpExec, Exec: &req}
	return runExec(ctx, stream, r, stdin, stdout, stderr, nil)
}

// ExecTTY runs req under a pseudo-terminal in the guest (op "pty"): output
// and errors arrive merged on stdout, and each value from resize (rows,
// cols) resizes the terminal. A size waiting on resize when ExecTTY starts
// becomes the initial size (else 24x80). Stdin EOF is not forwarded to a
// terminal; send ^D for that. Otherwise it behaves like Exec.
func ExecTTY(ctx context.Context, stream net.Conn, req api.ExecRequest, stdin io.Reader, stdout io.Writer, resize <-chan [2]uint16) (int, error) {
	req.TTY = true
	r := Request{Op: OpPTY, Exec: &req}
	select {
	case sz, ok := <-resize:
		if ok {
			r.Rows, r.Cols = sz[0], sz[1]
		}
	default:
	}
	return runExec(ctx, stream, r, stdin, stdout, stdout, resize)
}

func runExec(ctx context.Context, stream net.Conn, r Request, stdin io.Reader, stdout, stderr io.Writer, resize <-chan [2]uint16) (int, error) {
	defer stream.Close()
	if err := validateExec(*r.Exec); err != nil {
		return -1, err
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if err := writeJSONLine(stream, r); err != nil {
		return -1, fmt.Errorf("sending exec request: %w", err)
	}
	fw := &frameWriter{w: stream}
	done := make(chan struct{})
	defer close(done)

	stop := context.AfterFunc(ctx, func() {
		fw.writeUint32(frameSignal, uint32(syscall.SIGTERM))
		if err := stream.SetReadDeadline(time.Now().Add(cancelGrace)); err != nil {
			stream.Close()
		}
	})
	defer stop()

	// Only the request line is written synchronously: over an unbuffered
	// connection the agent may be writing output before it reads more.
	go copyStdin(stdin, fw, done)
	if resize != nil {
		go forwardResize(resize, fw, done)
	}
	code, err := readExecOutput(bufio.NewReader(stream), stdout, stderr)
	if ctx.Err() != nil {
		return code, ctx.Err()
	}
	return code, err
}

// copyStdin sends stdin as STDIN frames and STDIN_CLOSE at EOF (at once
// for a nil stdin).
func copyStdin(stdin io.Reader, fw *frameWriter, done <-chan struct{}) {
	if stdin == nil {
		fw.write(frameStdinClose, nil)
		return
	}
	buf := make([]byte, chunkSize)
	for {
		n, err := stdin.Read(buf)
		select {
		case <-done:
			return
		default:
		}
		if n > 0 {
			if fw.write(frameStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			// EOF or a broken stdin: either way the command sees EOF.
			fw.write(frameStdinClose, nil)
			return
		}
	}
}

// forwardResize sends every terminal size from resize as a RESIZE frame.
func forwardResize(resize <-chan [2]uint16, fw *frameWriter, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case sz, ok := <-resize:
			if !ok {
				return
			}
			p := binary.BigEndian.AppendUint16(nil, sz[0])
			p = binary.BigEndian.AppendUint16(p, sz[1])
			if fw.write(frameResize, p) != nil {
				return
			}
		}
	}
}

// readExecOutput copies output frames until EXIT and returns its code.
func readExecOutput(br *bufio.Reader, stdout, stderr io.Writer) (int, error) {
	if b, err := br.Peek(1); err == nil && b[0] == '{' {
		line, err := readLine(br, maxRequestLine)
		if err != nil {
			return -1, fmt.Errorf("reading exec refusal: %w", err)
		}
		if err := decodeReplyError(line); err != nil {
			return -1, err
		}
		return -1, errors.New("guest agent answered the exec request with a reply instead of frames")
	}
	for {
		t, payload, err := readFrame(br)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return -1, api.Unavailable("guest agent closed the exec stream before the command exited")
			}
			return -1, fmt.Errorf("reading exec stream: %w", err)
		}
		switch t {
		case frameStdout:
			if _, err := stdout.Write(payload); err != nil {
				return -1, fmt.Errorf("writing command stdout: %w", err)
			}
		case frameStderr:
			if _, err := stderr.Write(payload); err != nil {
				return -1, fmt.Errorf("writing command stderr: %w", err)
			}
		case frameError:
			stderr.Write(append(payload, '\n'))
		case frameExit:
			if len(payload) != 4 {
				return -1, fmt.Errorf("malformed exit frame of %d bytes", len(payload))
			}
			return int(int32(binary.BigEndian.Uint32(payload))), nil
		}
		// Unknown frame types come from a newer agent: skip them.
	}
}
