// Package vmmtest is the conformance suite every vmm.Engine runs (like
// disk/disktest and containerd's snapshots/testsuite): QEMU with real
// guests under TCG, Firecracker with its strict fake binary (fctest), and
// Fake, the engine for the tests of callers, which passes it too. After
// every case a leak check fails the case when a process naming the case's
// directory still runs or a socket, or a file the handles name, is left in
// it; whatever leaked is killed or removed so one leak does not spoil the
// next case.
//
// Decided behaviour the suite pins down:
//   - Info is stable, names its engine, says why when it is not available,
//     and says how a guest ends the process (poweroff or reboot).
//   - Start refuses a bad spec (no name, no vCPUs, no memory, more vCPUs
//     than Info.MaxVCPUs when set, no kernel, a kernel that does not exist)
//     as Invalid before it starts anything or writes into the VM directory.
//   - Start returns handles whose process runs (Alive), in its own session,
//     with the agent transport and accel Info reports; the guest writes to
//     its serial log; State says running.
//   - Stop returns within its timeout (plus slack) with the process gone,
//     Alive false and State stopped, also on handles that went through
//     JSON (a daemon restart); Stop and Kill of a dead process succeed and
//     still remove what the engine left.
//   - A second Start over a running guest's sockets is refused and leaves
//     the running guest and its sockets alone.
package vmmtest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/vmm"
)

// Target is the engine under test and how to describe its guests.
type Target struct {
	Engine vmm.Engine
	// Spec returns the spec of a guest that boots and writes to its serial
	// console, with every path the engine creates (sockets, logs) inside
	// dir, an empty directory owned by the case. Files the guest boots
	// from may live elsewhere.
	Spec func(t *testing.T, dir string) vmm.Spec
	// BootTimeout bounds the wait for the first console output (default
	// 30s); StopTimeout is the timeout given to Stop (default 3s).
	BootTimeout time.Duration
	StopTimeout time.Duration
	// Confined: the engine process must run unprivileged and sandboxed
	// (CheckConfined); AllowedGroups are the supplementary groups it may hold.
	Confined      bool
	AllowedGroups []string
}

// stopSlack is how much longer than its timeout Stop may take (killing and
// reaping the process, removing its files).
const stopSlack = 10 * time.Second

// Run runs the conformance suite against tg. Cases run one at a time, each
// with at most one guest running (two in the second-start case, of which
// the second must be refused before it boots).
func Run(t *testing.T, tg Target) {
	if tg.BootTimeout == 0 {
		tg.BootTimeout = 30 * time.Second
	}
	if tg.StopTimeout == 0 {
		tg.StopTimeout = 3 * time.Second
	}
	if info := tg.Engine.Info(); !info.Available {
		t.Skipf("engine %s unavailable: %s", info.Name, info.Reason)
	}
	cases := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"InfoIsCoherent", testInfo},
		{"StartRejectsInvalidSpecs", testInvalid},
		{"StartMissingKernelLeavesNothing", testMissingKernel},
		{"StartConsoleStop", testStartStop},
		{"KillEndsAtOnce", testKill},
		{"StopAfterTheProcessDied", testStopDead},
		{"SecondStartOnTheSameSocketsIsRefused", testSecondStart},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &env{Target: tg, dir: t.TempDir(), ctx: t.Context()}
			t.Cleanup(func() { e.leakCheck(t) }) // first registered: runs last
			c.fn(t, e)
		})
	}
}

// env is one case's engine and directory.
type env struct {
	Target
	dir     string
	ctx     context.Context
	started []vmm.Handles // every handle Start returned, for the leak check
}

func (e *env) spec(t *testing.T) vmm.Spec { return e.Spec(t, e.dir) }

// start calls Start and registers a Kill on cleanup.
func (e *env) start(t *testing.T, spec vmm.Spec) vmm.Handles {
	t.Helper()
	h, err := e.Engine.Start(e.ctx, spec)
	if err != nil {
		t.Fatalf("Start(%s): %v", spec.Name, err)
	}
	e.started = append(e.started, h)
	t.Cleanup(func() { _ = e.Engine.Kill(context.Background(), h) })
	return h
}

