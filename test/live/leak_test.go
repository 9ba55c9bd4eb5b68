package live

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/vm"
)

// leaks lists what this env left on the host beyond its reusable capacity:
// pool taps (tap-pool-*), the storage pool's own loop device, the bridge and
// banger's nft table are capacity; any other banger tap, loop device, engine
// process or VM dir is a leak.
func (e *env) leaks() []string {
	var l []string
	for _, dir := range []string{filepath.Join(e.stateDir, "vms"), filepath.Join(e.stateDir, "pool", "vms")} {
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			l = append(l, "vm dir "+filepath.Join(dir, ent.Name()))
		}
	}
	engines := e.enginePIDs()
	for _, pid := range engines {
		l = append(l, "engine process "+strconv.Itoa(pid))
	}
	// A running guest's RAM file is no leak; more files than engines are.
	if ents, _ := os.ReadDir(vm.MemoryDir(e.stateDir)); len(ents) > len(engines) {
		for _, ent := range ents {
			l = append(l, "guest memory file "+ent.Name())
		}
	}
	out, _ := exec.Command("ip", "-n", e.ns, "-br", "link").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name := strings.SplitN(f[0], "@", 2)[0]
		if strings.HasPrefix(name, "banger-tap") || (strings.HasPrefix(name, "tap") && !strings.HasPrefix(name, "tap-pool-")) {
			l = append(l, "tap "+name)
		}
	}
	out, _ = exec.Command("losetup", "-a", "-O", "NAME,BACK-FILE", "--noheadings").Output()
	if out == nil {
		out, _ = exec.Command("losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE").Output()
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[1], e.stateDir) && f[1] != filepath.Join(e.stateDir, "pool.img") {
			l = append(l, "loop device "+f[0]+" on "+f[1])
		}
	}
	return l
}

// enginePIDs finds engine processes started for this env (their command
// lines name sockets in its state dir).
func (e *env) enginePIDs() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		c := string(cmd)
		if strings.Contains(c, e.stateDir) && (strings.Contains(c, "qemu-system") || strings.Contains(c, "firecracker")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (e *env) assertNoLeaks() {
	e.t.Helper()
	if l := e.leaks(); len(l) > 0 {
		e.t.Errorf("leaked host state:\n  %s", strings.Join(l, "\n  "))
	}
}

// daemonPID reads the running daemon's pid from its status.
func (e *env) daemonPID() int {
	var st api.DaemonStatus
	e.mustJSON(&st, "daemon", "status")
	return st.PID
}

// teardown deletes every VM, audits leaks, stops the daemon and removes the
// env's pool, state dir and namespace.
func (e *env) teardown() {
	r := e.banger("vm", "list", "--json")
	var vms []api.VM
	if r.code == 0 && json.Unmarshal([]byte(r.stdout), &vms) == nil && len(vms) > 0 {
		args := []string{"vm", "delete"}
		for _, v := range vms {
			args = append(args, v.Name)
		}
		if d := e.banger(args...); d.code != 0 {
			e.t.Errorf("teardown: vm delete: %s", d.stderr)
		}
	}
	if !e.t.Failed() {
		e.assertNoLeaks()
	}
	e.banger("daemon", "stop")
	for _, pid := range e.enginePIDs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	out, _ := exec.Command("pgrep", "-f", "bangerd --config "+e.config).Output()
	for _, p := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(p); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if e.pool != nil {
		if err := e.pool.Destroy(context.Background()); err != nil {
			e.t.Errorf("teardown: removing the storage pool: %v", err)
		}
	}
	os.RemoveAll(e.stateDir)
	os.RemoveAll(vm.MemoryDir(e.stateDir))
	exec.Command("ip", "netns", "del", e.ns).Run()
}

// nftObjects counts the rules, chains, sets, map elements' chains and
// counters (anything with a handle) in banger's nft tables (inet and
// bridge) inside the env's namespace.
func (e *env) nftObjects() int {
	n := 0
	for _, fam := range []string{"inet", "bridge"} {
		out, _ := exec.Command("ip", "netns", "exec", e.ns, "nft", "-a", "list", "table", fam, "banger").Output()
		n += strings.Count(string(out), "# handle")
	}
	return n
}
