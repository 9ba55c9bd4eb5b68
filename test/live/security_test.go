package live

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// listenInNetns opens a TCP listener on all addresses of the env's network
// namespace (so also on the bridge's gateway address) and counts the
// connections it accepts.
func (e *env) listenInNetns(t *testing.T) (port int, accepted *atomic.Int32) {
	t.Helper()
	accepted = &atomic.Int32{}
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// This thread enters the namespace and is never returned to the
		// pool (a locked goroutine's thread exits with it).
		runtime.LockOSThread()
		fd, err := unix.Open("/var/run/netns/"+e.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- res{err: fmt.Errorf("setns: %w", err)}
			return
		}
		ln, err := net.Listen("tcp", "0.0.0.0:0")
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listening in %s: %v", e.ns, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	go func() {
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return r.ln.Addr().(*net.TCPAddr).Port, accepted
}

// guestTCP reports whether a TCP connect from inside the guest to addr:port
// succeeds within 3 seconds.
func (e *env) guestTCP(name, addr string, port int) bool {
	e.t.Helper()
	script := fmt.Sprintf("timeout 3 bash -c '</dev/tcp/%s/%d' 2>/dev/null && echo open || echo closed", addr, port)
	out := strings.TrimSpace(e.must("vm", "exec", name, "--", "sh", "-c", script))
	return out == "open"
}

// A guest cannot reach the host's banger socket (no path: it is a Unix
// socket in a 0700 dir on the host), the web UI's port or any TCP listener
// on the host side of its network, nor another guest's sshd; the API socket
// refuses a non-root user with a clear permission error; the state dir and
// its secrets have tight modes. Boots two guests (at once).
func TestIntegrationLiveSecurity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := "sec-a-"+randHex(2), "sec-b-"+randHex(2)
	var wg sync.WaitGroup
	for _, n := range []string{a, b} {
		wg.Add(1)
		go func(n string) {
			defer wg.Done()
			if r := e.banger("vm", "create", "--name", n); r.code != 0 {
				t.Errorf("vm create %s: exit %d\n%s", n, r.code, r.stderr)
			}
		}(n)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var da, db api.VMDetail
	e.mustJSON(&da, "vm", "show", a)
	e.mustJSON(&db, "vm", "show", b)
	gw := gatewayOf(t, da.VM.Runtime.GuestIP)

	// Positive controls: the probe works (each guest reaches its own sshd,
	// which may start a little after the agent answers).
	for _, n := range []string{a, b} {
		deadline := time.Now().Add(90 * time.Second)
		for !e.guestTCP(n, "127.0.0.1", 22) {
			if time.Now().After(deadline) {
				out := e.banger("vm", "exec", n, "--", "sh", "-c", "command -v bash timeout; systemctl is-active ssh; ss -ltn")
				t.Fatalf("guest %s never reached its own sshd: the probe is broken\n%s%s", n, out.stdout, out.stderr)
			}
			time.Sleep(time.Second)
		}
	}
	// Another guest's sshd.
	if e.guestTCP(a, db.VM.Runtime.GuestIP, 22) {
		t.Errorf("guest %s reached guest %s's sshd at %s:22", a, b, db.VM.Runtime.GuestIP)
	}
	// The web UI's port and a listener on every host-side address.
	port, accepted := e.listenInNetns(t)
	webPort := 7070
	for _, target := range []struct {
		addr string
		port int
	}{{gw, webPort}, {gw, port}, {"127.0.0.1", port}} {
		if e.guestTCP(a, target.addr, target.port) {
			t.Errorf("guest %s reached the host side at %s:%d", a, target.addr, target.port)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the host-side listener accepted %d connections from the guest", n)
	}
	// The API socket: no such path inside the guest.
	sock := filepath.Join(e.stateDir, "bangerd.sock")
	if out := strings.TrimSpace(e.must("vm", "exec", a, "--", "sh", "-c", "test -e "+sock+" && echo present || echo absent")); out != "absent" {
		t.Errorf("the host's API socket path %s exists inside the guest", sock)
	}

	e.assertNobodyRefused(t)
	e.assertTightModes(t)
	e.must("vm", "delete", a, b)
	e.assertNoLeaks()
}

// gatewayOf returns the .1 of the guest's /24 (the bridge address).
func gatewayOf(t *testing.T, guestIP string) string {
	ip := net.ParseIP(guestIP).To4()
	if ip == nil {
		t.Fatalf("bad guest ip %q", guestIP)
	}
	return fmt.Sprintf("%d.%d.%d.1", ip[0], ip[1], ip[2])
}

// assertNobodyRefused runs the CLI as nobody (with a config and binary it
// can read) against the env's socket: a clear permission error, no daemon
// started, the root daemon untouched.
func (e *env) assertNobodyRefused(t *testing.T) {
	t.Helper()
	pid := e.daemonPID()
	dir, err := os.MkdirTemp("", "bgr-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "banger")
	data, err := os.ReadFile(filepath.Join(binDir, "banger"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(e.config)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", e.ns, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		bin, "--config", cfgPath, "vm", "list")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("banger as nobody listed VMs:\n%s", out)
	}
	if !strings.Contains(strings.ToLower(string(out)), "permission denied") || strings.Contains(string(out), "panic") {
		t.Errorf("banger as nobody: want a clear permission error, got:\n%s", out)
	}
	if got := e.daemonPID(); got != pid {
		t.Errorf("the daemon changed (pid %d → %d) after a non-root call", pid, got)
	}
	t.Logf("banger as nobody: %s", strings.TrimSpace(string(out)))
}

// assertTightModes: every dir under the state dir is 0700 (no group/other
// bits), and the database, keys and tokens are 0600.
func (e *env) assertTightModes(t *testing.T) {
	t.Helper()
	pool := filepath.Join(e.stateDir, "pool")
	filepath.WalkDir(e.stateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p == pool && d.IsDir() && p != e.stateDir {
			// the pool's own root: checked, its image files are not secrets
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s is %v, want no group/other access", p, fi.Mode().Perm())
			}
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		base := filepath.Base(p)
		secret := strings.HasSuffix(base, ".db") || strings.Contains(base, "key") || strings.Contains(base, "token") ||
			strings.HasPrefix(base, "id_")
		switch {
		case fi.IsDir() && fi.Mode().Perm()&0o077 != 0:
			t.Errorf("dir %s is %v, want 0700", p, fi.Mode().Perm())
		case fi.Mode().IsRegular() && secret && fi.Mode().Perm()&0o077 != 0:
			t.Errorf("%s is %v, want 0600", p, fi.Mode().Perm())
		case fi.Mode()&fs.ModeSocket != 0 && fi.Mode().Perm()&0o007 != 0:
			t.Errorf("socket %s is %v, want no access for others", p, fi.Mode().Perm())
		}
		return nil
	})
}
