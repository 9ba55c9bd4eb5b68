package proc

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStartDetachedAliveKill(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker.sock")
	log := filepath.Join(dir, "out.log")
	p, err := Start(Options{Binary: "sh", Args: []string{"-c", "echo hello; echo oops >&2; exec sleep 30", marker}, Stdout: log, Stderr: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Kill(context.Background(), p.PID, marker) })

	if sid, err := unix.Getsid(p.PID); err != nil || sid != p.PID {
		t.Errorf("getsid(%d) = %d, %v; want its own session", p.PID, sid, err)
	}
	// exec replaces sh's argv (which named marker) with sleep's; "oops" is
	// written before the exec, so wait for the exec itself (under load the
	// check used to run between the two and fail).
	waitFor(t, func() bool { return strings.Contains(Tail(log, 100), "oops") })
	// sh's own command line names "sleep" too (in the script): wait for
	// sleep's exact one.
	waitFor(t, func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline")
		return string(b) == "sleep\x0030\x00"
	})
	if Alive(p.PID, marker) {
		t.Errorf("Alive with a marker absent from cmdline = true, want false (pid reuse guard)")
	}
	if err := Kill(context.Background(), p.PID, "sleep"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited:
	case <-time.After(5 * time.Second):
		t.Fatal("reaper did not collect the killed process")
	}
	if got := p.ExitStatus(); got != "killed by signal killed" {
		t.Errorf("ExitStatus = %q", got)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(p.PID)); err == nil {
		t.Errorf("pid %d still in /proc after Kill (zombie not reaped?)", p.PID)
	}
	// Killing a dead process is fine.
	if err := Kill(context.Background(), p.PID, "sleep"); err != nil {
		t.Errorf("Kill on a dead process: %v", err)
	}
	if got := Tail(log, 100); got != "hello\noops" {
		t.Errorf("log = %q", got)
	}
}

func TestAliveFalseForZombie(t *testing.T) {
	// The inner "true" becomes a child of the exec'd sleep, which never
	// reaps it: a zombie.
	cmd := exec.Command("sh", "-c", "true & exec sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var zpid int
	waitFor(t, func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/" + strconv.Itoa(cmd.Process.Pid) + "/children")
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return false
		}
		zpid, _ = strconv.Atoi(f[0])
		s, err := State(zpid)
		return err == nil && s == 'Z'
	})
	if Alive(zpid, "true") {
		t.Errorf("Alive(zombie %d) = true, want false", zpid)
	}
}

func TestStopOrKillTimesOut(t *testing.T) {
	marker := "banger-proc-test-" + strconv.Itoa(os.Getpid())
	// A process that ignores SIGTERM-like requests: only SIGKILL ends it.
	p, err := Start(Options{Binary: "sh", Args: []string{"-c", "trap '' TERM; while :; do sleep 0.05; done", marker}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Kill(context.Background(), p.PID, marker) })
	// Engines call StopOrKill only on a process they saw running (QEMU's QMP,
	// Firecracker's API answered); wait for that here too.
	for i := 0; i < 100 && !Alive(p.PID, marker); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := StopOrKill(context.Background(), p.PID, marker, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("StopOrKill took %v, want about the 200ms timeout", d)
	}
	if Alive(p.PID, marker) {
		t.Error("process alive after StopOrKill")
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(Options{Binary: "/nonexistent/engine"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/engine") {
		t.Errorf("Start(missing binary) = %v, want an error naming it", err)
	}
	if _, err := Start(Options{Binary: "true", Stdout: "/nonexistent/dir/log"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/dir/log") {
		t.Errorf("Start(bad log path) = %v, want an error naming it", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClaimSockets(t *testing.T) {
	dir := t.TempDir()
	live, stale, other := filepath.Join(dir, "live.sock"), filepath.Join(dir, "stale.sock"), filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := ClaimSockets(live, other); err == nil {
		t.Error("ClaimSockets over a served socket succeeded")
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a refused claim removed %s: %v", other, err)
	}
	if err := ClaimSockets(stale, other); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{stale, other} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("stale %s not removed", p)
		}
	}
}
