package live

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/vmm/vmmtest"
)

// vm run prints the command's output, exits with its code and deletes the VM.
func TestIntegrationLiveRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := "run-" + randHex(2)
	r := e.banger("vm", "run", "--name", name, "--", "cat", "/etc/hostname")
	if r.code != 0 {
		t.Fatalf("vm run: exit %d\n%s", r.code, r.stderr)
	}
	if got := strings.TrimSpace(r.stdout); got != name {
		t.Fatalf("vm run -- cat /etc/hostname printed %q, want the VM's name %q\nstderr:\n%s", got, name, r.stderr)
	}
	for _, stage := range []string{"allocate", "system disk", "work disk", "network", "engine", "boot", "agent ready"} {
		if !strings.Contains(r.stderr, stage) {
			t.Errorf("stage %q missing from the progress on stderr:\n%s", stage, r.stderr)
		}
	}
	r = e.banger("vm", "run", "--", "sh", "-c", "echo to-stderr >&2; exit 7")
	if r.code != 7 {
		t.Fatalf("vm run -- sh -c 'exit 7': exit %d, want 7\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "to-stderr") {
		t.Errorf("the command's stderr was not streamed:\n%s", r.stderr)
	}
	var vms []api.VM
	e.mustJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Fatalf("vm run left VMs behind: %+v", vms)
	}
	e.assertNoLeaks()
}

// A VM's whole life: create, ssh, show, logs, stats, stop, start, delete.
func TestIntegrationLiveLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := "life-" + randHex(2)
	e.must("vm", "create", "--name", name)

	r := e.banger("vm", "ssh", name, "--", "uname", "-r")
	if r.code != 0 {
		t.Fatalf("vm ssh: exit %d\n%s", r.code, r.stderr)
	}
	if got := strings.TrimSpace(r.stdout); got != e.image.KernelVersion {
		t.Fatalf("vm ssh -- uname -r = %q, want the image's kernel %q", got, e.image.KernelVersion)
	}
	var d api.VMDetail
	e.mustJSON(&d, "vm", "show", name)
	if !d.Alive || d.VM.Runtime.State != api.VMRunning || d.Handles == nil || d.Handles.Tap == "" {
		t.Fatalf("vm show: want alive+running with a tap, got %+v", d)
	}
	if d.VM.Runtime.Engine != "qemu" || d.VM.Runtime.Accel == "" {
		t.Errorf("engine/accel not recorded: %q/%q", d.VM.Runtime.Engine, d.VM.Runtime.Accel)
	}
	// The VMM runs as the VM's own uid, sandboxed, without capabilities.
	for _, pid := range e.enginePIDs() {
		vmmtest.CheckConfined(t, pid)
	}
	if logs := e.must("vm", "logs", name); !strings.Contains(logs, "Linux version") {
		t.Errorf("vm logs lacks the kernel banner:\n%.2000s", logs)
	}
	var s api.VMStats
	e.mustJSON(&s, "vm", "stats", name)
	if s.RSSBytes <= 0 || s.CPUSeconds <= 0 {
		t.Errorf("vm stats look empty: %+v", s)
	}

	// the work disk is /root and survives a stop/start
	e.must("vm", "ssh", name, "--", "sh", "-c", "'echo kept > /root/marker && sync'")
	e.must("vm", "stop", name)
	e.mustJSON(&d, "vm", "show", name)
	if d.Alive || d.VM.Runtime.State != api.VMStopped {
		t.Fatalf("after stop: want stopped and not alive, got %+v", d.VM.Runtime)
	}
	if pids := e.enginePIDs(); len(pids) != 0 {
		t.Fatalf("engine processes left after stop: %v", pids)
	}
	e.must("vm", "edit", name, "--disk", "2GiB")
	e.must("vm", "start", name)
	if out := e.must("vm", "ssh", name, "--", "cat", "/root/marker"); strings.TrimSpace(out) != "kept" {
		t.Fatalf("work disk content after restart = %q, want kept", out)
	}
	out := e.must("vm", "ssh", name, "--", "df", "-B1", "--output=size", "/root")
	if f := strings.Fields(out); len(f) < 2 || len(f[1]) < 10 {
		t.Errorf("work disk did not grow to ~2GiB: %q", out)
	}
	e.must("vm", "delete", name)
	e.assertNoLeaks()
}

// kill -9 of the daemon while a VM runs: the next CLI call restarts the
// daemon, which finds the VM alive; then delete leaves nothing.
func TestIntegrationLiveDaemonKill9(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := "k9-" + randHex(2)
	e.must("vm", "create", "--name", name)
	pid := e.daemonPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(e.enginePIDs()) != 1 {
		t.Fatalf("the VM's engine died with the daemon")
	}
	vmmtest.CheckConfined(t, e.enginePIDs()[0])
	var d api.VMDetail
	r := e.banger("vm", "show", name, "--json")
	if r.code != 0 {
		t.Fatalf("vm show after kill -9: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "starting") {
		t.Errorf("the CLI did not say it started the daemon:\n%s", r.stderr)
	}
	e.mustJSON(&d, "vm", "show", name)
	if !d.Alive || d.VM.Runtime.State != api.VMRunning {
		t.Fatalf("after daemon restart the VM is not running: %+v", d.VM.Runtime)
	}
	if e.daemonPID() == pid {
		t.Fatal("daemon pid unchanged after kill -9")
	}
	if out := e.must("vm", "ssh", name, "--", "hostname"); strings.TrimSpace(out) != name {
		t.Fatalf("ssh after reconcile: hostname = %q", out)
	}
	r = e.banger("vm", "run", "--keep=false", "--", "true")
	if r.code != 0 {
		t.Fatalf("a new VM after reconcile: exit %d\n%s", r.code, r.stderr)
	}
	e.must("vm", "delete", name)
	e.assertNoLeaks()
}
