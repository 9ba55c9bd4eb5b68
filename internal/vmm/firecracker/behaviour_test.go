package firecracker

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/golden"
	"banger/internal/vmm"
)

// These tests hold the driver to how Firecracker really behaves on x86, as
// the fake models it: its own log lines stay off the serial console, a
// guest power-off leaves the process running, a guest reboot (reboot=k)
// ends it, and each start begins fresh log files.

// waitSerial waits until the serial log contains want.
func waitSerial(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial log %s never showed %q: %q", path, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startFake starts a fake VM and registers its kill.
func startFake(t *testing.T) (*Engine, vmm.Spec, vmm.Handles) {
	t.Helper()
	e, _ := fakeEngine(t)
	spec := fakeSpec(t)
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Kill(context.Background(), h) })
	return e, spec, h
}

// guestExec runs argv through the fake guest's agent.
func guestExec(t *testing.T, h vmm.Handles, argv ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := agent.DialHybridVsock(ctx, h.AgentSocket, vmm.AgentPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code, err := c.Exec(ctx, api.ExecRequest{Argv: argv}, nil, io.Discard, io.Discard)
	if err != nil || code != 0 {
		t.Fatalf("exec %v = %d, %v", argv, code, err)
	}
}

func TestSerialLogHoldsOnlyGuestOutput(t *testing.T) {
	t.Setenv("FCTEST_BOOT_DELAY", "700ms")
	_, spec, h := startFake(t)
	// Firecracker has logged its banner and every request by now; none of
	// it may reach the console before the guest's kernel does.
	if b, _ := os.ReadFile(spec.SerialLog); len(b) != 0 {
		t.Fatalf("serial log before the guest booted = %q", b)
	}
	waitSerial(t, spec.SerialLog, "Linux version")
	serial := golden.ReadFile(t, spec.SerialLog)
	if strings.Contains(serial, "Firecracker") || strings.Contains(serial, "API server") {
		t.Errorf("firecracker's log lines reached the serial console: %q", serial)
	}
	if _, err := agent.DialHybridVsock(context.Background(), h.AgentSocket, vmm.AgentPort); err != nil {
		t.Errorf("agent after boot: %v", err)
	}
}

func TestGuestPoweroffLeavesFirecrackerRunning(t *testing.T) {
	e, spec, h := startFake(t)
	waitSerial(t, spec.SerialLog, "Linux version")
	guestExec(t, h, "systemctl", "poweroff", "--no-block")
	waitSerial(t, spec.SerialLog, "reboot: Power down")
	time.Sleep(300 * time.Millisecond)
	if !e.Alive(h) {
		t.Fatal("firecracker exited on a guest power-off; the real one keeps running")
	}
	if st, err := e.State(context.Background(), h); err != nil || st != vmm.StateRunning {
		t.Errorf("State of a halted guest = %q, %v; firecracker still says Running", st, err)
	}
	// A halted guest ignores Ctrl-Alt-Del: Stop must kill after its timeout.
	t0 := time.Now()
	if err := e.Stop(context.Background(), h, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 400*time.Millisecond {
		t.Errorf("Stop of a halted guest returned after %v, before its timeout", d)
	}
	checkGone(t, e, h)
}

func TestGuestRebootEndsFirecracker(t *testing.T) {
	e, spec, h := startFake(t)
	waitSerial(t, spec.SerialLog, "Linux version")
	guestExec(t, h, "systemctl", "reboot", "--no-block")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for e.Alive(h) {
		if ctx.Err() != nil {
			t.Fatal("firecracker still runs after the guest rebooted with reboot=k")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(golden.ReadFile(t, spec.SerialLog), "reboot: Restarting system") {
		t.Errorf("serial log = %q", golden.ReadFile(t, spec.SerialLog))
	}
	if err := e.Stop(context.Background(), h, time.Second); err != nil {
		t.Fatal(err)
	}
	checkGone(t, e, h)
}

func TestEachStartBeginsFreshLogs(t *testing.T) {
	e, _ := fakeEngine(t)
	spec := fakeSpec(t)
	for i := 0; i < 2; i++ {
		h, err := e.Start(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Kill(context.Background(), h); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{apiLogPath(spec), apiLogPath(spec) + ".1"} {
		if n := strings.Count(golden.ReadFile(t, p), "Running Firecracker"); n != 1 {
			t.Errorf("%s holds %d runs' banners, want 1", p, n)
		}
	}
	if n := strings.Count(golden.ReadFile(t, spec.EngineLog), "API server listening"); n != 1 {
		t.Errorf("engine log holds %d runs, want 1", n)
	}
	if _, err := os.Stat(spec.MetricsPath + ".1"); err != nil {
		t.Errorf("metrics of the first run not rotated: %v", err)
	}
}

func TestProcessArgsSetLoggerOnTheCommandLine(t *testing.T) {
	spec := fakeSpec(t)
	l := New(Config{Binary: "/usr/local/bin/firecracker"}).planLaunch(spec)
	got := strings.Join(l.args, " ")
	want := "--api-sock " + spec.APISocket + " --id fc1 --log-path " + apiLogPath(spec) + " --level Info --metrics-path " + spec.MetricsPath
	if got != want {
		t.Errorf("args = %q\nwant   %q", got, want)
	}
}
