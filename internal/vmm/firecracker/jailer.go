package firecracker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"banger/internal/vmm"
)

// In-jail paths. The jailer chroots Firecracker into
// <ChrootBase>/<exec file name>/<id>/root; everything Firecracker opens
// must be inside it.
const (
	jailAPISocket = "/run/firecracker.socket"
	jailVsock     = "/vsock.sock"
	jailLog       = "/firecracker.log"
	jailMetrics   = "/metrics"
	jailKernel    = "/vmlinux"
	jailInitrd    = "/initrd"
)

// jailLink is a file linked into the chroot.
type jailLink struct {
	Src string `json:"src"` // host path
	Dst string `json:"dst"` // host path inside the chroot
	// Disk files must be hard links: a copy would fork the guest's writes
	// away from the VM's disk. Boot files may be copied.
	MustLink bool `json:"must_link"`
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
	// Marker is what Alive looks for in the process's command line: the
	// in-jail socket path is the same for every VM, the id is not.
	Marker string `json:"marker"`
}

// jailMarker matches "--id <name>" in a NUL-separated /proc cmdline.
func jailMarker(name string) string { return "\x00--id\x00" + name + "\x00" }

// planJail maps spec into the chroot. It is pure.
func (e *Engine) planJail(spec vmm.Spec) jailPlan {
	jailDir := filepath.Join(e.cfg.ChrootBase, filepath.Base(e.cfg.Binary), spec.Name)
	root := filepath.Join(jailDir, "root")
	in := func(p string) string { return filepath.Join(root, p) }
	p := jailPlan{
		Args: []string{
			"--id", spec.Name,
			"--exec-file", e.cfg.Binary,
			"--uid", strconv.Itoa(e.cfg.JailerUID),
			"--gid", strconv.Itoa(e.cfg.JailerGID),
			"--chroot-base-dir", e.cfg.ChrootBase,
			"--",
		},
		JailDir:     jailDir,
		Root:        root,
		APISocket:   in(jailAPISocket),
		AgentSocket: in(jailVsock),
		Marker:      jailMarker(spec.Name),
		Paths:       paths{Kernel: jailKernel, LogPath: jailLog, VsockUDS: jailVsock},
	}
	p.Links = append(p.Links, jailLink{Src: spec.Vmlinux, Dst: in(jailKernel)})
	if spec.Initrd != "" {
		p.Paths.Initrd = jailInitrd
		p.Links = append(p.Links, jailLink{Src: spec.Initrd, Dst: in(jailInitrd)})
	}
	for _, d := range spec.Disks {
		jp := "/drive-" + d.ID
		p.Paths.Disks = append(p.Paths.Disks, jp)
		p.Links = append(p.Links, jailLink{Src: d.Path, Dst: in(jp), MustLink: true})
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

// prepare builds the chroot: links/copies files in, creates the log files
// empty (a jail left by a crash may hold an old run's) and hands all of
// them to the jail's uid/gid.
func (p jailPlan) prepare(uid, gid int) error {
	if err := os.MkdirAll(filepath.Join(p.Root, "run"), 0o755); err != nil {
		return fmt.Errorf("creating jail %s: %w", p.Root, err)
	}
	own := []string{}
	for _, l := range p.Links {
		if err := linkInto(l); err != nil {
			return err
		}
		own = append(own, l.Dst)
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

func linkInto(l jailLink) error {
	err := os.Link(l.Src, l.Dst)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EXDEV) || l.MustLink {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("linking disk %s into the jail: %w (put the jailer chroot base on the same filesystem as the VM directory)", l.Src, err)
		}
		return fmt.Errorf("linking %s into the jail: %w", l.Src, err)
	}
	return copyFile(l.Src, l.Dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s into the jail: %w", src, err)
	}
	return out.Close()
}
