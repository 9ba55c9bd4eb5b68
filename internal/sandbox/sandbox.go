// Package sandbox runs a host tool on hostile input with no privileges:
// bubblewrap (bwrap) started as an unprivileged uid/gid that has no passwd
// entry (UID, default 2147000000), in new user, mount, pid, IPC, UTS,
// cgroup and (unless a step needs it) network namespaces, with every
// capability dropped, its own session, killed with its parent. It sees
// /usr (and the /bin /lib /lib64 /sbin links) read-only, a fresh /dev and
// /proc of its own, the few /etc files a command asks for, and exactly one
// writable directory: its Scratch, bound at /scratch. Inside, it is uid 0
// of its user namespace (so tools that make files, e.g. `mke2fs -d`, record
// root as their owner) — on the host it is UID, and it holds nothing.
//
// What it trusts: bwrap and the kernel's namespaces. What it does not
// trust: the tool, its input and everything it leaves in the scratch dir.
// Files go in as hard links (chowned to UID for the run, restored after);
// results come out only as regular files opened beneath the scratch dir
// without following any link (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
// and are written by the host with the owner and mode the host chooses.
//
// When bwrap is missing the sandbox refuses to run (Unavailable, with the
// fix): nothing ever falls back to running the tool as root.
package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"banger/internal/api"
)

// DefaultRoot is where scratch dirs live unless configured (sandbox_dir):
// on disk (guest-sized output must not fill a tmpfs), under a root-only
// parent (no other user can squat it).
const DefaultRoot = "/var/lib/banger-sandbox"

// DefaultUID is the uid (and gid) sandboxed tools run as unless the config
// says otherwise: far above every login, system and subuid range, with no
// passwd entry.
const DefaultUID = 2147000000

// Config says how tools are sandboxed.
type Config struct {
	UID, GID uint32 // the unprivileged identity; 0 = DefaultUID
	Bwrap    string // bwrap binary; "" = bwrap on PATH
	// ScratchRoot holds the scratch dirs; "" = DefaultRoot/default. bwrap
	// binds the scratch dir by path as the sandbox uid, so every parent
	// must be searchable by others (the state dir is 0700: not there); the
	// root itself must be root's and writable by nobody else. The daemon
	// uses the config's sandbox_dir/<its state dir's hash>.
	ScratchRoot string
}

// Sandbox runs commands in bwrap. The zero value is not usable: New.
type Sandbox struct {
	uid, gid uint32
	bwrap    string
	root     string
}

var (
	defMu  sync.Mutex
	defCfg = Config{}
)

// SetDefault sets the configuration Default uses (the daemon's wiring does,
// from the config's sandbox_uid).
func SetDefault(c Config) {
	defMu.Lock()
	defer defMu.Unlock()
	defCfg = c
}

// Default returns the sandbox of the configuration SetDefault recorded, or
// an Unavailable error naming the fix when it cannot run.
func Default() (*Sandbox, error) {
	defMu.Lock()
	c := defCfg
	defMu.Unlock()
	return New(c)
}

// New checks the configuration: bwrap must be installed and the uid must
// not be root nor belong to a user or group of this host.
func New(c Config) (*Sandbox, error) {
	if c.UID == 0 {
		c.UID = DefaultUID
	}
	if c.GID == 0 {
		c.GID = c.UID
	}
	bin := c.Bwrap
	if bin == "" {
		bin = "bwrap"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return nil, api.Unavailable("bubblewrap (%s) is not installed: banger parses guest-written data only in a sandbox", bin).
			WithFix("apt-get install bubblewrap")
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(c.UID), 10)); err == nil {
		return nil, api.Invalid("sandbox uid %d is the host user %s", c.UID, u.Username).
			WithFix("set sandbox_uid to a uid no user has (default " + strconv.Itoa(DefaultUID) + ")")
	}
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(c.GID), 10)); err == nil {
		return nil, api.Invalid("sandbox gid %d is the host group %s", c.GID, g.Name).
			WithFix("set sandbox_uid to an id no user or group has (default " + strconv.Itoa(DefaultUID) + ")")
	}
	root := c.ScratchRoot
	if root == "" {
		root = filepath.Join(DefaultRoot, "default")
	}
	if err := checkRoot(root); err != nil {
		return nil, err
	}
	return &Sandbox{uid: c.UID, gid: c.GID, bwrap: p, root: root}, nil
}

