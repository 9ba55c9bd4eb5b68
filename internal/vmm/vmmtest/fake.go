package vmmtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// Fake is an engine for the tests of callers (the orchestrator). It checks
// a spec as strictly as the real engines (what both need: name, vCPUs
// within Info.MaxVCPUs, memory, the kernel Info asks for, API socket,
// serial log, tap with a MAC, disks of a format Info accepts, every file
// present), and each guest is a real process: `sleep infinity` in its own
// session, named after the API socket in its command line (so Alive, Stop
// and Kill work from the Handles alone, as after a daemon restart), with a
// real listener on the API socket. The guest writes Console to its serial
// log at Start and obeys Stop unless IgnoreStop. Fake passes the suite.
//
// Set the exported fields before the first Start; StartErr may change
// between calls under the caller's own synchronisation.
type Fake struct {
	// Caps is what Info reports. NewFake fills in a QEMU-like engine.
	Caps vmm.Info
	// Console is written to the serial log at Start.
	Console string
	// StartErr, when set, makes Start fail with it after validating the
	// spec and before starting anything.
	StartErr error
	// IgnoreStop: the guest ignores Stop's request; Stop kills it after
	// its timeout.
	IgnoreStop bool

	mu        sync.Mutex
	listeners map[string]net.Listener // by API socket; guarded by mu
	guests    map[int]vmm.Handles     // started guests by pid; guarded by mu
	starts    int                     // successful Starts; guarded by mu
}

var _ vmm.Engine = (*Fake)(nil)

// fakeMarker prefixes the fake guest's argv[0], before the API socket.
const fakeMarker = "banger-fake-vmm "

// NewFake returns a fake engine reporting caps, with QEMU-like defaults
// (available, tcg, agent over virtio-serial, qcow2, power-off) for the
// zero fields.
func NewFake(caps vmm.Info) *Fake {
	if caps.Name == "" {
		caps.Name = vmm.QEMU
	}
	if caps.Reason == "" {
		caps.Available = true
	}
	if caps.Accel == "" {
		caps.Accel = "tcg"
	}
	if caps.AgentTransport == "" {
		caps.AgentTransport = vmm.TransportSerial
		caps.Qcow2 = true
	}
	if caps.GuestShutdown == "" {
		caps.GuestShutdown = vmm.ShutdownPoweroff
	}
	return &Fake{Caps: caps, Console: "Linux version 0.0.0-fake (banger vmmtest.Fake)\n"}
}

// Info returns Caps.
func (f *Fake) Info() vmm.Info { return f.Caps }

// Starts returns how many Starts succeeded.
func (f *Fake) Starts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

// Running returns how many guests this Fake started still run.
func (f *Fake) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, h := range f.guests {
		if f.Alive(h) {
			n++
		}
	}
	return n
}

// KillAll kills every guest this Fake started (for t.Cleanup).
func (f *Fake) KillAll(ctx context.Context) {
	f.mu.Lock()
	var hs []vmm.Handles
	for _, h := range f.guests {
		hs = append(hs, h)
	}
	f.mu.Unlock()
	for _, h := range hs {
		_ = f.Kill(ctx, h)
	}
}

