package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

const (
	// defaultPath is the PATH of commands that do not set one.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// drainGrace is how long output pipes may stay silent after the command
	// exited before the rest is dropped (a background child holding them).
	drainGrace = 100 * time.Millisecond
	// drainMax bounds the whole drain after exit.
	drainMax = 2 * time.Second
	// stdinQueue is how many STDIN frames wait for a command not reading.
	stdinQueue = 16
)

// defaultDir is the working directory of commands that do not set one
// ("/" when it does not exist).
var defaultDir = "/root"

// process is one running command of an exec or pty request.
type process struct {
	cmd  *exec.Cmd
	pgid int
	// stdin is the write end of the command's stdin pipe, or the pty master.
	stdin *os.File
	// outputs are the read ends of stdout and stderr, or the pty master.
	outputs []output
	// tty is the pty master of a pty request, else nil.
	tty *os.File
}

type output struct {
	f *os.File
	t frameType
}

// serveExec runs the command of an exec or pty request and speaks the frame
// protocol on stream until it has exited.
func (s *Server) serveExec(stream net.Conn, br *bufio.Reader, req Request) {
	fw := &frameWriter{w: stream}
	log := s.log.With("argv0", req.Exec.Argv[0])
	p, err := startProcess(req)
	if err != nil {
		code := startFailureCode(err)
		log.Info("exec start failed", "err", err, "exit_code", code)
		fw.write(frameError, []byte("banger-agent: "+err.Error()))
		fw.writeUint32(frameExit, uint32(int32(code)))
		return
	}
	log = log.With("pid", p.pgid)
	log.Debug("exec started", "tty", p.tty != nil)
	began := time.Now()
	code := p.run(stream, br, fw, log)
	log.Debug("exec finished", "exit_code", code, "took", time.Since(began).Round(time.Millisecond))
}

// startProcess starts the command in its own process group (its own
// session under a pty) with the default environment under req.Exec.Env.
func startProcess(req Request) (*process, error) {
	e := req.Exec
	tty := req.Op == OpPTY || e.TTY
	env := buildEnv(e.Env, tty)
	dir := e.Dir
	if dir == "" {
		dir = defaultDir
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = "/"
		}
	}
	path, err := lookPath(e.Argv[0], envValue(env, "PATH"), dir)
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: path, Args: slices.Clone(e.Argv), Env: env, Dir: dir}
	if tty {
		return startPTY(cmd, req.Rows, req.Cols)
	}
	return startPipes(cmd)
}

func startPipes(cmd *exec.Cmd) (*process, error) {
	var files []*os.File // every pipe end, closed on failure
	fail := func(err error) (*process, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	var ends [6]*os.File // stdin r/w, stdout r/w, stderr r/w
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("creating pipe: %w", err))
		}
		ends[i], ends[i+1] = r, w
		files = append(files, r, w)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = ends[0], ends[3], ends[5]
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	// The child has its own copies now.
	ends[0].Close()
	ends[3].Close()
	ends[5].Close()
	return &process{
		cmd:     cmd,
		pgid:    cmd.Process.Pid,
		stdin:   ends[1],
		outputs: []output{{ends[2], frameStdout}, {ends[4], frameStderr}},
	}, nil
}

func startPTY(cmd *exec.Cmd, rows, cols uint16) (*process, error) {
	if rows == 0 || cols == 0 {
		rows, cols = 24, 80
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("opening pty: %w", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		return nil, fmt.Errorf("sizing pty: %w", err)
	}
	// pty's ioctls leave ptmx in blocking mode; a non-blocking duplicate
	// gets deadlines from the runtime poller.
	fd, err := unix.FcntlInt(ptmx.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("duplicating pty master: %w", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, err
	}
	return &process{
		cmd:     cmd,
		pgid:    cmd.Process.Pid,
		stdin:   master,
		outputs: []output{{master, frameStdout}},
		tty:     master,
	}, nil
}

// run streams the command's I/O until it exits and returns its exit code.
// Teardown order matters: EXIT is sent only after the output is drained,
// and "done" is closed before EXIT so that the host closing the stream in
// answer is not mistaken for the host going away.
func (p *process) run(stream net.Conn, br *bufio.Reader, fw *frameWriter, log *slog.Logger) int {
	done := make(chan struct{})
	stdinCh := make(chan []byte, stdinQueue)
	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		p.writeStdin(stdinCh)
	}()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		p.readControl(br, stdinCh, done, log)
	}()

	var exitedAt atomic.Int64 // unix nanoseconds; 0 while running
	var pumps sync.WaitGroup
	for _, o := range p.outputs {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			pump(o, fw, &exitedAt)
		}()
	}
	waitErr := p.cmd.Wait()
	exitedAt.Store(time.Now().UnixNano())
	for _, o := range p.outputs {
		o.f.SetReadDeadline(time.Now().Add(drainGrace))
	}
	pumps.Wait()
	code := exitCode(p.cmd.ProcessState, waitErr)

	close(done)
	fw.writeUint32(frameExit, uint32(int32(code)))
	stream.SetReadDeadline(time.Now())
	<-readerDone
	p.stdin.SetWriteDeadline(time.Now())
	<-stdinDone
	p.stdin.Close()
	for _, o := range p.outputs {
		o.f.Close()
	}
	return code
}