// Check reports whether sandboxed tools can run here with configuration c:
// the doctor's check. It runs `true` in a sandbox and returns what it did.
func Check(ctx context.Context, c Config) (string, error) {
	s, err := New(c)
	if err != nil {
		return "", err
	}
	sc, err := NewScratch(s)
	if err != nil {
		return "", err
	}
	defer sc.Close()
	if _, err := s.Run(ctx, sc, Cmd{Args: []string{"true"}, Timeout: 10 * time.Second}); err != nil {
		return "", api.Unavailable("bubblewrap cannot start a sandbox: %w", err).
			WithFix("allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; kernel.apparmor_restrict_unprivileged_userns=0)")
	}
	return fmt.Sprintf("%s runs tools as uid %d, no capabilities, scratch in %s", s.bwrap, s.uid, s.root), nil
}

// UID is the host uid sandboxed tools run as.
func (s *Sandbox) UID() uint32 { return s.uid }

// Cmd is one sandboxed command.
type Cmd struct {
	Args []string // the program (looked up on the sandbox's PATH) and its arguments
	// Network keeps the host's network (npm); off, the tool has only a
	// loopback of its own.
	Network bool
	// ROBinds are extra host paths bound read-only at the same path
	// (config files: /etc/mke2fs.conf); missing ones are skipped.
	ROBinds []string
	// Root, when set, is a host directory tree (a staging rootfs, merged
	// /usr) whose /usr, /etc and /var are bound read-only instead of the
	// host's /usr: the tool runs the tree's programs, never changing it.
	Root string
	Env  []string // the environment; PATH and HOME=/scratch are always set
	// Dir is the working directory inside the sandbox; "" = /scratch.
	Dir string
	// Timeout bounds the run (0 = 5 minutes); ctx bounds it too.
	Timeout time.Duration
	// MaxOutput caps the combined output kept (0 = 64 KiB): the head and
	// the tail are kept, the middle is dropped.
	MaxOutput int
	// TmpSize caps the sandbox's private /tmp (a tmpfs: memory) in bytes;
	// 0 = 256 MiB.
	TmpSize int64
	// MaxMemory caps the tool's address space in bytes (prlimit --as; 0 =
	// none; not with Root, whose tree may lack prlimit).
	MaxMemory int64
	// MaxFileSize caps every file the tool writes, at any offset (prlimit
	// --fsize; 0 = none; not with Root): for tools that only make new
	// files of bounded size, never for one that writes a large image.
	MaxFileSize int64
}

// Run runs c in the sandbox with sc as its only writable directory and
// returns its combined output (capped). A failure wraps the exit error with
// the output's last lines.
func (s *Sandbox) Run(ctx context.Context, sc *Scratch, c Cmd) ([]byte, error) {
	if len(c.Args) == 0 {
		return nil, errors.New("sandbox: no command")
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, err := s.command(ctx, sc, c)
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = sc.files()
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out := &capBuffer{max: c.MaxOutput}
	if out.max == 0 {
		out.max = 64 << 10
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if c.Root == "" {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: s.uid, Gid: s.gid, Groups: []uint32{}}
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the sandbox for %s: %w", c.Args[0], err)
	}
	if a := audit.Load(); a != nil {
		(*a)(observe(cmd.Process.Pid, c.Args))
	}
	err = cmd.Wait()
	b := out.Bytes()
	if ctx.Err() != nil && err != nil {
		return b, fmt.Errorf("%s: %w (sandbox timeout %s)", c.Args[0], ctx.Err(), timeout)
	}
	if err != nil {
		return b, fmt.Errorf("%s: %w: %s", c.Args[0], err, lastLines(b, 5))
	}
	return b, nil
}

// treeScript runs as root in a private mount namespace of its own
// (unshare): it binds a tree's /usr, /etc and /var read-only onto empty
// dirs the sandbox uid can reach — the tree itself sits in a 0700 staging
// dir, and bwrap resolves what it binds as the sandbox uid — then drops to
// the sandbox uid (no groups, no capabilities) and starts bwrap. The binds
// exist only in that namespace.
const treeScript = `set -e
root=$1 at=$2 uid=$3; shift 3
for d in usr etc var; do
	mount --bind "$root/$d" "$at/$d"
	mount -o remount,bind,ro "$at/$d"
done
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all -- "$@"`

// command is bwrap's command: started as the sandbox uid, or for a Root
// run through treeScript.
func (s *Sandbox) command(ctx context.Context, sc *Scratch, c Cmd) (*exec.Cmd, error) {
	if c.Root == "" {
		return exec.CommandContext(ctx, s.bwrap, s.args(c, sc.dir, "")...), nil
	}
	at := sc.dir + ".tree"
	for _, d := range []string{"", "usr", "etc", "var"} {
		if err := os.Mkdir(filepath.Join(at, d), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("making the sandbox's mount points: %w", err)
		}
	}
	sc.extra = append(sc.extra, at)
	args := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", treeScript, "sh",
		c.Root, at, strconv.FormatUint(uint64(s.uid), 10), s.bwrap}, s.args(c, sc.dir, at)...)
	return exec.CommandContext(ctx, "unshare", args...), nil
}

