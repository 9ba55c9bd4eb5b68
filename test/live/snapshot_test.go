package live

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/vmm/vmmtest"
)

// guestFacts is what a child must not share with its parent or siblings.
type guestFacts struct {
	hostname, machineID, marker, addr, hostKey string
	skew                                       time.Duration
}

// facts reads a running VM's identity through its agent (vm exec), and
// how far its clock is from the host's.
func (e *env) facts(name string) guestFacts {
	e.t.Helper()
	before := time.Now()
	out := e.must("vm", "exec", name, "--", "sh", "-c",
		"date +%s.%N; hostname; cat /etc/machine-id; cat /run/banger-marker 2>/dev/null || echo none; "+
			"ip -4 -o addr show eth0 | awk '{print $4}'; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | awk '{print $2}'")
	after := time.Now()
	f := strings.Split(strings.TrimSpace(out), "\n")
	if len(f) != 6 {
		e.t.Fatalf("vm exec %s: want 6 lines, got %q", name, out)
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		e.t.Fatalf("guest date %q: %v", f[0], err)
	}
	guest := time.Unix(0, int64(secs*1e9))
	var skew time.Duration
	switch {
	case guest.Before(before):
		skew = before.Sub(guest)
	case guest.After(after):
		skew = guest.Sub(after)
	}
	return guestFacts{hostname: f[1], machineID: f[2], marker: f[3], addr: f[4], hostKey: f[5], skew: skew}
}

// A snapshot of a running VM, then two forks of it: each child is its own
// VM (name, IP, tap, engine) with its own identity inside (hostname,
// machine-id, SSH host key, address; clock set), its parent's memory as it
// was at the snapshot (not what the parent did after), reachable by ssh
// with its own host key; the parent runs on unharmed; the snapshot cannot
// be deleted while children use it.
func TestIntegrationLiveFork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := "par-" + randHex(2)
	e.must("vm", "create", "--name", p)
	e.must("vm", "exec", p, "--", "sh", "-c", "echo before > /run/banger-marker")
	parent := e.facts(p)

	var s api.Snapshot
	st := time.Now()
	e.mustJSON(&s, "snapshot", "create", p, "snap-"+randHex(2))
	t.Logf("snapshot create: %s (paused %d ms), %d MiB on disk, files %+v", time.Since(st).Round(time.Millisecond),
		s.PausedMillis, s.SizeBytes>>20, s.Files)
	if s.VMName != p || s.Engine != "qemu" || s.EngineVersion == "" || len(s.Files) < 3 {
		t.Fatalf("snapshot record: %+v", s)
	}
	e.must("vm", "exec", p, "--", "sh", "-c", "echo after > /run/banger-marker")

	var res api.VMForkResult
	st = time.Now()
	r0 := e.banger("vm", "fork", s.Name, "--count", "2", "--name", "kid", "--json")
	if r0.code != 0 || json.Unmarshal([]byte(r0.stdout), &res) != nil {
		t.Fatalf("vm fork: exit %d\n%s\n%s", r0.code, r0.stdout, r0.stderr)
	}
	t.Logf("vm fork --count 2: %s\n%s", time.Since(st).Round(time.Millisecond), r0.stderr)
	if len(res.VMs) != 2 {
		t.Fatalf("fork result: %+v", res)
	}
	seen := map[string]string{parent.hostname: p, parent.machineID: p, parent.addr: p, parent.hostKey: p}
	for _, c := range res.VMs {
		if c.Origin != s.Name || c.Runtime.State != api.VMRunning {
			t.Errorf("child %s: origin %q state %s", c.Name, c.Origin, c.Runtime.State)
		}
		f := e.facts(c.Name)
		t.Logf("child %s: %+v", c.Name, f)
		if f.hostname != c.Name {
			t.Errorf("child %s: hostname %q", c.Name, f.hostname)
		}
		if !strings.HasPrefix(f.addr, c.Runtime.GuestIP+"/") {
			t.Errorf("child %s: eth0 has %q, want %s", c.Name, f.addr, c.Runtime.GuestIP)
		}
		if f.marker != "before" {
			t.Errorf("child %s: /run/banger-marker = %q, want the parent's memory at the snapshot (before)", c.Name, f.marker)
		}
		if f.skew > time.Second {
			t.Errorf("child %s: clock %s off the host's", c.Name, f.skew)
		}
		for _, v := range []string{f.hostname, f.machineID, f.addr, f.hostKey} {
			if other, dup := seen[v]; dup {
				t.Errorf("child %s shares %q with %s", c.Name, v, other)
			}
			seen[v] = c.Name
		}
		// ssh goes over the network to the child's new address and checks
		// its new host key.
		if out := strings.TrimSpace(e.must("vm", "ssh", c.Name, "--", "hostname")); out != c.Name {
			t.Errorf("vm ssh %s -- hostname = %q", c.Name, out)
		}
	}
	for _, pid := range e.enginePIDs() {
		vmmtest.CheckConfined(t, pid)
	}
	if f := e.facts(p); f.hostname != p || f.marker != "after" || f.addr != parent.addr {
		t.Errorf("the parent after the forks: %+v", f)
	}
	r := e.banger("snapshot", "delete", s.Name)
	if r.code == 0 || !strings.Contains(r.stderr, res.VMs[0].Name) {
		t.Errorf("snapshot delete with live children: exit %d\n%s", r.code, r.stderr)
	}
	e.must("vm", "delete", res.VMs[0].Name, res.VMs[1].Name)
	e.must("snapshot", "delete", s.Name)
	if ents, _ := os.ReadDir(filepath.Join(e.stateDir, "pool", "snapshots")); len(ents) != 0 {
		t.Errorf("snapshot files left: %v", ents)
	}
	e.must("vm", "delete", p)
	e.assertNoLeaks()
}