// pump sends what f produces as frames of type o.t. After the command has
// exited it keeps reading only while data keeps coming (drainGrace) and at
// most drainMax. It never stops reading because the stream broke, so the
// command never blocks on a full pipe.
func pump(o output, fw *frameWriter, exitedAt *atomic.Int64) {
	buf := make([]byte, chunkSize)
	broken := false
	for {
		n, err := o.f.Read(buf)
		if n > 0 {
			if !broken && fw.write(o.t, buf[:n]) != nil {
				broken = true
			}
			if at := exitedAt.Load(); at != 0 {
				hard := time.Unix(0, at).Add(drainMax)
				o.f.SetReadDeadline(minTime(time.Now().Add(drainGrace), hard))
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				drainBuffered(o, fw, buf, &broken)
			}
			return // EOF, EIO from a pty whose terminal closed, or a deadline
		}
	}
}

// maxDrainBuffered bounds drainBuffered: a pipe holds 64 KiB by default (at
// most 1 MiB), so this is what the command left behind, not a stream a
// background child could keep feeding.
const maxDrainBuffered = 1 << 20

// drainBuffered sends what the pipe already holds once the drain deadline
// has passed. A read past its deadline fails without looking at the pipe,
// so a pump scheduled late (a loaded or emulated guest) would otherwise lose
// output the command wrote before it exited. Non-blocking reads until the
// pipe is empty (EAGAIN), closed (0) or maxDrainBuffered bytes were sent.
func drainBuffered(o output, fw *frameWriter, buf []byte, broken *bool) {
	rc, err := o.f.SyscallConn()
	if err != nil {
		return
	}
	for total := 0; total < maxDrainBuffered; {
		var n int
		var rerr error
		if err := rc.Control(func(fd uintptr) { n, rerr = unix.Read(int(fd), buf) }); err != nil || rerr != nil || n <= 0 {
			return
		}
		total += n
		if !*broken && fw.write(o.t, buf[:n]) != nil {
			*broken = true
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// readControl applies the host's frames until the stream ends. Losing the
// stream before the command exited means the host is gone: the process
// group is killed.
func (p *process) readControl(br *bufio.Reader, stdinCh chan<- []byte, done <-chan struct{}, log *slog.Logger) {
	stdinOpen := true
	defer func() {
		if stdinOpen {
			close(stdinCh)
		}
	}()
	for {
		t, payload, err := readFrame(br)
		if err != nil {
			select {
			case <-done:
			default:
				log.Info("exec stream dropped, killing process group", "err", err)
				unix.Kill(-p.pgid, unix.SIGKILL)
			}
			return
		}
		switch t {
		case frameStdin:
			if !stdinOpen {
				continue
			}
			select {
			case stdinCh <- payload:
			case <-done:
				return
			}
		case frameStdinClose:
			if stdinOpen && p.tty == nil {
				close(stdinCh)
				stdinOpen = false
			}
		case frameSignal:
			if len(payload) == 4 {
				sig := binary.BigEndian.Uint32(payload)
				if sig >= 1 && sig <= 64 {
					unix.Kill(-p.pgid, unix.Signal(sig))
				}
			}
		case frameResize:
			if p.tty != nil && len(payload) == 4 {
				setWinsize(p.tty, binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]))
			}
		}
	}
}

// writeStdin writes queued stdin to the command; it closes a pipe stdin at
// the end so the command reads EOF.
func (p *process) writeStdin(ch <-chan []byte) {
	failed := false
	for b := range ch {
		if !failed {
			_, err := p.stdin.Write(b)
			failed = err != nil
		}
	}
	if p.tty == nil {
		p.stdin.Close()
	}
}

// setWinsize resizes the terminal of master without switching it to
// blocking mode.
func setWinsize(master *os.File, rows, cols uint16) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var ioctlErr error
	err = rc.Control(func(fd uintptr) {
		ioctlErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	return errors.Join(err, ioctlErr)
}

// exitCode maps a finished process to a shell-style exit code.
func exitCode(ps *os.ProcessState, waitErr error) int {
	if ps == nil {
		return 255
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// startFailureCode is the shell's code for a command that could not start:
// 127 when it was not found, 126 when it was not executable.
func startFailureCode(err error) int {
	switch {
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return 126
	default:
		return 127
	}
}

// buildEnv is the default environment with extra on top, sorted.
func buildEnv(extra map[string]string, tty bool) []string {
	m := map[string]string{
		"PATH":    defaultPath,
		"HOME":    "/root",
		"USER":    "root",
		"LOGNAME": "root",
		"LANG":    "C.UTF-8",
	}
	if tty {
		m["TERM"] = "xterm-256color"
	}
	for k, v := range extra {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	return env
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// lookPath finds name like a shell would with the command's own PATH
// (not the agent's). Relative paths are taken from dir.
func lookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", &exec.Error{Name: name, Err: err}
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// checkExecutable reports whether p is a file someone may execute.
func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return syscall.EISDIR
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}
