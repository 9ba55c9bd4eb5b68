// Package firecracker runs guests in Firecracker microVMs, directly or
// under Firecracker's jailer.
//
// Start launches the process detached (see internal/vmm/proc) with
// `--api-sock <APISocket> --id <name> --log-path … --level Info
// --metrics-path …`, routes its stdout (the guest's serial console) to
// Spec.SerialLog and stderr to Spec.EngineLog, waits for the API socket,
// then configures the VM over the API — boot source, machine config,
// drives, network, vsock — and sends InstanceStart. The logger is set on
// the command line so that Firecracker's own lines (its banner, each API
// request) go to firecracker-api.log beside EngineLog, never to the
// serial console. Each start rotates the previous run's engine log,
// Firecracker log and metrics to "<name>.1".
//
// Firecracker has no ACPI power-off on x86: a guest that powers off halts
// and Firecracker keeps running. With reboot=k (always in the boot args) a
// guest reboot ends it, so Info.GuestShutdown is "reboot" and Stop sends
// SendCtrlAltDel (the guest reboots). State, Stop and Kill use the API
// socket and /proc only, so they work after a daemon restart.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/netw/tun"
	"banger/internal/revert"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// DefaultBinary is used when Config.Binary is empty.
const DefaultBinary = "firecracker"

// socketTimeout bounds the wait for the API socket after launch.
const socketTimeout = 10 * time.Second

// Config says which Firecracker to run and how.
type Config struct {
	Binary string // firecracker binary; default "firecracker" from PATH
	// JailerBinary runs Firecracker under the jailer, as each VM's own
	// uid:gid (Spec.UID/GID) in a chroot under ChrootBase, its own pid
	// namespace and a cgroup sized from the VM. Without it the engine is
	// unavailable unless Unjailed says otherwise (FindJailer looks for it).
	JailerBinary string
	// Unjailed is the explicit opt-out: without a jailer, run Firecracker
	// itself, as root, with no chroot: a VMM escape is host root. The
	// doctor warns about it.
	Unjailed   bool
	ChrootBase string // default /srv/jailer
	Version    string // reported by Info; asked from the binary when empty
	// TapNetns is the network namespace (a /run/netns path) the taps live
	// in, given to the jailer as --netns; empty: the host's. Tests use it.
	TapNetns string
}

// Engine is the Firecracker engine.
type Engine struct {
	cfg      Config
	execPath string // the jailer's --exec-file: Binary, canonical
	info     vmm.InfoOnce

	memMu   sync.Mutex          // guards memSums
	memSums map[string]verified // snapshot memory files' hashes, by path
}