// A warm image: vm run restores it (fast) and the guest has the run's
// name; a changed memory file makes the next create boot cold, saying why;
// unwarm removes it.
func TestIntegrationLiveWarm(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var s api.Snapshot
	st := time.Now()
	e.mustJSON(&s, "image", "warm", "test")
	t.Logf("image warm: %s", time.Since(st).Round(time.Millisecond))
	if s.Kind != api.SnapshotWarm || s.Name != "warm-test" {
		t.Fatalf("warm snapshot: %+v", s)
	}
	var imgs []api.Image
	e.mustJSON(&imgs, "image", "list")
	if len(imgs) != 1 || imgs[0].Warm == nil || !imgs[0].Warm.Usable {
		t.Fatalf("image list does not show the warm snapshot: %+v", imgs)
	}
	for i := 0; i < 2; i++ {
		name := "w" + strconv.Itoa(i) + "-" + randHex(2)
		st = time.Now()
		r := e.banger("vm", "run", "--name", name, "--", "hostname")
		t.Logf("vm run (warm) -- hostname: %s", time.Since(st).Round(time.Millisecond))
		if r.code != 0 || strings.TrimSpace(r.stdout) != name {
			t.Fatalf("vm run of a warm image: exit %d, %q\n%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "restore") || strings.Contains(r.stderr, "cold boot") {
			t.Errorf("vm run did not restore the warm snapshot:\n%s", r.stderr)
		}
	}
	// After a daemon restart the warm snapshot's memory is preloaded: the
	// first restore is as fast as the later ones (logged, not asserted).
	e.must("daemon", "stop")
	e.must("daemon", "start")
	time.Sleep(3 * time.Second)
	for i := 0; i < 2; i++ {
		r := e.banger("vm", "run", "--", "true")
		if r.code != 0 {
			t.Fatalf("vm run after a daemon restart: exit %d\n%s", r.code, r.stderr)
		}
		for _, l := range strings.Split(r.stderr, "\n") {
			if strings.Contains(l, "restore") {
				t.Logf("after a daemon restart, run %d: %s", i+1, strings.TrimSpace(l))
			}
		}
	}
	mem := ""
	for _, f := range s.Files {
		if f.Role == "memory" {
			mem = f.Path
		}
	}
	if mem == "" {
		t.Fatalf("no memory file in %+v", s.Files)
	}
	fh, err := os.OpenFile(mem, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteAt([]byte("changed by the test"), 4096)
	fh.Close()
	name := "wc-" + randHex(2)
	r := e.banger("vm", "run", "--name", name, "--", "hostname")
	if r.code != 0 || strings.TrimSpace(r.stdout) != name {
		t.Fatalf("vm run after the memory file changed: exit %d, %q\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "cold boot") {
		t.Errorf("the fallback to a cold boot was not said:\n%s", r.stderr)
	}
	t.Logf("fallback said:\n%s", r.stderr)
	e.must("image", "unwarm", "test")
	var after []api.Image
	e.mustJSON(&after, "image", "list")
	if len(after) != 1 || after[0].Warm != nil {
		t.Errorf("still warm after unwarm: %+v", after)
	}
	e.assertNoLeaks()
}

// The daemon is SIGKILLed right after each snapshot stage and each fork
// stage: after the restart the parent runs (resumed, not left paused), a
// half-taken snapshot is gone with its files, and each child is complete or
// gone — never half-made.
func TestIntegrationLiveCrashSnapshotFork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := "cp-" + randHex(2)
	e.must("vm", "create", "--name", p)
	for _, stage := range []string{"pause", "save state", "capture disks"} {
		pid := e.startCrashingDaemon("snapshot:" + stage)
		if r := e.banger("snapshot", "create", p, "half"); r.code == 0 {
			t.Fatalf("snapshot:%s: succeeded though the daemon was to die", stage)
		}
		waitGone(t, pid, "the crashing daemon after snapshot:"+stage)
		var snaps []api.Snapshot
		e.mustJSON(&snaps, "snapshot", "list")
		if len(snaps) != 0 {
			t.Errorf("snapshot:%s: snapshots after the restart: %+v", stage, snaps)
		}
		if ents, _ := os.ReadDir(filepath.Join(e.stateDir, "pool", "snapshots")); len(ents) != 0 {
			t.Errorf("snapshot:%s: files left: %v", stage, ents)
		}
		if out := strings.TrimSpace(e.must("vm", "exec", p, "--", "hostname")); out != p {
			t.Errorf("snapshot:%s: the parent does not answer: %q", stage, out)
		}
	}
	var s api.Snapshot
	e.mustJSON(&s, "snapshot", "create", p, "whole")
	for i, stage := range []string{"allocate", "system disk", "work disk", "network", "restore", "identity"} {
		name := "cf" + strconv.Itoa(i) + "-" + randHex(2)
		pid := e.startCrashingDaemon("fork:" + stage)
		if r := e.banger("vm", "fork", s.Name, "--name", name); r.code == 0 {
			t.Fatalf("fork:%s: succeeded though the daemon was to die", stage)
		}
		waitGone(t, pid, "the crashing daemon after fork:"+stage)
		if d, ok := e.show(name); ok {
			t.Errorf("fork:%s: the half-made child is still there: %s %q", stage, d.VM.Runtime.State, d.VM.Runtime.LastError)
			e.must("vm", "delete", name)
		}
		if n := len(e.enginePIDs()); n != 1 {
			t.Errorf("fork:%s: %d engine processes, want the parent's only", stage, n)
		}
		var leaked []string
		for _, l := range e.leaks() { // the parent's VM dir and engine are no leak
			if !strings.HasSuffix(l, "/vms/"+p) && !strings.HasPrefix(l, "engine process") {
				leaked = append(leaked, l)
			}
		}
		if len(leaked) > 0 {
			t.Errorf("fork:%s: leaked:\n  %s", stage, strings.Join(leaked, "\n  "))
		}
	}
	// After all that, a fork still works.
	var res api.VMForkResult
	e.mustJSON(&res, "vm", "fork", s.Name, "--name", "cf-ok")
	if out := strings.TrimSpace(e.must("vm", "exec", "cf-ok", "--", "hostname")); out != "cf-ok" {
		t.Errorf("fork after the crashes: hostname %q", out)
	}
	e.must("vm", "delete", "cf-ok")
	e.must("snapshot", "delete", s.Name)
	e.must("vm", "delete", p)
	e.assertNoLeaks()
}