// args builds bwrap's command line with scratch bound at /scratch and, for
// a Root run, the tree's dirs from at.
func (s *Sandbox) args(c Cmd, scratch, at string) []string {
	a := []string{"--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
		"--uid", "0", "--gid", "0", "--hostname", "sandbox"}
	if c.Network {
		a = append(a, "--share-net")
	}
	if c.Root != "" {
		// The tree's /usr, /etc and /var, read-only, on a root of the
		// sandbox's own (a read-only / would leave no mount point for
		// /scratch).
		for _, d := range []string{"usr", "etc", "var"} {
			a = append(a, "--ro-bind", filepath.Join(at, d), "/"+d)
		}
	} else {
		a = append(a, "--ro-bind", "/usr", "/usr")
	}
	a = append(a, "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
		"--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin")
	for _, p := range c.ROBinds {
		a = append(a, "--ro-bind-try", p, p)
	}
	tmp := c.TmpSize
	if tmp == 0 {
		tmp = 256 << 20
	}
	a = append(a, "--dev", "/dev", "--proc", "/proc", "--size", strconv.FormatInt(tmp, 10), "--tmpfs", "/tmp",
		"--bind", scratch, "/scratch")
	dir := c.Dir
	if dir == "" {
		dir = "/scratch"
	}
	a = append(a, "--chdir", dir, "--clearenv",
		"--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"--setenv", "HOME", "/scratch")
	for _, e := range c.Env {
		if k, v, ok := bytes.Cut([]byte(e), []byte("=")); ok {
			a = append(a, "--setenv", string(k), string(v))
		}
	}
	a = append(a, "--")
	if (c.MaxMemory > 0 || c.MaxFileSize > 0) && c.Root == "" {
		a = append(a, "prlimit")
		if c.MaxMemory > 0 {
			a = append(a, "--as="+strconv.FormatInt(c.MaxMemory, 10))
		}
		if c.MaxFileSize > 0 {
			a = append(a, "--fsize="+strconv.FormatInt(c.MaxFileSize, 10))
		}
		a = append(a, "--")
	}
	return append(a, c.Args...)
}

// capBuffer keeps the first and last max/2 bytes written to it.
type capBuffer struct {
	max     int
	head    []byte
	tail    []byte
	dropped int64
}

func (b *capBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max/2 - len(b.head); room > 0 {
		k := min(room, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	b.tail = append(b.tail, p...)
	if over := len(b.tail) - b.max/2; over > 0 {
		b.dropped += int64(over)
		b.tail = append(b.tail[:0], b.tail[over:]...)
	}
	return n, nil
}

// Bytes returns the kept output, with a marker where bytes were dropped.
func (b *capBuffer) Bytes() []byte {
	out := append([]byte{}, b.head...)
	if b.dropped > 0 {
		out = append(out, fmt.Sprintf("\n[… %d bytes of output dropped …]\n", b.dropped)...)
	}
	return append(out, b.tail...)
}

// lastLines returns the last n lines of a tool's output, trimmed.
func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-n):], []byte("\n")))
}
