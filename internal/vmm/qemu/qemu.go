// Package qemu runs guests in a QEMU microvm process: KVM where hardware
// virtualisation works, TCG software emulation otherwise.
//
// Start launches qemu-system-x86_64 detached (see internal/vmm/proc) with
// the arguments from Args, then waits until the QMP socket answers
// query-status. State, Stop and Kill talk to QMP and /proc only, so they
// work on a VM started by an earlier daemon.
package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/revert"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// DefaultBinary is the QEMU system emulator used when Config.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// readyTimeout bounds the wait for the QMP socket after launch.
const readyTimeout = 10 * time.Second

// Config chooses how guests run. The caller (host capability probe) picks
// Accel; the engine does not probe.
type Config struct {
	Binary    string // default qemu-system-x86_64
	Accel     string // "kvm" or "tcg"
	TSCkHz    int    // host TSC kHz; required for tcg
	TBSizeMiB int    // tcg translation cache size; default 128
	// ForkTBSizeMiB is the translation cache of a guest restored from a
	// snapshot; default 128, as TBSizeMiB (see tbSize).
	ForkTBSizeMiB int
	VhostVsock    bool // /dev/vhost-vsock present: agent over vsock, else virtio-serial
	// TapNetns is the network namespace (a /run/netns path) the taps live
	// in; empty: the daemon's own. Tests put their taps in one.
	TapNetns string
}

// Engine is the QEMU engine.
type Engine struct {
	cfg  Config
	info vmm.InfoOnce

	mu        sync.Mutex
	templates map[string]*template // snapshot memory path → sealed copy; guarded by mu
}

var _ vmm.Snapshotter = (*Engine)(nil)

// New returns a QEMU engine for cfg.
func New(cfg Config) *Engine {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	return &Engine{cfg: cfg}
}

// Info reports the binary, its version and what guests of this engine use.
// The binary is looked up (and asked its version) once.
func (e *Engine) Info() vmm.Info {
	return e.info.Get(e.probe)
}

func (e *Engine) probe() vmm.Info {
	info := vmm.Info{
		Name:           vmm.QEMU,
		Accel:          e.cfg.Accel,
		AgentTransport: e.transport(),
		Qcow2:          true,
		GuestShutdown:  vmm.ShutdownPoweroff,
	}
	path, err := exec.LookPath(e.cfg.Binary)
	if err != nil {
		info.Reason = fmt.Sprintf("%s not found: apt-get install qemu-system-x86", e.cfg.Binary)
		return info
	}
	info.Binary = path
	out, err := vmm.BinaryVersion(path)
	if err != nil {
		info.Reason = err.Error()
		return info
	}
	// "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"
	if f := strings.Fields(out); len(f) >= 4 {
		info.Version = f[3]
	}
	if err := e.checkConfig(); err != nil {
		info.Reason = err.Error()
		return info
	}
	info.Available = true
	info.Snapshots = true
	return info
}

func (e *Engine) transport() string {
	if e.cfg.VhostVsock {
		return vmm.TransportVsock
	}
	return vmm.TransportSerial
}

// Start validates spec, launches QEMU detached and waits until QMP answers.
// QEMU runs as spec.UID:spec.GID (no supplementary group but /dev/kvm's
// under KVM), inside its seccomp sandbox, and opens no host path: the
// daemon hands it every file it needs (see files.go). With
// spec.MemoryFile, guest RAM is that file (created here, mapped shared),
// which is what lets Save keep RAM out of the state stream. On failure
// nothing is left: the process is killed, its sockets and memory file
// removed.
func (e *Engine) Start(ctx context.Context, spec vmm.Spec) (vmm.Handles, error) {
	return e.launch(ctx, spec, nil, nil)
}

// launch is Start, and Restore's start when in is set: then pre holds the
// files Restore opened (state, template) and, after QMP answers, the state
// is loaded and the guest continued before launch returns.
func (e *Engine) launch(ctx context.Context, spec vmm.Spec, in *incoming, pre map[string]*os.File) (vmm.Handles, error) {
	args, files, err := e.plan(spec, isBlockDevice, in)
	if err != nil {
		return vmm.Handles{}, err
	}
	if err := checkFiles(spec); err != nil {
		return vmm.Handles{}, err
	}
	if spec.Tap == "" {
		return vmm.Handles{}, api.Invalid("vm %s: no tap device given", spec.Name)
	}
	cred, err := e.credential(spec)
	if err != nil {
		return vmm.Handles{}, err
	}
	// Stale sockets from an earlier run are removed; live ones are refused.
	if err := proc.ClaimSockets(spec.APISocket, spec.AgentSocket); err != nil {
		return vmm.Handles{}, api.AlreadyExists("vm %s: %w", spec.Name, err)
	}

	r := revert.New()
	defer r.Fail()
	r.Add(func() { proc.RemoveSockets(spec.APISocket, spec.AgentSocket) })
	kind := ramKind(spec, in)
	if kind == ramFile {
		f, err := createMemoryFile(spec)
		if err != nil {
			return vmm.Handles{}, err
		}
		defer f.Close() // a second Close after open's is harmless
		r.Add(func() { _ = os.Remove(spec.MemoryFile) })
		pre = withFile(pre, passMemory, f)
	}
	opened, err := e.open(files, pre)
	defer closeAll(opened)
	if err != nil {
		return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
	}
	p, err := proc.Start(proc.Options{Binary: e.cfg.Binary, Args: args, Stdout: spec.EngineLog, Stderr: spec.EngineLog,
		Dir: "/", ExtraFiles: opened, Credential: cred})
	if err != nil {
		return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
	}
	closeAll(opened) // QEMU holds them now
	opened = nil
	r.Add(func() {
		_ = proc.Kill(context.Background(), p.PID, markerOf(spec))
		<-p.Exited
	})
	log := slog.With("vm", spec.Name, "pid", p.PID)
	log.Debug("qemu started", "args", args, "uid", cred.UID)
	if err := waitReady(ctx, p, spec); err != nil {
		return vmm.Handles{}, err
	}
	if in != nil {
		if err := loadState(ctx, p, spec, in, fdOf(files, passState)); err != nil {
			return vmm.Handles{}, err
		}
	}
	h := vmm.Handles{
		PID:            p.PID,
		APISocket:      spec.APISocket,
		AgentSocket:    spec.AgentSocket,
		AgentTransport: e.transport(),
		Accel:          e.cfg.Accel,
		Extra: map[string]string{
			"marker": markerOf(spec), "ram": kind,
			"vcpus": strconv.Itoa(spec.VCPUs), "memory_mib": strconv.Itoa(spec.MemoryMiB),
		},
	}
	if kind == ramFile {
		h.Extra["memory_file"] = spec.MemoryFile
	}
	if e.cfg.VhostVsock {
		h.VsockCID = spec.VsockCID
		h.AgentSocket = ""
	}
	r.Success()
	return h, nil
}