func testInfo(t *testing.T, e *env) {
	info := e.Engine.Info()
	if info.Name == "" {
		t.Error("Info.Name is empty")
	}
	if info.Available != (info.Reason == "") {
		t.Errorf("Info.Available = %v with Reason %q: a reason is given exactly when unavailable", info.Available, info.Reason)
	}
	if info.GuestShutdown != vmm.ShutdownPoweroff && info.GuestShutdown != vmm.ShutdownReboot {
		t.Errorf("Info.GuestShutdown = %q, want %q or %q", info.GuestShutdown, vmm.ShutdownPoweroff, vmm.ShutdownReboot)
	}
	if !slices.Contains([]string{vmm.TransportVsockHybrid, vmm.TransportVsock, vmm.TransportSerial}, info.AgentTransport) {
		t.Errorf("Info.AgentTransport = %q", info.AgentTransport)
	}
	if info.Accel != "kvm" && info.Accel != "tcg" {
		t.Errorf("Info.Accel = %q, want kvm or tcg", info.Accel)
	}
	if info.MaxVCPUs < 0 {
		t.Errorf("Info.MaxVCPUs = %d", info.MaxVCPUs)
	}
	if again := e.Engine.Info(); again != info {
		t.Errorf("Info changed between calls: %+v then %+v", info, again)
	}
}

// kernelOf returns the spec field holding the kernel this engine boots.
func kernelOf(info vmm.Info, spec *vmm.Spec) *string {
	if info.NeedsVmlinux {
		return &spec.Vmlinux
	}
	return &spec.Kernel
}

func testInvalid(t *testing.T, e *env) {
	info := e.Engine.Info()
	cases := []struct {
		name string
		edit func(s *vmm.Spec)
	}{
		{"no name", func(s *vmm.Spec) { s.Name = "" }},
		{"0 vcpus", func(s *vmm.Spec) { s.VCPUs = 0 }},
		{"negative vcpus", func(s *vmm.Spec) { s.VCPUs = -1 }},
		{"0 memory", func(s *vmm.Spec) { s.MemoryMiB = 0 }},
		{"negative memory", func(s *vmm.Spec) { s.MemoryMiB = -512 }},
		{"no kernel", func(s *vmm.Spec) { *kernelOf(info, s) = "" }},
		{"missing kernel", func(s *vmm.Spec) { *kernelOf(info, s) = filepath.Join(e.dir, "no-such-kernel") }},
		{"no api socket", func(s *vmm.Spec) { s.APISocket = "" }},
	}
	if info.MaxVCPUs > 0 {
		cases = append(cases, struct {
			name string
			edit func(s *vmm.Spec)
		}{"vcpus over MaxVCPUs", func(s *vmm.Spec) { s.VCPUs = info.MaxVCPUs + 1 }})
	}
	for _, c := range cases {
		spec := e.spec(t)
		before := entries(t, e.dir)
		c.edit(&spec)
		h, err := e.Engine.Start(e.ctx, spec)
		if err == nil {
			e.started = append(e.started, h)
			_ = e.Engine.Kill(context.Background(), h)
			t.Errorf("%s: Start succeeded", c.name)
			continue
		}
		if !api.IsInvalid(err) {
			t.Errorf("%s: Start = %v (kind %v), want Invalid", c.name, err, kindOf(err))
		}
		if after := entries(t, e.dir); !slices.Equal(before, after) {
			t.Errorf("%s: a refused Start changed the VM dir: %v, then %v", c.name, before, after)
		}
	}
}

func testMissingKernel(t *testing.T, e *env) {
	spec := e.spec(t)
	*kernelOf(e.Engine.Info(), &spec) = filepath.Join(t.TempDir(), "vmlinuz-gone")
	_, err := e.Engine.Start(e.ctx, spec)
	if !api.IsInvalid(err) {
		t.Fatalf("Start with a missing kernel = %v, want Invalid", err)
	}
	for _, p := range []string{spec.APISocket, spec.AgentSocket, spec.SerialLog, spec.EngineLog} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists after a refused Start", p)
		}
	}
}

func testStartStop(t *testing.T, e *env) {
	spec := e.spec(t)
	info := e.Engine.Info()
	t0 := time.Now()
	h := e.start(t, spec)
	t.Logf("Start returned after %v", time.Since(t0))
	checkHandles(t, info, spec, h)
	if !e.Engine.Alive(h) {
		t.Fatal("Alive = false right after Start")
	}
	if e.Confined {
		CheckConfined(t, h.PID, e.AllowedGroups...)
	}
	if st, err := e.Engine.State(e.ctx, h); err != nil || st != vmm.StateRunning {
		t.Errorf("State = %q, %v; want running", st, err)
	}
	e.waitConsole(t, spec)
	t.Logf("console output %v after Start", time.Since(t0))

	// Stop from handles that went through handles.json, as after a
	// daemon restart.
	h = throughJSON(t, h)
	t1 := time.Now()
	if err := e.Engine.Stop(e.ctx, h, e.StopTimeout); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(t1); d > e.StopTimeout+stopSlack {
		t.Errorf("Stop took %v with a timeout of %v", d, e.StopTimeout)
	} else {
		t.Logf("Stop took %v (timeout %v)", d, e.StopTimeout)
	}
	e.checkGone(t, h)
}

