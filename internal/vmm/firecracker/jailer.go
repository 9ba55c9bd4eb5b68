package firecracker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/mountinfo"
	"banger/internal/vmm"
)

// In-jail paths. The jailer chroots Firecracker into
// <ChrootBase>/<exec file name>/<id>/root, the exec file name being that of
// the canonical (symlinks resolved) --exec-file; everything Firecracker
// opens must be inside it.
const (
	jailAPISocket = "/run/firecracker.socket"
	jailVsock     = "/run/vsock.sock" // /run is the one directory the jailed uid owns
	jailLog       = "/firecracker.log"
	jailMetrics   = "/metrics"
	jailKernel    = "/vmlinux"
	jailInitrd    = "/initrd"
)

// memOverheadMiB is added to the guest's memory for the cgroup's
// memory.max: Firecracker's own heap, the device model, the page tables.
const memOverheadMiB = 128

// jailLink is a file put into the chroot.
type jailLink struct {
	Src string `json:"src"` // host path
	Dst string `json:"dst"` // host path inside the chroot
	// Disk is a writable disk of this VM: it must be the VM's own file
	// (a copy would fork the guest's writes away from the VM's disk) and
	// is handed to the jailed uid. A file on another filesystem than the
	// jail is bind-mounted, a block device (a /dev/mapper snapshot) made
	// as a device node in the jail.
	Disk bool `json:"disk"`
	// Shared files (the image's kernel, initrd, a read-only disk) are
	// never chowned: hard-linked when the jailed uid can read them (mode
	// o+r) on the same filesystem, else copied; the jailed uid cannot
	// write them either way.
}

// jailPlan is everything needed to run one guest under the jailer.
type jailPlan struct {
	Args    []string   `json:"args"`     // jailer arguments
	JailDir string     `json:"jail_dir"` // <base>/<exec>/<id>, removed on stop
	Root    string     `json:"root"`     // JailDir/root, the chroot
	Links   []jailLink `json:"links"`
	// Create are empty files Firecracker expects to exist (logger, metrics).
	Create []string `json:"create"`
	// Paths are the in-jail paths given to the API.
	Paths paths `json:"paths"`
	// Host paths of the sockets Firecracker makes inside the chroot.
	APISocket   string `json:"api_socket"`
	AgentSocket string `json:"agent_socket"`
	// PIDFile is where the jailer (--new-pid-ns) writes Firecracker's pid.
	PIDFile string `json:"pid_file"`
	// Marker is what Alive looks for in the process's command line: the
	// in-jail socket path is the same for every VM, the id is not.
	Marker string `json:"marker"`
}

// jailDrive is the in-jail path of a disk.
func jailDrive(id string) string { return "/drive-" + id }

// jailMarker matches "--id <name>" in a NUL-separated /proc cmdline.
func jailMarker(name string) string { return "\x00--id\x00" + name + "\x00" }

