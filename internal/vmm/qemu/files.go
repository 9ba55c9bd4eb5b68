package qemu

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/netw/tun"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// kvmDevice is what QEMU opens for KVM: by path, the one file it opens
// itself, so the uid is given the device's group.
const kvmDevice = "/dev/kvm"

// credential is who QEMU runs as: the VM's own uid and gid, with no
// supplementary group but the one owning /dev/kvm under KVM.
func (e *Engine) credential(spec vmm.Spec) (*proc.Credential, error) {
	c := &proc.Credential{UID: spec.UID, GID: spec.GID}
	if e.cfg.Accel != "kvm" {
		return c, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(kvmDevice, &st); err != nil {
		return nil, api.Unavailable("vm %s: %s: %w", spec.Name, kvmDevice, err)
	}
	if st.Gid == 0 || st.Mode&0o060 != 0o060 {
		return nil, api.FailedPrecondition("vm %s: %s is not read-writable by a group other than root (mode %o, gid %d): the unprivileged QEMU cannot open it",
			spec.Name, kvmDevice, st.Mode&0o777, st.Gid).
			WithFix("give /dev/kvm to the kvm group: chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (udev does this when the qemu-system-x86 package is installed)")
	}
	c.Groups = []int{int(st.Gid)}
	return c, nil
}

// open opens files in plan order. On error the files opened so far are
// returned too, for the caller to close; sockets bound are removed by the
// caller's revert.
// Files of a kind in pre were opened by the caller (each kind once); they
// are returned in their place, and closed with the rest.
func (e *Engine) open(files []passed, pre map[string]*os.File) ([]*os.File, error) {
	var out []*os.File
	for _, p := range files {
		if f, ok := pre[p.kind]; ok {
			out = append(out, f)
			delete(pre, p.kind)
			continue
		}
		f, err := e.openOne(p)
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	for kind, f := range pre { // not in the plan: closed all the same
		_ = f.Close()
		delete(pre, kind)
	}
	return out, nil
}

// withFile adds f as the file of kind to pre (made when nil).
func withFile(pre map[string]*os.File, kind string, f *os.File) map[string]*os.File {
	if pre == nil {
		pre = map[string]*os.File{}
	}
	pre[kind] = f
	return pre
}

func (e *Engine) openOne(p passed) (*os.File, error) {
	switch p.kind {
	case passListen:
		return listen(p.path)
	case passRead:
		return os.Open(p.path)
	case passWrite:
		return os.OpenFile(p.path, os.O_RDWR, 0)
	case passAppend:
		f, err := os.OpenFile(p.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening log %s: %w", p.path, err)
		}
		return f, nil
	case passTap:
		return openTap(p.path, e.cfg.TapNetns)
	case passVhost:
		return os.OpenFile(p.path, os.O_RDWR, 0)
	}
	return nil, fmt.Errorf("qemu: unknown file kind %q", p.kind)
}

// listen binds a Unix socket at path (mode 0600, root's: only the daemon
// connects) and returns the listening socket's file; the path stays when
// the daemon's copy is closed.
func listen(path string) (*os.File, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("binding %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("binding %s: %w", path, err)
	}
	f, err := l.File()
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("binding %s: %w", path, err)
	}
	return f, nil
}

// tapBusyWait is how long a busy tap is retried: a QEMU that was just
// killed holds its tap until it has fully exited, after it left /proc's
// cmdline (what Alive looks at).
const tapBusyWait = 2 * time.Second

func openTap(name, netns string) (*os.File, error) {
	deadline := time.Now().Add(tapBusyWait)
	for {
		f, err := tun.Open(name, netns)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// isBlockDevice reports whether path is a block device (a device-mapper
// snapshot) rather than a file.
func isBlockDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}