// FindJailer returns the jailer that goes with the firecracker binary at
// fcPath: "jailer" beside it, else on PATH; "" when there is none.
func FindJailer(fcPath string) string {
	if fcPath != "" {
		p := filepath.Join(filepath.Dir(fcPath), "jailer")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("jailer"); err == nil {
		return p
	}
	return ""
}

var _ vmm.Engine = (*Engine)(nil)

// New returns a Firecracker engine for cfg.
func New(cfg Config) *Engine {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.ChrootBase == "" {
		cfg.ChrootBase = "/srv/jailer"
	}
	return &Engine{cfg: cfg, execPath: canonicalExec(cfg.Binary)}
}

func (e *Engine) jailed() bool { return e.cfg.JailerBinary != "" }

// Info reports the binary and its version (looked up once).
func (e *Engine) Info() vmm.Info {
	return e.info.Get(e.probe)
}

func (e *Engine) probe() vmm.Info {
	info := vmm.Info{
		Name: vmm.Firecracker, Accel: "kvm", AgentTransport: vmm.TransportVsockHybrid,
		NeedsVmlinux: true, Version: e.cfg.Version, MaxVCPUs: MaxVCPUs,
		GuestShutdown: vmm.ShutdownReboot,
	}
	path, err := exec.LookPath(e.cfg.Binary)
	if err != nil {
		info.Reason = fmt.Sprintf("%s not found: install a Firecracker release binary from github.com/firecracker-microvm/firecracker/releases", e.cfg.Binary)
		return info
	}
	info.Binary = path
	switch {
	case e.jailed():
		if _, err := exec.LookPath(e.cfg.JailerBinary); err != nil {
			info.Reason = fmt.Sprintf("jailer %s not found: install it from the same Firecracker release", e.cfg.JailerBinary)
			return info
		}
	case !e.cfg.Unjailed:
		info.Reason = "no jailer found beside " + path + " or on PATH: Firecracker runs only under the jailer " +
			"(install the jailer from the same release, or set firecracker_unjailed = true to run it as root, unconfined)"
		return info
	}
	if info.Version == "" {
		out, err := vmm.BinaryVersion(path)
		if err != nil {
			info.Reason = err.Error()
			return info
		}
		// "Firecracker v1.16.1"
		if f := strings.Fields(out); len(f) >= 2 {
			info.Version = strings.TrimPrefix(f[1], "v")
		}
	}
	info.Available = true
	info.Snapshots = true // Firecracker snapshots need only KVM, which it needs anyway
	return info
}

// launch is one Start (or Restore) in progress.
type launch struct {
	binary string
	args   []string
	paths  paths
	api    string // host path of the API socket
	agent  string // host path of the vsock UDS
	marker string
	extra  map[string]string
	jail   *jailPlan // nil: not jailed
	// links are the symlinks an unjailed Firecracker opens its drives
	// through (host path → target): relative names in the VM dir, its
	// working directory, so that a snapshot's recorded drive paths name a
	// restored child's own disks in the child's VM dir.
	links map[string]string
}

func (e *Engine) planLaunch(spec vmm.Spec) launch {
	var l launch
	if e.jailed() {
		p := e.planJail(spec)
		l = launch{binary: e.cfg.JailerBinary, args: p.Args, paths: p.Paths, api: p.APISocket,
			agent: p.AgentSocket, marker: p.Marker, extra: map[string]string{"marker": p.Marker, "jail_dir": p.JailDir},
			jail: &p}
	} else {
		ps := paths{Kernel: spec.Vmlinux, Initrd: spec.Initrd, LogPath: apiLogPath(spec),
			MetricsPath: spec.MetricsPath, VsockUDS: spec.AgentSocket}
		links := map[string]string{}
		for i, d := range spec.Disks {
			name := "fc-drive-" + strconv.Itoa(i)
			ps.Disks = append(ps.Disks, name)
			links[filepath.Join(spec.VMDir, name)] = d.Path
		}
		l = launch{binary: e.cfg.Binary, args: processArgs(spec.APISocket, spec.Name, ps),
			paths: ps, api: spec.APISocket, agent: spec.AgentSocket, marker: spec.APISocket,
			extra: map[string]string{}, links: links}
	}
	l.recordShape(spec)
	return l
}

// apiLogPath is where Firecracker's own logger writes (--log-path).
func apiLogPath(spec vmm.Spec) string {
	return filepath.Join(filepath.Dir(spec.EngineLog), "firecracker-api.log")
}

// Start validates spec, launches Firecracker, configures and boots the
// guest. On failure the process is killed and its files removed.
func (e *Engine) Start(ctx context.Context, spec vmm.Spec) (vmm.Handles, error) {
	if err := validate(spec); err != nil {
		return vmm.Handles{}, err
	}
	l := e.planLaunch(spec)
	return e.run(ctx, spec, l, nil, configRequests(spec, l.paths))
}

// run launches l (in its jail, prepared here, then handed extra — the
// snapshot files of a restore), and sends reqs. On failure everything it
// made is undone: process, sockets, jail, drive links.
func (e *Engine) run(ctx context.Context, spec vmm.Spec, l launch, inJail func(jailPlan) error, reqs []apiRequest) (vmm.Handles, error) {
	r := revert.New()
	defer r.Fail()
	if l.jail != nil {
		if proc.Alive(procWithMarker(l.marker)) {
			return vmm.Handles{}, api.AlreadyExists("vm %s: a firecracker with id %s already runs", spec.Name, spec.Name)
		}
		r.Add(func() { _ = removeJail(l.jail.JailDir) })
		if err := l.jail.prepare(spec.UID, spec.GID); err != nil {
			return vmm.Handles{}, api.Unavailable("vm %s: preparing the jail: %w", spec.Name, err)
		}
		if inJail != nil {
			if err := inJail(*l.jail); err != nil {
				return vmm.Handles{}, err
			}
		}
		// The jailed uid opens the tap by name: it must own it.
		if err := tun.SetOwner(spec.Tap, e.cfg.TapNetns, spec.UID, spec.GID); err != nil {
			return vmm.Handles{}, api.Unavailable("vm %s: handing tap %s to uid %d: %w", spec.Name, spec.Tap, spec.UID, err)
		}
	} else {
		// Firecracker refuses an existing socket path; a stale one is ours,
		// a live one another engine's.
		if err := proc.ClaimSockets(spec.APISocket, spec.AgentSocket); err != nil {
			return vmm.Handles{}, api.AlreadyExists("vm %s: %w", spec.Name, err)
		}
		for _, f := range []string{l.paths.LogPath, l.paths.MetricsPath} {
			if err := rotate(f, true); err != nil {
				return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
			}
		}
		r.Add(func() { removeLinks(l.extra) })
		if err := makeLinks(l.links); err != nil {
			return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
		}
	}
	if err := rotate(spec.EngineLog, false); err != nil {
		return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
	}
	p, err := proc.Start(proc.Options{Binary: l.binary, Args: l.args, Stdout: spec.SerialLog, Stderr: spec.EngineLog, Dir: spec.VMDir})
	if err != nil {
		return vmm.Handles{}, api.Unavailable("vm %s: %w", spec.Name, err)
	}
	pid := p.PID
	r.Add(func() {
		_ = proc.Kill(context.Background(), pid, l.marker)
		<-p.Exited
		proc.RemoveSockets(l.api, l.agent)
	})
	exited := func() (bool, string) {
		select {
		case <-p.Exited:
			return true, p.ExitStatus()
		default:
			return false, ""
		}
	}
	if l.jail != nil {
		// --new-pid-ns: the jailer forks Firecracker into its own pid
		// namespace, writes its (host) pid into the jail and exits.
		if pid, err = waitJailer(ctx, p, spec, l.jail.PIDFile); err != nil {
			return vmm.Handles{}, err
		}
		exited = func() (bool, string) {
			if proc.Alive(pid, l.marker) {
				return false, ""
			}
			return true, "ended"
		}
	}
	slog.Debug("firecracker started", "vm", spec.Name, "pid", pid, "args", l.args)
	if err := waitSocket(ctx, exited, spec, l.api); err != nil {
		return vmm.Handles{}, err
	}
	c := newClient(l.api)
	for _, req := range reqs {
		if err := c.do(ctx, req.Method, req.Path, req.Body, nil); err != nil {
			return vmm.Handles{}, api.Unavailable("vm %s: configuring firecracker: %w", spec.Name, err)
		}
	}
	r.Success()
	return vmm.Handles{
		PID: pid, APISocket: l.api, AgentSocket: l.agent, AgentTransport: vmm.TransportVsockHybrid,
		VsockCID: spec.VsockCID, Accel: "kvm", Extra: l.extra,
	}, nil
}

// rotate moves the previous run's file at path to path+".1" (replacing an
// older one) and, with create, makes path anew and empty: Firecracker opens
// its log and metrics files without truncating, so a restart would append
// to the old run's lines. Firecracker needs them to exist.
func rotate(path string, create bool) error {
	if path == "" {
		return nil
	}
	if err := os.Rename(path, path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotating %s: %w", path, err)
	}
	if !create {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	return f.Close()
}

// validate checks the spec and that every file the guest needs exists.
func validate(spec vmm.Spec) error {
	if err := validateRun(spec); err != nil {
		return err
	}
	if spec.Vmlinux == "" {
		return api.Invalid("vm %s: no uncompressed kernel (vmlinux) given; firecracker cannot boot a bzImage", spec.Name)
	}
	return checkFiles(spec.Name, map[string]string{"kernel": spec.Vmlinux, "initrd": spec.Initrd})
}

// validateRun checks what a booted and a restored guest both need: the
// shape, the tap, the paths and the disks.
func validateRun(spec vmm.Spec) error {
	if err := spec.CheckBasics(); err != nil {
		return err
	}
	if spec.VCPUs > MaxVCPUs {
		return api.Invalid("vm %s: firecracker runs at most %d vcpus, got %d", spec.Name, MaxVCPUs, spec.VCPUs).
			WithFix(fmt.Sprintf("use --vcpus between 1 and %d, or --engine qemu", MaxVCPUs))
	}
	switch {
	case spec.Tap == "":
		return api.Invalid("vm %s: no tap device given", spec.Name)
	case spec.APISocket == "" || spec.AgentSocket == "" || spec.EngineLog == "" || spec.VMDir == "":
		return api.Invalid("vm %s: VM dir, API socket, agent socket and engine log paths are required", spec.Name)
	case spec.VsockCID < 3:
		return api.Invalid("vm %s: vsock cid must be >= 3, got %d", spec.Name, spec.VsockCID)
	case len(spec.Disks) == 0:
		return api.Invalid("vm %s: no root disk", spec.Name)
	}
	files := map[string]string{}
	for _, d := range spec.Disks {
		if d.Format != "raw" {
			return api.Invalid("vm %s: disk %s is %s; firecracker opens raw disks only", spec.Name, d.ID, d.Format).
				WithFix("use a raw disk driver (reflink, copy or device-mapper) for firecracker VMs")
		}
		files["disk "+d.ID] = d.Path
	}
	return checkFiles(spec.Name, files)
}

// checkFiles checks that each named file exists.
func checkFiles(name string, files map[string]string) error {
	for what, path := range files {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return api.Invalid("vm %s: %s %s: %w", name, what, path, err)
		}
	}
	return nil
}

// waitSocket waits until the API socket accepts connections; exited says
// whether Firecracker ended (and how).
func waitSocket(ctx context.Context, exited func() (bool, string), spec vmm.Spec, sock string) error {
	ctx, cancel := context.WithTimeout(ctx, socketTimeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if gone, how := exited(); gone {
			return api.Unavailable("vm %s: firecracker exited (%s): %s", spec.Name, how, proc.LogTail(spec.EngineLog))
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return api.Unavailable("vm %s: firecracker API socket %s not ready within %v (log: %s)",
				spec.Name, sock, socketTimeout, proc.LogTail(spec.EngineLog))
		case <-t.C:
		}
	}
}

// marker is what Alive looks for in the process's command line.
func marker(h vmm.Handles) string {
	if m := h.Extra["marker"]; m != "" {
		return m
	}
	return h.APISocket
}

// Stop sends SendCtrlAltDel (Ctrl-Alt-Del on the guest's keyboard: systemd
// reboots, the kernel resets through the i8042 — reboot=k — and
// Firecracker exits) and kills the process after timeout. A guest that
// already rebooted has ended Firecracker; one that halted (powered off)
// ignores the keys and is killed after timeout.
func (e *Engine) Stop(ctx context.Context, h vmm.Handles, timeout time.Duration) error {
	ctrlAltDel := func(ctx context.Context) error {
		return newClient(h.APISocket).do(ctx, http.MethodPut, "/actions", action{ActionType: "SendCtrlAltDel"}, nil)
	}
	if err := proc.AskThenStop(ctx, h.PID, marker(h), timeout, ctrlAltDel); err != nil {
		return fmt.Errorf("stopping firecracker pid %d: %w", h.PID, err)
	}
	cleanup(h)
	return nil
}

// Kill ends Firecracker at once and waits for it to be gone.
func (e *Engine) Kill(ctx context.Context, h vmm.Handles) error {
	if err := proc.Kill(ctx, h.PID, marker(h)); err != nil {
		return fmt.Errorf("killing firecracker: %w", err)
	}
	cleanup(h)
	return nil
}

// cleanup removes what an ended Firecracker leaves: its sockets, its
// drive links and the jail (links only; the VM's own files stay).
func cleanup(h vmm.Handles) {
	proc.RemoveSockets(h.APISocket, h.AgentSocket)
	removeLinks(h.Extra)
	if err := removeJail(h.Extra["jail_dir"]); err != nil {
		slog.Warn("removing firecracker jail", "jail", h.Extra["jail_dir"], "err", err)
	}
}

// waitJailer waits for the jailer to fork Firecracker (--new-pid-ns) and
// exit 0, and returns Firecracker's pid from the pid file it wrote.
func waitJailer(ctx context.Context, p *proc.Process, spec vmm.Spec, pidFile string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, socketTimeout)
	defer cancel()
	select {
	case <-p.Exited:
	case <-ctx.Done():
		return 0, api.Unavailable("vm %s: the jailer did not start firecracker within %v (log: %s)", spec.Name, socketTimeout, proc.LogTail(spec.EngineLog))
	}
	if st := p.ExitStatus(); st != "exit status 0" {
		return 0, api.Unavailable("vm %s: the jailer failed (%s): %s", spec.Name, st, proc.LogTail(spec.EngineLog))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, api.Unavailable("vm %s: reading firecracker's pid from the jail: %w", spec.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, api.Unavailable("vm %s: the jailer's pid file %s holds %q", spec.Name, pidFile, b)
	}
	return pid, nil
}

// procWithMarker returns a live process's pid whose command line holds
// marker (0, marker when none): a jailed Firecracker of the same id.
func procWithMarker(marker string) (int, string) {
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err == nil && proc.Alive(pid, marker) {
			return pid, marker
		}
	}
	return 0, marker
}

// State asks the API (GET /). A gone process is StateStopped, and so is a
// process whose guest was never started.
func (e *Engine) State(ctx context.Context, h vmm.Handles) (vmm.State, error) {
	return vmm.AskState(func() bool { return e.Alive(h) }, func() (vmm.State, error) {
		var info instanceInfo
		if err := newClient(h.APISocket).do(ctx, http.MethodGet, "/", nil, &info); err != nil {
			return vmm.StateUnknown, fmt.Errorf("asking firecracker pid %d for its state: %w", h.PID, err)
		}
		switch info.State {
		case "Running":
			return vmm.StateRunning, nil
		case "Paused":
			return vmm.StatePaused, nil
		case "Not started":
			return vmm.StateStopped, nil
		}
		return vmm.StateUnknown, nil
	})
}

// Alive reports whether the Firecracker in h still runs.
func (e *Engine) Alive(h vmm.Handles) bool { return proc.Alive(h.PID, marker(h)) }
