// Package proc starts and ends engine processes (Firecracker, QEMU) the way
// both engine drivers need: detached from the daemon, identified by pid plus
// a marker in their command line, and ended by polling /proc so it works
// after a daemon restart when the process is no longer our child.
//
// Lifecycle: Start launches the binary in its own session with stdin from
// /dev/null and stdout/stderr appended to files, releases the Go-side handle
// and reaps the process from a goroutine (so no zombie is left while the
// daemon lives, and nothing ties the process to a request context). Alive,
// Kill and WaitGone then work from the pid and the marker alone.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollInterval is how often WaitGone looks at /proc.
const pollInterval = 20 * time.Millisecond

// Options describe a process to start.
type Options struct {
	Binary string
	Args   []string
	// Stdout and Stderr are files the process's output is appended to
	// (created 0600 when missing). Empty means /dev/null. They may be equal.
	Stdout string
	Stderr string
	Dir    string   // working directory; empty means the daemon's
	Env    []string // nil means the daemon's environment
	// ExtraFiles are handed to the process as fds 3, 4, … (the caller
	// closes its copies after Start).
	ExtraFiles []*os.File
	// Credential, when set, is who the process runs as: no engine runs as
	// root. The ids change before the exec, so the process never holds
	// root's capabilities; a Dir the uid cannot enter fails the Start.
	Credential *Credential
}

// Credential is an unprivileged identity for a process.
type Credential struct {
	UID, GID int
	Groups   []int // supplementary groups; nil: none
}

// Process is a started engine process.
type Process struct {
	// PID is the process id.
	PID int
	// Exited is closed once the reaper has collected the process's exit
	// status (only while the starting daemon lives).
	Exited <-chan struct{}
	// status is valid after Exited is closed.
	status *unix.WaitStatus
}

// ExitStatus describes how the process ended; valid once Exited is closed.
func (p *Process) ExitStatus() string {
	select {
	case <-p.Exited:
	default:
		return "running"
	}
	ws := *p.status
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by signal %s", ws.Signal())
	default:
		return "ended"
	}
}