func checkHandles(t *testing.T, info vmm.Info, spec vmm.Spec, h vmm.Handles) {
	t.Helper()
	if h.PID <= 0 {
		t.Fatalf("Start returned pid %d", h.PID)
	}
	if h.APISocket == "" {
		t.Error("handles name no API socket")
	}
	if h.AgentTransport != info.AgentTransport || h.Accel != info.Accel {
		t.Errorf("handles say transport %q accel %q; Info says %q, %q", h.AgentTransport, h.Accel, info.AgentTransport, info.Accel)
	}
	if sid, err := unix.Getsid(h.PID); err != nil || sid != h.PID {
		t.Errorf("getsid(%d) = %d, %v: the engine process is not in its own session", h.PID, sid, err)
	}
}

func testKill(t *testing.T, e *env) {
	spec := e.spec(t)
	h := e.start(t, spec)
	e.waitConsole(t, spec)
	t0 := time.Now()
	if err := e.Engine.Kill(e.ctx, h); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if d := time.Since(t0); d > stopSlack {
		t.Errorf("Kill took %v", d)
	}
	e.checkGone(t, h)
	if err := e.Engine.Kill(e.ctx, h); err != nil {
		t.Errorf("Kill of a killed engine: %v", err)
	}
	if err := e.Engine.Stop(e.ctx, h, e.StopTimeout); err != nil {
		t.Errorf("Stop of a killed engine: %v", err)
	}
}

// testStopDead: the engine process died behind the engine's back (OOM
// killer, a crash); Stop must succeed at once and remove what it left.
func testStopDead(t *testing.T, e *env) {
	spec := e.spec(t)
	h := e.start(t, spec)
	if err := unix.Kill(h.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(stopSlack)
	for e.Engine.Alive(h) {
		if time.Now().After(deadline) {
			t.Fatalf("Alive still true %v after SIGKILL", stopSlack)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t0 := time.Now()
	if err := e.Engine.Stop(e.ctx, h, e.StopTimeout); err != nil {
		t.Fatalf("Stop of a dead engine: %v", err)
	}
	if d := time.Since(t0); d >= e.StopTimeout {
		t.Errorf("Stop of a dead engine took %v, its whole timeout", d)
	}
	e.checkGone(t, h)
	if err := e.Engine.Stop(e.ctx, h, e.StopTimeout); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func testSecondStart(t *testing.T, e *env) {
	spec := e.spec(t)
	h := e.start(t, spec)
	var sockets []string // the first guest's, to be left alone
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if _, err := os.Lstat(p); p != "" && err == nil {
			sockets = append(sockets, p)
		}
	}
	h2, err := e.Engine.Start(e.ctx, spec)
	if err == nil {
		e.started = append(e.started, h2)
		_ = e.Engine.Kill(context.Background(), h2)
		t.Fatal("a second Start over a running guest's sockets succeeded")
	}
	t.Logf("second Start: %v", err)
	if !e.Engine.Alive(h) {
		t.Fatal("the first guest died when a second Start was refused")
	}
	for _, p := range sockets {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("the first guest's socket %s is gone after a refused Start: %v", p, err)
		}
	}
	if st, err := e.Engine.State(e.ctx, h); err != nil || st != vmm.StateRunning {
		t.Errorf("State of the first guest after a refused Start = %q, %v; want running", st, err)
	}
	if err := e.Engine.Kill(e.ctx, h); err != nil {
		t.Fatal(err)
	}
	e.checkGone(t, h)
}

// waitConsole waits until the guest has written to its serial log.
func (e *env) waitConsole(t *testing.T, spec vmm.Spec) {
	t.Helper()
	deadline := time.Now().Add(e.BootTimeout)
	for {
		if st, err := os.Stat(spec.SerialLog); err == nil && st.Size() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest wrote nothing to %s within %v", spec.SerialLog, e.BootTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkGone checks that the process in h has ended and its sockets are
// gone.
func (e *env) checkGone(t *testing.T, h vmm.Handles) {
	t.Helper()
	if e.Engine.Alive(h) {
		t.Errorf("pid %d alive after it ended", h.PID)
	}
	if st, err := e.Engine.State(e.ctx, h); err != nil || st != vmm.StateStopped {
		t.Errorf("State after the end = %q, %v; want stopped", st, err)
	}
	for _, p := range ownedPaths(h) {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left after the engine ended", p)
		}
	}
}

func throughJSON(t *testing.T, h vmm.Handles) vmm.Handles {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var out vmm.Handles
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func kindOf(err error) api.Kind {
	if e := api.AsError(err); e != nil {
		return e.Kind
	}
	return ""
}
