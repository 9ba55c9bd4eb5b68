package live

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
)

// TestIntegrationLiveLifetimes boots one guest at a time: a VM idle-stopped
// by the daemon then deleted by a TTL set on it while stopped, a `vm run`
// whose CLI is SIGKILLed (the daemon deletes its VM), and a running VM
// deleted by its TTL.
func TestIntegrationLiveLifetimes(t *testing.T) {
	e := newEnv(t)

	// idle-stop, then a TTL set on the stopped VM
	idle := "lt-idle-" + randHex(2)
	e.must("vm", "create", "--name", idle, "--wait", "agent", "--idle-stop", "20s", "--ttl", "10m", "--ttl-action", "stop")
	show := e.must("vm", "show", idle)
	t.Logf("vm show after create:\n%s", show)
	for _, want := range []string{"ttl:", "stop in 9m", "idle-stop:", "after 20s idle", "idle-stop at:"} {
		if !strings.Contains(show, want) {
			t.Errorf("vm show lacks %q", want)
		}
	}
	e.must("vm", "exec", idle, "--", "true")
	start := time.Now()
	v := e.waitVM(idle, 3*time.Minute, func(v *api.VM) bool { return v != nil && v.Runtime.State == api.VMStopped })
	t.Logf("idle-stopped %s after create + %s: %q (stats: %s)", idle, time.Since(start).Round(time.Second), v.Runtime.LastError,
		strings.TrimSpace(e.banger("vm", "list").stdout))
	if !strings.Contains(v.Runtime.LastError, "idle for") {
		t.Errorf("last error after the idle-stop: %q", v.Runtime.LastError)
	}
	e.must("vm", "lifetime", idle, "--ttl", "3s")
	e.waitVM(idle, time.Minute, func(v *api.VM) bool { return v == nil })
	t.Logf("ttl deleted the stopped %s", idle)

	// vm run with its CLI SIGKILLed
	runVM := "lt-run-" + randHex(2)
	cmd := exec.Command("ip", "netns", "exec", e.ns, filepath.Join(binDir, "banger"), "--config", e.config,
		"vm", "run", "--name", runVM, "--", "sh", "-c", "touch /root/started; sleep 600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(5 * time.Minute)
	for e.banger("vm", "exec", runVM, "--", "test", "-f", "/root/started").code != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("vm run %s did not start its command", runVM)
		}
		time.Sleep(2 * time.Second)
	}
	var d api.VMDetail
	e.mustJSON(&d, "vm", "show", runVM)
	if d.VM.Lifetime == nil || !d.VM.Lifetime.Run {
		t.Errorf("vm run's VM is not run-owned: %+v", d.VM.Lifetime)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed := time.Now()
	e.waitVM(runVM, 2*time.Minute, func(v *api.VM) bool { return v == nil })
	t.Logf("the daemon deleted %s %s after its vm run was SIGKILLed", runVM, time.Since(killed).Round(time.Second))

	// a running VM's TTL
	ttl := "lt-ttl-" + randHex(2)
	e.must("vm", "create", "--name", ttl, "--wait", "agent", "--ttl", "1h")
	// an open exec session (and a busy guest) holds off an idle-stop, never a TTL
	busy := exec.Command("ip", "netns", "exec", e.ns, filepath.Join(binDir, "banger"), "--config", e.config,
		"vm", "exec", ttl, "--", "sh", "-c", "while :; do :; done")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	defer busy.Process.Kill()
	e.must("vm", "lifetime", ttl, "--ttl", "5s", "--idle-stop", "none")
	set := time.Now()
	e.waitVM(ttl, 2*time.Minute, func(v *api.VM) bool { return v == nil })
	t.Logf("ttl deleted the running (busy, exec session open) %s %s after it was set to 5s", ttl, time.Since(set).Round(time.Second))
	done := make(chan error, 1)
	go func() { done <- busy.Wait() }()
	select {
	case err := <-done:
		t.Logf("the exec session ended with the VM: %v", err)
	case <-time.After(30 * time.Second):
		t.Errorf("vm exec still running 30s after its VM was deleted")
	}
	e.assertNoLeaks()
}

// waitVM polls vm list until done says so of the VM (nil: it is gone),
// and returns it.
func (e *env) waitVM(name string, within time.Duration, done func(*api.VM) bool) *api.VM {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		var vms []api.VM
		e.mustJSON(&vms, "vm", "list")
		var v *api.VM
		for i := range vms {
			if vms[i].Name == name {
				v = &vms[i]
			}
		}
		if done(v) {
			return v
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("vm %s: still %+v after %s", name, v, within)
		case <-time.After(time.Second):
		}
	}
}
