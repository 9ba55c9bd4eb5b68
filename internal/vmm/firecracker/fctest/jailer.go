package fctest

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnvChroot is set by JailerMain for the fake firecracker it starts: the
// host path of the jail's root, which the fake prefixes to every path it is
// given (it cannot really chroot: the test binary is not static).
const EnvChroot = "FCTEST_CHROOT"

// multi is a repeatable flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// JailerMain runs a fake `jailer` modelled on Firecracker's (src/jailer):
// `--id ID --exec-file PATH --uid N --gid N [--chroot-base-dir DIR]
// [--netns PATH] [--new-pid-ns] [--cgroup-version 1|2] [--cgroup F=V]…
// -- ARGS`. Like the real one it canonicalises the exec file and builds
// <base>/<exec file name>/<id>/root, copies the exec file in, makes the
// device nodes /dev/kvm and /dev/net/tun owned by the uid — failing with
// EEXIST on a jail left by an earlier run —, validates the cgroup v2 limits
// (cpu.max, memory.max; they are not applied), then runs the exec file as
// uid:gid with no supplementary groups (a real credential drop: the
// kernel's permission checks are the real ones) in the netns, with
// EnvChroot set and childEnv. With --new-pid-ns it writes the child's pid
// to <root>/<exec file name>.pid and exits 0, as the real jailer's parent
// does. It returns the exit code.
func JailerMain(args []string, childEnv []string) int {
	fs := flag.NewFlagSet("jailer", flag.ContinueOnError)
	id := fs.String("id", "", "")
	execFile := fs.String("exec-file", "", "")
	uid := fs.Int("uid", -1, "")
	gid := fs.Int("gid", -1, "")
	base := fs.String("chroot-base-dir", "/srv/jailer", "")
	netns := fs.String("netns", "", "")
	newPidNS := fs.Bool("new-pid-ns", false, "")
	cgVersion := fs.String("cgroup-version", "1", "")
	var cgroups multi
	fs.Var(&cgroups, "cgroup", "")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "Jailer error: "+format+"\n", a...)
		return 1
	}
	if *id == "" || *execFile == "" || *uid < 0 || *gid < 0 {
		return fail("missing --id, --exec-file, --uid or --gid")
	}
	if err := checkCgroups(*cgVersion, cgroups); err != nil {
		return fail("%v", err)
	}
	exe, err := filepath.EvalSymlinks(*execFile)
	if err != nil {
		return fail("Failed to canonicalize path %s: %v", *execFile, err)
	}
	name := filepath.Base(exe)
	root := filepath.Join(*base, name, *id, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fail("Failed to create directory %s: %v", root, err)
	}
	chrootExe := filepath.Join(root, name)
	if err := copyExec(exe, chrootExe, *uid, *gid); err != nil {
		return fail("%v", err)
	}
	for _, dev := range []struct {
		path         string
		major, minor uint32
	}{{"dev/net/tun", 10, 200}, {"dev/kvm", 10, 232}} {
		p := filepath.Join(root, dev.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fail("%v", err)
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(dev.major, dev.minor))); err != nil {
			return fail("Failed to create %s via mknod inside the jail: %v", "/"+dev.path, err)
		}
		if err := os.Chown(p, *uid, *gid); err != nil {
			return fail("%v", err)
		}
	}
	rest := fs.Args()
	cmd := exec.Command(chrootExe, append([]string{"--id", *id}, rest...)...)
	cmd.Dir = root
	cmd.Env = append(append([]string{}, childEnv...), EnvChroot+"="+root)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true,
		Credential: &syscall.Credential{Uid: uint32(*uid), Gid: uint32(*gid), Groups: []uint32{}}}
	if err := startIn(*netns, cmd); err != nil {
		return fail("%v", err)
	}
	if *newPidNS {
		pidFile := filepath.Join(root, name+".pid")
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			return fail("%v", err)
		}
		_ = cmd.Process.Release()
		return 0
	}
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}

// checkCgroups accepts what banger gives: cgroup v2, cpu.max "QUOTA
// PERIOD" and memory.max bytes.
func checkCgroups(version string, cgroups []string) error {
	if len(cgroups) > 0 && version != "2" {
		return fmt.Errorf("cgroup version %q: banger's limits are cgroup v2 files", version)
	}
	for _, c := range cgroups {
		k, v, ok := strings.Cut(c, "=")
		if !ok {
			return fmt.Errorf("invalid cgroup %q: want FILE=VALUE", c)
		}
		switch k {
		case "cpu.max":
			f := strings.Fields(v)
			if len(f) != 2 {
				return fmt.Errorf("cpu.max %q: want QUOTA PERIOD", v)
			}
			for _, n := range f {
				if i, err := strconv.Atoi(n); err != nil || i <= 0 {
					return fmt.Errorf("cpu.max %q: not positive numbers", v)
				}
			}
		case "memory.max":
			if i, err := strconv.ParseInt(v, 10, 64); err != nil || i <= 0 {
				return fmt.Errorf("memory.max %q: not a positive byte count", v)
			}
		default:
			return fmt.Errorf("cgroup file %q: the fake knows cpu.max and memory.max", k)
		}
	}
	return nil
}

func copyExec(src, dst string, uid, gid int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("Failed to copy %s into the jail: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chown(dst, uid, gid)
}

// startIn starts cmd from a thread in netns ("" the current one): the
// child is forked from it and keeps its namespace.
func startIn(netns string, cmd *exec.Cmd) error {
	if netns == "" {
		return cmd.Start()
	}
	runtime.LockOSThread() // never unlocked: the thread dies with us
	f, err := os.Open(netns)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("joining netns %s: %w", netns, err)
	}
	return cmd.Start()
}
