package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/progress"
)

// buildLog tees a build's command output to the build.log file, the
// reporter (line by line) and keeps the last lines for error messages.
type buildLog struct {
	mu   sync.Mutex
	f    *os.File          // guarded by mu
	rep  progress.Reporter // guarded by mu
	tail []string          // guarded by mu
}

const tailLines = 15

func newBuildLog(path string, rep progress.Reporter) (*buildLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening build log: %w", err)
	}
	return &buildLog{f: f, rep: rep}, nil
}

// Line records one line of output.
func (l *buildLog) Line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.f, s)
	l.rep.Output(s)
	l.tail = append(l.tail, s)
	if len(l.tail) > tailLines {
		l.tail = l.tail[len(l.tail)-tailLines:]
	}
}

// Tail returns the last lines of output, for an error message.
func (l *buildLog) Tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := strings.Join(l.tail, "\n")
	l.tail = nil
	return t
}

func (l *buildLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// pipe returns a writer whose lines go to Line, and a wait function that
// returns when every line has been consumed.
func (l *buildLog) pipe() (io.WriteCloser, func()) {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.Line(strings.TrimRight(sc.Text(), "\r"))
		}
		io.Copy(io.Discard, pr)
	}()
	return pw, func() { <-done }
}

// run runs a command with its output going to the build log. On ctx
// cancellation the whole process group is killed (debootstrap and apt leave
// children behind otherwise). A failure carries the output's last lines.
func (l *buildLog) run(ctx context.Context, env []string, name string, args ...string) error {
	l.Line("+ " + name + " " + strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(baseEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	w, wait := l.pipe()
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	w.Close()
	wait()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, context.Cause(ctx))
		}
		return fmt.Errorf("%s %s: %w; last output:\n%s", name, firstArg(args), err, l.Tail())
	}
	return nil
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// proxyVars are passed from the daemon's environment to build commands:
// on a host that reaches the mirror only through a proxy, debootstrap
// (wget) and apt in the chroot honour them. Nothing writes them into the
// image.
var proxyVars = []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}

// baseEnv is a clean environment for build commands: no host locale or
// other host settings leak into the chroot, only the proxy variables.
func baseEnv() []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8", "LC_ALL=C.UTF-8", "HOME=/root",
		"DEBIAN_FRONTEND=noninteractive", "DEBCONF_NONINTERACTIVE_SEEN=true",
	}
	for _, k := range proxyVars {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// chroot runs commands inside a root directory with /proc, /sys, /dev and
// /dev/pts mounted. Close unmounts everything below the directory, including
// mounts left by a killed debootstrap.
type chroot struct {
	dir string
	log *buildLog
}

// mount sets up the pseudo filesystems a package install needs.
func (c *chroot) mount() error {
	mounts := []struct {
		target, fstype, source string
		flags                  uintptr
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sys", "sysfs", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY},
		{"dev", "", "/dev", unix.MS_BIND},
		{"dev/pts", "", "/dev/pts", unix.MS_BIND},
	}
	for _, m := range mounts {
		target := filepath.Join(c.dir, m.target)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", target, err)
		}
		if err := unix.Mount(m.source, target, m.fstype, m.flags, ""); err != nil {
			return fmt.Errorf("mounting %s on %s: %w", m.source, target, err)
		}
	}
	return nil
}

// run runs argv inside the chroot.
func (c *chroot) run(ctx context.Context, env []string, argv ...string) error {
	return c.log.run(ctx, env, "chroot", append([]string{c.dir}, argv...)...)
}

// Close unmounts every mount below the chroot directory.
func (c *chroot) Close() error { return unmountBelow(c.dir) }

// mountsBelow lists the mount points at or below dir from
// /proc/self/mountinfo, deepest first.
func mountsBelow(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for a space) in a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountBelow unmounts everything at or below dir, deepest first, falling
// back to a lazy unmount for busy mounts. It fails only when something is
// still mounted afterwards: removing the tree then would reach into the
// host's /dev.
func unmountBelow(dir string) error {
	for attempt := 0; attempt < 3; attempt++ {
		mps, err := mountsBelow(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil {
				_ = unix.Unmount(mp, unix.MNT_DETACH)
			}
		}
	}
	mps, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	if len(mps) > 0 {
		return fmt.Errorf("still mounted after unmounting: %s", strings.Join(mps, ", "))
	}
	return nil
}

// removeStaging unmounts everything below dir and removes it. It refuses to
// remove a tree that still has mounts in it.
func removeStaging(dir string) error {
	if err := unmountBelow(dir); err != nil {
		return fmt.Errorf("cleaning up %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

// CleanStaging removes every build left in a staging directory by a crashed
// or killed process, unmounting what it left mounted first. Call it only
// when no build is running there (at daemon start, or under a lock).
func CleanStaging(stagingDir string) error {
	ents, err := os.ReadDir(stagingDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading staging dir: %w", err)
	}
	for _, e := range ents {
		if err := removeStaging(filepath.Join(stagingDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