// canonicalExec is the jailer's --exec-file: the binary looked up on PATH
// with its symlinks resolved, whose file name names the jail directory (the
// jailer does the same: canonicalize, then file_name). A path that cannot
// be resolved is kept as given.
func canonicalExec(binary string) string {
	p, err := exec.LookPath(binary)
	if err != nil {
		return binary
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	if a, err := filepath.Abs(p); err == nil {
		p = a
	}
	return p
}

// cgroupArgs are the jailer's cgroup v2 limits from the VM's size: cpu.max
// of its vCPUs (quota/period), memory.max of its memory plus overhead.
func cgroupArgs(spec vmm.Spec) []string {
	return []string{
		"--cgroup-version", "2",
		"--cgroup", "cpu.max=" + strconv.Itoa(spec.VCPUs*100000) + " 100000",
		"--cgroup", "memory.max=" + strconv.Itoa((spec.MemoryMiB+memOverheadMiB)<<20),
	}
}

// planJail maps spec into the chroot. It is pure (e.execPath was resolved
// by New).
func (e *Engine) planJail(spec vmm.Spec) jailPlan {
	execName := filepath.Base(e.execPath)
	jailDir := filepath.Join(e.cfg.ChrootBase, execName, spec.Name)
	root := filepath.Join(jailDir, "root")
	in := func(p string) string { return filepath.Join(root, p) }
	p := jailPlan{
		Args: []string{
			"--id", spec.Name,
			"--exec-file", e.execPath,
			"--uid", strconv.Itoa(spec.UID),
			"--gid", strconv.Itoa(spec.GID),
			"--chroot-base-dir", e.cfg.ChrootBase,
			"--new-pid-ns",
		},
		JailDir:     jailDir,
		Root:        root,
		APISocket:   in(jailAPISocket),
		AgentSocket: in(jailVsock),
		PIDFile:     in(execName + ".pid"),
		Marker:      jailMarker(spec.Name),
		Paths:       paths{LogPath: jailLog, VsockUDS: jailVsock},
	}
	p.Args = append(p.Args, cgroupArgs(spec)...)
	if e.cfg.TapNetns != "" {
		p.Args = append(p.Args, "--netns", e.cfg.TapNetns)
	}
	p.Args = append(p.Args, "--")
	if spec.Vmlinux != "" { // none for a restore
		p.Paths.Kernel = jailKernel
		p.Links = append(p.Links, jailLink{Src: spec.Vmlinux, Dst: in(jailKernel)})
	}
	if spec.Initrd != "" && spec.Vmlinux != "" {
		p.Paths.Initrd = jailInitrd
		p.Links = append(p.Links, jailLink{Src: spec.Initrd, Dst: in(jailInitrd)})
	}
	for _, d := range spec.Disks {
		jp := jailDrive(d.ID)
		p.Paths.Disks = append(p.Paths.Disks, jp)
		p.Links = append(p.Links, jailLink{Src: d.Path, Dst: in(jp), Disk: !d.ReadOnly})
	}
	p.Create = append(p.Create, in(jailLog))
	if spec.MetricsPath != "" {
		p.Paths.MetricsPath = jailMetrics
		p.Create = append(p.Create, in(jailMetrics))
	}
	// The jailer passes what follows "--" to Firecracker; the id is its own.
	p.Args = append(p.Args, processArgs(jailAPISocket, "", p.Paths)...)
	return p
}

// prepare builds the chroot: a jail left by an unclean exit is removed
// first (the jailer's mknod of /dev/kvm would fail with EEXIST), files are
// put in (see jailLink), the log files are created empty, and what the
// jailed uid must write — its disks, logs and /run for its API socket — is
// handed to it. Nothing shared is chowned. On error the caller removes the
// jail (removeJail).
func (p jailPlan) prepare(uid, gid int) error {
	if err := removeJail(p.JailDir); err != nil {
		return err
	}
	run := filepath.Join(p.Root, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		return fmt.Errorf("creating jail %s: %w", p.Root, err)
	}
	own := []string{run}
	for _, l := range p.Links {
		if err := putInJail(l); err != nil {
			return err
		}
		if l.Disk {
			own = append(own, l.Dst)
		}
	}
	for _, f := range p.Create {
		fd, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("creating %s: %w", f, err)
		}
		fd.Close()
		own = append(own, f)
	}
	for _, f := range own {
		if err := os.Chown(f, uid, gid); err != nil {
			return fmt.Errorf("handing %s to uid %d: %w", f, uid, err)
		}
	}
	return nil
}

// putInJail puts one file into the chroot (see jailLink).
func putInJail(l jailLink) error {
	var st unix.Stat_t
	if err := unix.Stat(l.Src, &st); err != nil {
		return fmt.Errorf("%s: %w", l.Src, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		// A block device cannot be linked across filesystems; the node
		// in the jail is a new inode, so owning it gives nothing else.
		mode := uint32(unix.S_IFBLK | 0o600)
		if !l.Disk {
			mode = unix.S_IFBLK | 0o444
		}
		if err := unix.Mknod(l.Dst, mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("making device node %s for %s in the jail: %w", l.Dst, l.Src, err)
		}
		return nil
	}
	if !l.Disk && st.Mode&0o004 == 0 {
		// The jailed uid could not read a link: copy (root's, 0444).
		return copyFile(l.Src, l.Dst, 0o444)
	}
	err := os.Link(l.Src, l.Dst)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, syscall.EXDEV):
		return fmt.Errorf("linking %s into the jail: %w", l.Src, err)
	case !l.Disk:
		return copyFile(l.Src, l.Dst, 0o444)
	}
	// A disk on another filesystem (the loop-backed XFS pool): bind-mount
	// the VM's own file onto an empty one in the jail; removeJail unmounts.
	f, err := os.OpenFile(l.Dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", l.Dst, err)
	}
	f.Close()
	if err := unix.Mount(l.Src, l.Dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting disk %s into the jail (it is on another filesystem than %s): %w", l.Src, l.Dst, err)
	}
	return nil
}

// removeJail unmounts the disks bound into a jail and removes it: hard
// links and device nodes go, the VM's own files stay. A missing jail is
// no error.
func removeJail(dir string) error {
	if dir == "" {
		return nil
	}
	mounts, err := mountinfo.Under(dir)
	if err != nil {
		return fmt.Errorf("reading mounts under %s: %w", dir, err)
	}
	for _, m := range mounts { // deepest first
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmounting %s: %w", m, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing jail %s: %w", dir, err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s into the jail: %w", src, err)
	}
	return out.Close()
}