// Start validates spec, writes Console to the serial log and starts the
// guest process.
func (f *Fake) Start(ctx context.Context, spec vmm.Spec) (vmm.Handles, error) {
	if err := f.validate(spec); err != nil {
		return vmm.Handles{}, err
	}
	if f.StartErr != nil {
		return vmm.Handles{}, f.StartErr
	}
	if err := proc.ClaimSockets(spec.APISocket, spec.AgentSocket); err != nil {
		return vmm.Handles{}, api.AlreadyExists("vm %s: %w", spec.Name, err)
	}
	l, err := net.Listen("unix", spec.APISocket)
	if err != nil {
		return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
	}
	fail := func(err error) (vmm.Handles, error) {
		l.Close()
		return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
	}
	serial, err := os.OpenFile(spec.SerialLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer serial.Close()
	if _, err := serial.WriteString(f.Console); err != nil {
		return fail(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return fail(err)
	}
	cmd := &exec.Cmd{Path: sleep, Args: []string{fakeMarker + spec.APISocket, "infinity"}, Dir: spec.VMDir,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	go cmd.Wait() // reap it, as proc.Start does
	f.mu.Lock()
	h := vmm.Handles{PID: cmd.Process.Pid, APISocket: spec.APISocket, AgentSocket: spec.AgentSocket,
		AgentTransport: f.Caps.AgentTransport, Accel: f.Caps.Accel}
	if f.Caps.AgentTransport != vmm.TransportSerial && f.Caps.AgentTransport != vmm.TransportVsockHybrid {
		h.AgentSocket, h.VsockCID = "", spec.VsockCID
	}
	if f.listeners == nil {
		f.listeners, f.guests = map[string]net.Listener{}, map[int]vmm.Handles{}
	}
	f.listeners[spec.APISocket] = l
	f.guests[h.PID] = h
	f.starts++
	f.mu.Unlock()
	return h, nil
}

// validate checks spec as the real engines do.
func (f *Fake) validate(spec vmm.Spec) error {
	if err := spec.CheckBasics(); err != nil {
		return err
	}
	kernel, kind := spec.Kernel, "bzImage"
	if f.Caps.NeedsVmlinux {
		kernel, kind = spec.Vmlinux, "vmlinux"
	}
	switch {
	case f.Caps.MaxVCPUs > 0 && spec.VCPUs > f.Caps.MaxVCPUs:
		return api.Invalid("vm %s: %s runs at most %d vcpus, got %d", spec.Name, f.Caps.Name, f.Caps.MaxVCPUs, spec.VCPUs)
	case kernel == "":
		return api.Invalid("vm %s: no kernel (%s) given", spec.Name, kind)
	case spec.APISocket == "" || spec.SerialLog == "":
		return api.Invalid("vm %s: API socket and serial log paths are required", spec.Name)
	case spec.Tap == "" || spec.MAC == "":
		return api.Invalid("vm %s: a tap and a guest MAC are required", spec.Name)
	}
	files := []string{kernel, spec.Initrd}
	seen := map[string]bool{}
	for _, d := range spec.Disks {
		switch {
		case d.ID == "" || strings.ContainsAny(d.ID, ",= ") || seen[d.ID]:
			return api.Invalid("vm %s: disk id %q empty, repeated or with ',', '=' or spaces", spec.Name, d.ID)
		case d.Format != "raw" && !(d.Format == "qcow2" && f.Caps.Qcow2):
			return api.Invalid("vm %s: disk %s: format %q not supported by %s", spec.Name, d.ID, d.Format, f.Caps.Name)
		case d.Path == "":
			return api.Invalid("vm %s: disk %s: empty path", spec.Name, d.ID)
		}
		seen[d.ID] = true
		files = append(files, d.Path)
	}
	for _, p := range files {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return api.Invalid("vm %s: %w", spec.Name, err)
		}
	}
	return nil
}

// Stop asks the guest to end (SIGTERM; ignored with IgnoreStop) and kills
// it after timeout.
func (f *Fake) Stop(ctx context.Context, h vmm.Handles, timeout time.Duration) error {
	if f.Alive(h) {
		if !f.IgnoreStop {
			_ = syscall.Kill(h.PID, syscall.SIGTERM)
		}
		if err := proc.StopOrKill(ctx, h.PID, fakeMarker+h.APISocket, timeout); err != nil {
			return fmt.Errorf("stopping fake engine pid %d: %w", h.PID, err)
		}
	}
	f.cleanup(h)
	return nil
}

// Kill ends the guest at once.
func (f *Fake) Kill(ctx context.Context, h vmm.Handles) error {
	if err := proc.Kill(ctx, h.PID, fakeMarker+h.APISocket); err != nil {
		return fmt.Errorf("killing fake engine: %w", err)
	}
	f.cleanup(h)
	return nil
}

func (f *Fake) cleanup(h vmm.Handles) {
	f.mu.Lock()
	if l := f.listeners[h.APISocket]; l != nil {
		l.Close()
		delete(f.listeners, h.APISocket)
	}
	delete(f.guests, h.PID)
	f.mu.Unlock()
	proc.RemoveSockets(h.APISocket, h.AgentSocket)
}

// State is running while the process runs, else stopped.
func (f *Fake) State(ctx context.Context, h vmm.Handles) (vmm.State, error) {
	if f.Alive(h) {
		return vmm.StateRunning, nil
	}
	return vmm.StateStopped, nil
}

// Alive reports whether the guest process in h runs.
func (f *Fake) Alive(h vmm.Handles) bool {
	return h.APISocket != "" && proc.Alive(h.PID, fakeMarker+h.APISocket)
}

// Spec returns a spec Fake accepts: empty boot files in a temporary
// directory, the engine's paths in dir.
func Spec(t *testing.T, dir string) vmm.Spec {
	boot := t.TempDir()
	spec := vmm.Spec{
		Name: "fake1", VMDir: dir, VCPUs: 2, MemoryMiB: 256, UID: 1900000003, GID: 1900000003,
		Kernel: filepath.Join(boot, "vmlinuz"), Vmlinux: filepath.Join(boot, "vmlinux"),
		Disks: []vmm.Disk{{ID: "root", Path: filepath.Join(boot, "root.ext4"), Format: "raw"}},
		Tap:   "tap0", MAC: "06:00:00:00:00:01", VsockCID: 3,
		APISocket: filepath.Join(dir, "api.sock"), AgentSocket: filepath.Join(dir, "agent.sock"),
		SerialLog: filepath.Join(dir, "serial.log"), EngineLog: filepath.Join(dir, "engine.log"),
	}
	for _, p := range []string{spec.Kernel, spec.Vmlinux, spec.Disks[0].Path} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return spec
}