// Start launches opts.Binary detached: its own session (setsid), stdin
// /dev/null, output appended to the named files. The exec.Cmd is released at
// once; a goroutine reaps the process when it ends.
func Start(opts Options) (*Process, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	stdout, err := openOutput(opts.Stdout)
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr := stdout
	if opts.Stderr != opts.Stdout {
		if stderr, err = openOutput(opts.Stderr); err != nil {
			return nil, err
		}
		defer stderr.Close()
	}
	cmd := exec.Command(opts.Binary, opts.Args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, stdout, stderr
	cmd.Dir, cmd.Env = opts.Dir, opts.Env
	cmd.ExtraFiles = opts.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if c := opts.Credential; c != nil {
		if c.UID <= 0 || c.GID <= 0 {
			return nil, fmt.Errorf("starting %s: refusing uid %d gid %d: engines never run as root", opts.Binary, c.UID, c.GID)
		}
		groups := make([]uint32, 0, len(c.Groups))
		for _, g := range c.Groups {
			groups = append(groups, uint32(g))
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(c.UID), Gid: uint32(c.GID), Groups: groups}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", opts.Binary, err)
	}
	pid := cmd.Process.Pid
	// Drop the Go-side handle: nothing about the process is tied to this
	// Cmd any more; the reaper below waits by pid.
	_ = cmd.Process.Release()
	exited := make(chan struct{})
	p := &Process{PID: pid, Exited: exited, status: new(unix.WaitStatus)}
	go func() {
		defer close(exited)
		for {
			_, err := unix.Wait4(pid, p.status, 0, nil)
			if !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	return p, nil
}

func openOutput(path string) (*os.File, error) {
	if path == "" {
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening log %s: %w", path, err)
	}
	return f, nil
}

// Alive reports whether pid runs (exists and is not a zombie) and its
// command line contains marker (guarding against pid reuse).
func Alive(pid int, marker string) bool {
	if pid <= 0 || marker == "" {
		return false
	}
	if !Exists(pid) {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte(marker))
}

// Exists reports whether a process has pid and is not a zombie (whatever
// its command line; Alive also checks that).
func Exists(pid int) bool {
	state, err := State(pid)
	return err == nil && state != 'Z' && state != 'X'
}

// State returns the one-letter state of pid from /proc/<pid>/stat.
func State(pid int) (byte, error) {
	st, err := readStat(pid)
	return st.state, err
}

// stat is what we read from /proc/<pid>/stat.
type stat struct {
	state     byte
	startTime uint64 // clock ticks since boot: with pid, a unique identity
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// "pid (comm) S ppid …": comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64) // field 22: starttime
	if err != nil {
		return stat{}, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
	}
	return stat{state: f[0][0], startTime: start}, nil
}

// identify returns pid's start time when it is Alive with marker.
func identify(pid int, marker string) (uint64, bool) {
	if !Alive(pid, marker) {
		return 0, false
	}
	st, err := readStat(pid)
	return st.startTime, err == nil
}

// present reports whether the process (pid, start) still holds resources:
// it exists and is not a fully exited zombie. A dying process loses its
// cmdline before it has closed its files (a tap stays busy), and a zombie
// leader may still have exiting threads, so Alive alone is not enough.
func present(pid int, start uint64) bool {
	st, err := readStat(pid)
	if err != nil || st.startTime != start {
		return false // gone, or the pid was reused
	}
	if st.state != 'Z' && st.state != 'X' {
		return true
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return err == nil && len(tasks) > 1
}

// waitExit polls until (pid, start) is no longer present, or ctx ends.
func waitExit(ctx context.Context, pid int, start uint64) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for present(pid, start) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for pid %d to exit: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// WaitGone waits until the process marked by marker has exited and
// released its resources (files, memory), or ctx ends. A process that is
// not Alive returns at once.
func WaitGone(ctx context.Context, pid int, marker string) error {
	start, ok := identify(pid, marker)
	if !ok {
		return nil
	}
	return waitExit(ctx, pid, start)
}

// Kill sends SIGKILL to pid when it is still the process marked by marker,
// then waits until it is gone. An already dead process is not an error.
func Kill(ctx context.Context, pid int, marker string) error {
	start, ok := identify(pid, marker)
	if !ok {
		return nil
	}
	return kill(ctx, pid, start)
}

func kill(ctx context.Context, pid int, start uint64) error {
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing pid %d: %w", pid, err)
	}
	// A killed process dies promptly; bound the wait even without a
	// deadline, and finish it even when the caller gave up.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return waitExit(ctx, pid, start)
}

// StopOrKill waits up to timeout for the process to exit after a graceful
// request, then SIGKILLs it. It returns once the process is gone.
func StopOrKill(ctx context.Context, pid int, marker string, timeout time.Duration) error {
	start, ok := identify(pid, marker)
	if !ok {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	err := waitExit(wctx, pid, start)
	cancel()
	if err == nil {
		return nil
	}
	return kill(ctx, pid, start)
}

// AskThenStop ends a live process the way both engines stop a guest: ask
// it (bounded to 2s) to shut down, wait up to timeout, then SIGKILL. When
// asking fails it kills at once. A process already gone is no error.
func AskThenStop(ctx context.Context, pid int, marker string, timeout time.Duration, ask func(context.Context) error) error {
	if !Alive(pid, marker) {
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := ask(actx)
	cancel()
	if err != nil {
		slog.Debug("asking the engine to stop failed; killing", "pid", pid, "err", err)
		timeout = 0
	}
	return StopOrKill(ctx, pid, marker, timeout)
}

// Tail returns up to the last n bytes of the file at path, trimmed, for
// error messages ("qemu exited: <tail of log>"). Errors yield "".
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	return strings.TrimSpace(string(buf))
}

// LogTail is the last 2 KiB of an engine log for an error message, or
// "(no output)".
func LogTail(path string) string {
	if s := Tail(path, 2048); s != "" {
		return s
	}
	return "(no output)"
}

// ClaimSockets readies the socket paths of an engine about to start: it
// refuses when the first, the API socket, still accepts connections (a
// running engine serves it; removing its files would orphan that engine)
// and otherwise removes stale files at all of them.
func ClaimSockets(api string, others ...string) error {
	if api != "" {
		if c, err := net.DialTimeout("unix", api, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("%s is served by a running engine", api)
		}
	}
	RemoveSockets(append([]string{api}, others...)...)
	return nil
}

// RemoveSockets removes the socket files at paths, ignoring missing ones.
func RemoveSockets(paths ...string) {
	for _, p := range paths {
		if p != "" {
			_ = os.Remove(p)
		}
	}
}
