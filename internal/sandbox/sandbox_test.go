package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// need skips without root or bwrap, naming the fix.
func need(t *testing.T) *Sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the daemon starts bwrap as the sandbox uid): run as root")
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bwrap missing: apt-get install bubblewrap")
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func run(t *testing.T, s *Sandbox, sc *Scratch, c Cmd) (string, error) {
	t.Helper()
	out, err := s.Run(context.Background(), sc, c)
	return string(out), err
}

// TestSandboxConfinement: the sandboxed process is the sandbox uid in the
// host's view, holds no capabilities, cannot read /root or /etc/shadow,
// cannot write outside its scratch dir and sees no host process.
func TestSandboxConfinement(t *testing.T) {
	s := need(t)
	// A world-writable host file in a world-searchable dir: only the
	// mount namespace keeps the sandbox from it.
	of, err := os.CreateTemp("", "banger-outside-")
	if err != nil {
		t.Fatal(err)
	}
	outside := of.Name()
	of.WriteString("host")
	of.Chmod(0o666)
	of.Close()
	defer os.Remove(outside)
	sc, err := NewScratch(s)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	script := `cat /proc/self/uid_map; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status;
ls /proc | grep -cE '^[0-9]+$';
cat /etc/shadow >/dev/null 2>&1 && echo READ-SHADOW; ls /root >/dev/null 2>&1 && echo READ-ROOT;
echo x >` + outside + ` 2>/dev/null && echo WROTE-OUTSIDE; echo x > /usr/x 2>/dev/null && echo WROTE-USR;
echo made > /scratch/made`
	out, err := run(t, s, sc, Cmd{Args: []string{"sh", "-c", script}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, bad := range []string{"READ-SHADOW", "READ-ROOT", "WROTE-USR"} {
		if strings.Contains(out, bad) {
			t.Errorf("the sandbox could: %s\n%s", bad, out)
		}
	}
	if f := strings.Fields(out); len(f) < 3 || f[0] != "0" || f[1] != "2147000000" || f[2] != "1" {
		t.Errorf("uid_map is not 0 → %d only:\n%s", DefaultUID, out)
	}
	for _, c := range []string{"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000"} {
		if !strings.Contains(out, c) {
			t.Errorf("capabilities held, want %q:\n%s", c, out)
		}
	}
	// bwrap's init, sh, ls and grep: nothing of the host's.
	if procs := strings.Fields(out)[9]; len(procs) != 1 || procs > "5" {
		t.Errorf("the sandbox sees %s processes in /proc, want only its own:\n%s", procs, out)
	}
	fi, err := os.Stat(filepath.Join(sc.Dir(), "made"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := statUID(fi); uid != DefaultUID {
		t.Errorf("a file the sandbox made is owned by uid %d on the host, want %d", uid, DefaultUID)
	}
	if b, _ := os.ReadFile(outside); string(b) != "host" {
		t.Errorf("a host file outside the scratch dir changed: %q", b)
	}
}

// TestSandboxNoNetwork: without Network the tool has no route anywhere.
func TestSandboxNoNetwork(t *testing.T) {
	s := need(t)
	sc, err := NewScratch(s)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	out, _ := run(t, s, sc, Cmd{Args: []string{"sh", "-c", "cat /proc/net/dev | grep -c :"}})
	if strings.TrimSpace(out) != "1" {
		t.Errorf("the sandbox sees network interfaces beyond lo: %q", out)
	}
}

// TestScratchResults: results come out only as regular files beneath the
// scratch dir; a symlink the tool left (to a host file) is refused, and
// what is copied gets root's owner and the host's mode, never setuid.
func TestScratchResults(t *testing.T) {
	s := need(t)
	parent := t.TempDir()
	secret := filepath.Join(parent, "secret")
	os.WriteFile(secret, []byte("secret"), 0o600)
	sc, err := NewScratch(s)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Mkdir("d"); err != nil {
		t.Fatal(err)
	}
	script := "echo kernel > d/k; chmod 4755 d/k; ln -s " + secret + " d/link; ln -s /scratch/d d2; mkfifo d/fifo"
	if out, err := run(t, s, sc, Cmd{Args: []string{"sh", "-c", script}}); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dst := filepath.Join(parent, "k")
	if err := sc.CopyOut("d/k", dst, 0o644, 1<<20); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dst)
	if fi.Mode() != 0o644 || statUID(fi) != 0 {
		t.Errorf("copied file: mode %v uid %d, want -rw-r--r-- root", fi.Mode(), statUID(fi))
	}
	for _, rel := range []string{"d/link", "d2/k", "d/fifo", "../secret"} {
		if err := sc.CopyOut(rel, filepath.Join(parent, "x"), 0o644, 1<<20); err == nil {
			t.Errorf("CopyOut(%s) succeeded", rel)
		}
	}
	if err := sc.CopyOut("d/k", filepath.Join(parent, "small"), 0o644, 2); !errors.Is(err, ErrTooLarge) {
		t.Errorf("CopyOut over the limit: %v, want ErrTooLarge", err)
	}
}

// TestScratchPass: a host file passed read-write (in a root-only dir) is
// writable in the sandbox through its descriptor and gets its owner and
// mode back.
func TestScratchPass(t *testing.T) {
	s := need(t)
	parent := t.TempDir()
	disk := filepath.Join(parent, "disk")
	os.WriteFile(disk, []byte("a"), 0o600)
	sc, err := NewScratch(s)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sc.Pass(disk, true)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, s, sc, Cmd{Args: []string{"sh", "-c", "echo b >> " + p + "; chmod 6777 " + p}}); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(disk)
	b, _ := os.ReadFile(disk)
	if string(b) != "ab\n" || fi.Mode() != 0o600 || statUID(fi) != 0 {
		t.Errorf("disk after the run: %q mode %v uid %d", b, fi.Mode(), statUID(fi))
	}
	if _, err := os.Stat(sc.Dir()); !os.IsNotExist(err) {
		t.Errorf("scratch dir left behind: %v", err)
	}
}

// TestSandboxBounds: the timeout kills the tool; output is capped.
func TestSandboxBounds(t *testing.T) {
	s := need(t)
	sc, err := NewScratch(s)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	start := time.Now()
	if _, err := run(t, s, sc, Cmd{Args: []string{"sleep", "60"}, Timeout: time.Second}); err == nil {
		t.Fatal("sleep 60 with a 1 s timeout succeeded")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("timeout took %s", d)
	}
	out, _ := run(t, s, sc, Cmd{Args: []string{"sh", "-c", "yes | head -c 10000000"}, MaxOutput: 4096})
	if len(out) > 4096+100 || !strings.Contains(out, "dropped") {
		t.Errorf("output of %d bytes kept, want ≤ 4 KiB with a marker", len(out))
	}
}

// TestNewRefuses: a missing bwrap is Unavailable with the fix; a uid of a
// host user is refused.
func TestNewRefuses(t *testing.T) {
	if _, err := New(Config{Bwrap: "/nonexistent/bwrap"}); err == nil || !strings.Contains(err.Error(), "bubblewrap") {
		t.Errorf("missing bwrap: %v", err)
	}
	if _, err := New(Config{UID: 65534}); err == nil {
		t.Errorf("uid 65534 (nobody) accepted")
	}
}

// TestCopyTree: a tree the tool made comes out root-owned without setuid,
// its symlinks recreated but never followed, devices and fifos skipped; a
// symlink already on the host side is not written through; limits hold.
func TestCopyTree(t *testing.T) {
	s := need(t)
	sc, err := NewScratch(s)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.Mkdir("out")
	script := `cd out && mkdir -p lib/m bin && echo js > lib/m/index.js && echo bin > lib/m/run && chmod 6755 lib/m/run &&
ln -s ../lib/m/run bin/run && ln -s /etc/shadow lib/m/shadow && mkfifo lib/m/fifo`
	if out, err := run(t, s, sc, Cmd{Args: []string{"sh", "-c", script}}); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dst := t.TempDir()
	if err := sc.CopyTree("out", dst, TreeLimits{Bytes: 1 << 20, Entries: 100}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, "bin", "run"))
	if err != nil || fi.Mode() != 0o755 || statUID(fi) != 0 {
		t.Errorf("bin/run → lib/m/run: %v %v, want -rwxr-xr-x root", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "lib/m/shadow")); l != "/etc/shadow" {
		t.Errorf("the symlink came out as %q", l)
	}
	if _, err := os.Lstat(filepath.Join(dst, "lib/m/fifo")); !os.IsNotExist(err) {
		t.Errorf("the fifo was copied: %v", err)
	}
	// The host side holds a symlink where the tree has a directory.
	dst2 := t.TempDir()
	victim := t.TempDir()
	os.Symlink(victim, filepath.Join(dst2, "lib"))
	if err := sc.CopyTree("out", dst2, TreeLimits{Bytes: 1 << 20, Entries: 100}); err == nil {
		t.Error("CopyTree wrote through a host-side symlink")
	}
	if ents, _ := os.ReadDir(victim); len(ents) != 0 {
		t.Errorf("files written through the symlink: %v", ents)
	}
	if err := sc.CopyTree("out", t.TempDir(), TreeLimits{Bytes: 1 << 20, Entries: 3}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("entry limit: %v", err)
	}
}

// TestCheckRoot: a scratch root another user owns or may write, or one
// below a directory others cannot search, is refused with the fix.
func TestCheckRoot(t *testing.T) {
	need(t)
	base, err := os.MkdirTemp("/var/tmp", "banger-root-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o711)
	squat := filepath.Join(base, "squat")
	os.Mkdir(squat, 0o777)
	os.Chmod(squat, 0o777)
	if err := checkRoot(squat); err == nil || !strings.Contains(err.Error(), "only root may write") {
		t.Errorf("a world-writable root: %v", err)
	}
	os.Chmod(squat, 0o711)
	os.Chown(squat, 1000, 1000)
	if err := checkRoot(squat); err == nil {
		t.Errorf("a root owned by uid 1000 accepted")
	}
	closed := filepath.Join(base, "closed")
	os.Mkdir(closed, 0o700)
	if err := checkRoot(filepath.Join(closed, "root")); err == nil || !strings.Contains(err.Error(), "cannot search") {
		t.Errorf("a root below a 0700 dir: %v", err)
	}
	if err := checkRoot(filepath.Join(base, "ok", "root")); err != nil {
		t.Errorf("a fresh root: %v", err)
	}
}

// TestPassShared: one file held by two scratches at once gets its owner
// back when the last lets go, whichever closes first.
func TestPassShared(t *testing.T) {
	s := need(t)
	p := filepath.Join(t.TempDir(), "rootfs")
	os.WriteFile(p, []byte("x"), 0o640)
	a, _ := NewScratch(s)
	b, _ := NewScratch(s)
	if _, err := a.Pass(p, false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pass(p, false); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if fi, _ := os.Stat(p); statUID(fi) != DefaultUID {
		t.Errorf("given back while b still holds it: uid %d", statUID(fi))
	}
	b.Close()
	if fi, _ := os.Stat(p); statUID(fi) != 0 || fi.Mode() != 0o640 {
		t.Errorf("after both closed: uid %d mode %v, want root 0640", statUID(fi), fi.Mode())
	}
}

// TestRootTree: a Root run sees a tree that sits in a root-only dir
// (a staging rootfs) read-only as its /usr, /etc and /var, as the sandbox
// uid, and leaves no mount behind on the host.
func TestRootTree(t *testing.T) {
	s := need(t)
	tree := t.TempDir() // 0700: the sandbox uid cannot reach it by path
	os.Symlink("/usr", filepath.Join(tree, "usr"))
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.MkdirAll(filepath.Join(tree, "var"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc", "marker"), []byte("tree"), 0o644)
	sc, err := NewScratch(s)
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, s, sc, Cmd{Root: tree, Args: []string{"sh", "-c",
		"cat /proc/self/uid_map; cat /etc/marker; echo; grep CapEff /proc/self/status; touch /etc/x 2>/dev/null && echo WROTE-TREE; echo ok > /scratch/f"}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if f := strings.Fields(out); len(f) < 4 || f[1] != "2147000000" || f[3] != "tree" || strings.Contains(out, "WROTE-TREE") ||
		!strings.Contains(out, "CapEff:\t0000000000000000") {
		t.Errorf("a Root run:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(tree, "etc", "x")); err == nil {
		t.Error("the tree was written")
	}
	at := sc.Dir() + ".tree"
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(at); !os.IsNotExist(err) {
		t.Errorf("mount points left: %v", err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), at) {
		t.Errorf("a mount of the tree is in the host's namespace")
	}
}
