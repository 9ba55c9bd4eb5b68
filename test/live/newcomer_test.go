package live

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/testimage"
)

// newcomer is a host as a new user meets it: no /etc/banger, an empty
// /var/lib/banger and /run/banger, no $BANGER_CONFIG, no --config. A holder
// process keeps private mount and network namespaces in which the defaults'
// own paths are fresh (a temp dir bound over the state dir, tmpfs over the
// run dir and over /etc/banger when the host has one); every command runs
// in them through nsenter, so the daemon the CLI starts, its pool mount,
// bridge, taps and nft table live and die there.
type newcomer struct {
	t       *testing.T
	ns      string
	holder  *exec.Cmd
	pid     int
	state   string   // host dir seen as the default state dir inside
	created []string // mount points this test had to create on the host
}

// newcomerScript makes the namespace's paths fresh, then waits. $1 is the
// state dir to bind over the default one.
const newcomerScript = `set -eu
mount --make-rprivate /
if [ -d /etc/banger ]; then mount -t tmpfs banger-newcomer /etc/banger; fi
mount --bind "$1" "$2"
mount -t tmpfs banger-newcomer "$3"
echo ready
exec sleep infinity`

func newNewcomer(t *testing.T) *newcomer {
	t.Helper()
	def := config.Default()
	n := &newcomer{t: t, ns: "bgr-nc-" + randHex(3), state: t.TempDir()}
	runDir := filepath.Dir(def.SocketPath)
	// Mount points must exist on the host; make the missing ones (empty
	// dirs, removed again at cleanup) rather than touching what is there.
	for _, dir := range []string{def.StateDir, runDir} {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatalf("making mount point %s: %v", dir, err)
			}
			n.created = append(n.created, dir)
		}
	}
	t.Cleanup(n.teardown)
	run(t, "ip", "netns", "add", n.ns)
	run(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
	n.holder = exec.Command("ip", "netns", "exec", n.ns, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", newcomerScript, "sh", n.state, def.StateDir, runDir)
	n.holder.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := n.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	n.holder.Stderr = &stderr
	if err := n.holder.Start(); err != nil {
		t.Fatalf("starting the namespace holder: %v", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("namespace holder: %q %v\n%s", line, err, stderr.String())
	}
	// The holder's pid is sleep's (exec); find it as the child chain's leaf.
	n.pid = n.holder.Process.Pid
	for {
		kids, _ := os.ReadFile("/proc/" + strconv.Itoa(n.pid) + "/task/" + strconv.Itoa(n.pid) + "/children")
		f := strings.Fields(string(kids))
		if len(f) == 0 {
			break
		}
		n.pid, _ = strconv.Atoi(f[0])
	}
	return n
}

// banger runs bin/banger inside the namespaces with a newcomer's
// environment: no BANGER_CONFIG, no --config.
func (n *newcomer) banger(args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	full := append([]string{"-t", strconv.Itoa(n.pid), "-m", "-n", "--", filepath.Join(binDir, "banger")}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("running banger %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (n *newcomer) must(args ...string) result {
	n.t.Helper()
	r := n.banger(args...)
	if r.code != 0 {
		n.t.Fatalf("banger %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// inNamespace lists processes (other than the holder) in the holder's mount
// namespace.
func (n *newcomer) inNamespace() []int {
	want, err := os.Readlink("/proc/" + strconv.Itoa(n.pid) + "/ns/mnt")
	if err != nil {
		return nil
	}
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == n.pid {
			continue
		}
		if got, _ := os.Readlink("/proc/" + ent.Name() + "/ns/mnt"); got == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (n *newcomer) teardown() {
	if n.pid != 0 {
		var vms []api.VM
		if r := n.banger("vm", "list", "--json"); r.code == 0 && json.Unmarshal([]byte(r.stdout), &vms) == nil {
			for _, v := range vms { // vm run deletes its VM itself; this is for a failed run
				n.banger("vm", "delete", v.Name)
			}
		}
		n.banger("daemon", "stop")
		deadline := time.Now().Add(20 * time.Second)
		for len(n.inNamespace()) > 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if left := n.inNamespace(); len(left) > 0 {
			n.t.Errorf("processes left in the newcomer's namespace after daemon stop: %v", left)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if n.holder != nil && n.holder.Process != nil {
		n.holder.Process.Kill()
		n.holder.Wait()
		if n.pid != n.holder.Process.Pid {
			syscall.Kill(n.pid, syscall.SIGKILL)
		}
	}
	exec.Command("ip", "netns", "del", n.ns).Run()
	// The pool's loop device goes with its mount when the namespace does
	// (mounted with -o loop, autoclear); give the kernel a moment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE").Output()
		if !strings.Contains(string(out), n.state) {
			break
		}
		if time.Now().After(deadline) {
			n.t.Errorf("loop devices on the newcomer's state dir left:\n%s", out)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, dir := range n.created {
		if err := os.Remove(dir); err != nil {
			n.t.Errorf("removing mount point %s made by this test: %v", dir, err)
		}
	}
}

// TestIntegrationLiveNewcomer runs the README's commands the way a newcomer
// does on a fresh host — no config file anywhere, empty state and run dirs —
// and checks each works on the defaults (issue 10: every command but doctor
// failed with "config file /etc/banger/config.toml does not exist").
func TestIntegrationLiveNewcomer(t *testing.T) {
	img := testimage.Get(t)
	t.Parallel()
	n := newNewcomer(t)
	def := config.Default()

	if r := n.banger("doctor"); strings.Contains(r.stderr, "does not exist") || strings.Contains(r.stdout+r.stderr, "config file") {
		t.Errorf("doctor complained about a config file:\n%s%s", r.stdout, r.stderr)
	}
	var report struct{ Checks []api.Check }
	if r := n.must("doctor", "--json"); json.Unmarshal([]byte(r.stdout), &report) != nil || len(report.Checks) == 0 {
		t.Fatalf("doctor --json: %q", r.stdout)
	}

	r := n.must("image", "list")
	if !strings.Contains(r.stderr, "starting bangerd") {
		t.Errorf("image list did not say it started the daemon: %q", r.stderr)
	}
	var imgs []api.Image
	if r := n.must("image", "list", "--json"); json.Unmarshal([]byte(r.stdout), &imgs) != nil || len(imgs) != 0 {
		t.Errorf("image list on a fresh host = %q, want []", r.stdout)
	}
	var st api.DaemonStatus
	if r := n.must("daemon", "status", "--json"); json.Unmarshal([]byte(r.stdout), &st) != nil || st.PID == 0 {
		t.Errorf("daemon status = %q", r.stdout)
	}
	var vms []api.VM
	if r := n.must("vm", "list", "--json"); json.Unmarshal([]byte(r.stdout), &vms) != nil || len(vms) != 0 {
		t.Errorf("vm list on a fresh host = %q, want []", r.stdout)
	}
	// The daemon used the default state dir (bound to n.state) and socket.
	if _, err := os.Stat(filepath.Join(n.state, "banger.db")); err != nil {
		t.Errorf("the daemon's database is not in the default state dir %s: %v", def.StateDir, err)
	}

	// The cached test image stands in for `image create default --from-debian`
	// (covered by TestIntegrationLiveImageCreate); then the README's vm run.
	n.must("image", "register", def.DefaultImage, "--kernel", img.Kernel, "--initrd", img.Initrd,
		"--rootfs", img.Rootfs, "--work-seed", img.WorkSeed, "--vmlinux", img.Vmlinux)
	start := time.Now()
	r = n.must("vm", "run", "--", "uname", "-a")
	t.Logf("vm run -- uname -a on the defaults took %s: %s%s", time.Since(start).Round(time.Millisecond), r.stdout, stageLines(r.stderr))
	if !strings.HasPrefix(r.stdout, "Linux ") {
		t.Errorf("vm run -- uname -a printed %q", r.stdout)
	}
	if r := n.must("vm", "list", "--json"); json.Unmarshal([]byte(r.stdout), &vms) != nil || len(vms) != 0 {
		t.Errorf("vm run left VMs: %q", r.stdout)
	}
}
