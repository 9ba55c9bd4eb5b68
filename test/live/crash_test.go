package live

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// crashEnv is the daemon's test hook (cmd/bangerd/crash.go).
const crashEnv = "BANGER_TEST_CRASH_AFTER"

// startCrashingDaemon stops the env's daemon and starts one whose test hook
// SIGKILLs it right after target ("create:<stage>" or "delete:<stage>").
// Only this daemon sees the hook: the next CLI call that finds no daemon
// starts one from the CLI's own environment, which lacks it.
func (e *env) startCrashingDaemon(target string) int {
	e.t.Helper()
	e.banger("daemon", "stop")
	cmd := exec.Command("ip", "netns", "exec", e.ns, filepath.Join(binDir, "banger"), "--config", e.config, "daemon", "start")
	cmd.Env = append(os.Environ(), crashEnv+"="+target)
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("starting a daemon with %s=%s: %v\n%s", crashEnv, target, err, out)
	}
	pid := e.daemonPID()
	env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if !strings.Contains(string(env), crashEnv+"="+target) {
		e.t.Fatalf("daemon %d did not get %s=%s", pid, crashEnv, target)
	}
	return pid
}

// waitGone waits until process pid has exited.
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s (pid %d) is still alive", what, pid)
}

// show runs vm show --json (restarting the daemon if it is gone).
func (e *env) show(name string) (api.VMDetail, bool) {
	e.t.Helper()
	r := e.banger("vm", "show", name, "--json")
	if r.code != 0 {
		if strings.Contains(r.stderr, "not found") {
			return api.VMDetail{}, false
		}
		e.t.Fatalf("vm show %s: exit %d\n%s", name, r.code, r.stderr)
	}
	var d api.VMDetail
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		e.t.Fatalf("vm show %s --json: %v\n%s", name, err, r.stdout)
	}
	return d, true
}

// waitSettled polls vm show until the VM leaves the "starting" state.
func (e *env) waitSettled(name string, timeout time.Duration) api.VMDetail {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d, ok := e.show(name)
		if !ok {
			e.t.Fatalf("vm %s vanished", name)
		}
		if d.VM.Runtime.State != api.VMStarting || time.Now().After(deadline) {
			return d
		}
		time.Sleep(time.Second)
	}
}

// The daemon is SIGKILLed right after each create stage; the restarted
// daemon (started by the next CLI call, without the hook) reconciles: a VM
// killed before its engine ran is failed with the reason, one whose engine
// ran comes up (running, agent answering). Deleting it then leaves nothing.
func TestIntegrationLiveCrashCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start := time.Now()
	stages := []string{"allocate", "system disk", "work disk", "network", "engine", "boot", "agent ready"}
	for i, stage := range stages {
		st := time.Now()
		name := "cc" + strconv.Itoa(i) + "-" + randHex(2)
		pid := e.startCrashingDaemon("create:" + stage)
		r := e.banger("vm", "create", "--name", name)
		if r.code == 0 {
			t.Fatalf("create:%s: vm create succeeded though the daemon was to die\n%s", stage, r.stderr)
		}
		waitGone(t, pid, "the crashing daemon after create:"+stage)
		d, ok := e.show(name)
		if !ok {
			t.Fatalf("create:%s: the VM record is gone after the restart", stage)
		}
		if e.daemonPID() == pid {
			t.Fatalf("create:%s: daemon pid unchanged", stage)
		}
		booted := i >= 4
		if !booted {
			if d.VM.Runtime.State != api.VMFailed || !strings.Contains(d.VM.Runtime.LastError, "daemon stopped") {
				t.Errorf("create:%s: want failed with the reason, got %s %q", stage, d.VM.Runtime.State, d.VM.Runtime.LastError)
			}
			if d.Alive || len(e.enginePIDs()) != 0 {
				t.Errorf("create:%s: an engine runs for a VM that never started one", stage)
			}
		} else {
			d = e.waitSettled(name, 240*time.Second)
			if d.VM.Runtime.State != api.VMRunning || !d.Alive {
				t.Errorf("create:%s: want the VM to come up, got %s (alive %v) %q", stage, d.VM.Runtime.State, d.Alive, d.VM.Runtime.LastError)
			} else if out := strings.TrimSpace(e.must("vm", "exec", name, "--", "hostname")); out != name {
				t.Errorf("create:%s: vm exec hostname = %q, want %q", stage, out, name)
			}
		}
		e.must("vm", "delete", name)
		if l := e.leaks(); len(l) > 0 {
			t.Errorf("create:%s: leaked after delete:\n  %s", stage, strings.Join(l, "\n  "))
		}
		t.Logf("create:%s: %s → %s, settled and deleted in %s", stage, d.VM.Runtime.State, d.VM.Runtime.LastError, time.Since(st).Round(time.Millisecond))
	}
	t.Logf("all create stages: %s", time.Since(start).Round(time.Second))
}

// The daemon is SIGKILLed right after each delete stage of a VM whose
// engine runs (created with --no-wait, so no guest needs to finish
// booting); the restarted daemon finishes the delete and nothing leaks.
func TestIntegrationLiveCrashDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start := time.Now()
	for i, stage := range []string{"stop", "release network", "remove disks", "remove files", "remove record"} {
		name := "cd" + strconv.Itoa(i) + "-" + randHex(2)
		pid := e.startCrashingDaemon("delete:" + stage)
		e.must("vm", "create", "--name", name, "--no-wait")
		if len(e.enginePIDs()) != 1 {
			t.Fatalf("delete:%s: no engine process after create --no-wait", stage)
		}
		if r := e.banger("vm", "delete", name); r.code == 0 {
			t.Fatalf("delete:%s: vm delete succeeded though the daemon was to die\n%s", stage, r.stderr)
		}
		waitGone(t, pid, "the crashing daemon after delete:"+stage)
		if d, ok := e.show(name); ok {
			t.Errorf("delete:%s: the VM is still there after the restart: %s %q", stage, d.VM.Runtime.State, d.VM.Runtime.LastError)
			e.must("vm", "delete", name)
		}
		if l := e.leaks(); len(l) > 0 {
			t.Errorf("delete:%s: leaked:\n  %s", stage, strings.Join(l, "\n  "))
		}
	}
	t.Logf("all delete stages: %s", time.Since(start).Round(time.Second))
}