// waitReady polls QMP query-status until it answers, QEMU exits (error with
// the tail of its log) or readyTimeout passes.
func waitReady(ctx context.Context, p *proc.Process, spec vmm.Spec) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	// QEMU answers QMP ~20 ms after exec here; a coarse tick would add up
	// to its own length to every create (it was 25 ms: +12 ms p50).
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var lastErr error
	for {
		select {
		case <-p.Exited:
			return api.Unavailable("vm %s: qemu exited (%s): %s", spec.Name, p.ExitStatus(), proc.LogTail(spec.EngineLog))
		default:
		}
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		_, err := queryStatus(qctx, spec.APISocket)
		qcancel()
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return api.Unavailable("vm %s: qemu did not answer on %s within %v: %w (log: %s)",
				spec.Name, spec.APISocket, readyTimeout, lastErr, proc.LogTail(spec.EngineLog))
		case <-t.C:
		}
	}
}

// checkFiles makes sure every file the guest boots from exists.
func checkFiles(spec vmm.Spec) error {
	files := []struct{ what, path string }{{"kernel", spec.Kernel}, {"initrd", spec.Initrd}}
	for _, d := range spec.Disks {
		files = append(files, struct{ what, path string }{"disk " + d.ID, d.Path})
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return api.Invalid("vm %s: %s %s: %w", spec.Name, f.what, f.path, err)
		}
	}
	return nil
}

// Stop asks the guest to power off (ACPI power button via QMP
// system_powerdown) and kills QEMU when it is still there after timeout.
func (e *Engine) Stop(ctx context.Context, h vmm.Handles, timeout time.Duration) error {
	powerdown := func(ctx context.Context) error { return qmpDo(ctx, h.APISocket, "system_powerdown", nil) }
	if err := proc.AskThenStop(ctx, h.PID, marker(h), timeout, powerdown); err != nil {
		return fmt.Errorf("stopping qemu pid %d: %w", h.PID, err)
	}
	cleanup(h)
	return nil
}

// Kill ends QEMU at once and waits for it to be gone.
func (e *Engine) Kill(ctx context.Context, h vmm.Handles) error {
	if err := proc.Kill(ctx, h.PID, marker(h)); err != nil {
		return fmt.Errorf("killing qemu: %w", err)
	}
	cleanup(h)
	return nil
}

// cleanup removes what a killed QEMU leaves behind: the sockets the daemon
// bound for it, its memory file (the orchestrator removes it too; removing
// it here frees its memory at once) and the pidfile of a QEMU started by an
// older banger.
func cleanup(h vmm.Handles) {
	proc.RemoveSockets(h.APISocket, h.AgentSocket, h.Extra["pidfile"], h.Extra["memory_file"])
}

// markerOf is what Alive looks for in QEMU's command line: the serial log's
// path, unique to the VM (QEMU binds no socket path itself any more).
func markerOf(spec vmm.Spec) string { return serialOpaque(spec) + "\x00" }

// marker is h's Alive marker; a QEMU started by an older banger named its
// QMP socket in its command line.
func marker(h vmm.Handles) string {
	if m := h.Extra["marker"]; m != "" {
		return m
	}
	return h.APISocket
}

// State asks QMP what the guest is doing. A process that is gone is
// StateStopped.
func (e *Engine) State(ctx context.Context, h vmm.Handles) (vmm.State, error) {
	return vmm.AskState(func() bool { return e.Alive(h) }, func() (vmm.State, error) {
		status, err := queryStatus(ctx, h.APISocket)
		if err != nil {
			return vmm.StateUnknown, fmt.Errorf("asking qemu pid %d for its state: %w", h.PID, err)
		}
		return mapStatus(status), nil
	})
}

// mapStatus maps QEMU's RunState names to vmm.State.
func mapStatus(s string) vmm.State {
	switch s {
	case "running":
		return vmm.StateRunning
	case "paused", "suspended", "prelaunch", "inmigrate", "postmigrate", "finish-migrate",
		"save-vm", "restore-vm", "debug", "watchdog", "colo", "io-error":
		return vmm.StatePaused
	case "shutdown", "guest-panicked", "internal-error":
		return vmm.StateStopped
	}
	return vmm.StateUnknown
}

// Alive reports whether the QEMU in h still runs.
func (e *Engine) Alive(h vmm.Handles) bool { return proc.Alive(h.PID, marker(h)) }
