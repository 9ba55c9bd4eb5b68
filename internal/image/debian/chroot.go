package debian

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/image"
)

// run runs a command with its output going to the build log. On ctx
// cancellation the whole process group is killed (debootstrap and apt leave
// children behind otherwise). A failure carries the output's last lines.
func run(ctx context.Context, l *image.BuildLog, env []string, name string, args ...string) error {
	l.Line("+ " + name + " " + strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(baseEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	w := l.Writer()
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	w.Close()
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
	log *image.BuildLog
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
	return run(ctx, c.log, env, "chroot", append([]string{c.dir}, argv...)...)
}

// Close unmounts every mount below the chroot directory.
func (c *chroot) Close() error { return image.UnmountBelow(c.dir) }
