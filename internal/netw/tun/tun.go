// Package tun opens banger's persistent tap devices for an engine and hands
// them to the unprivileged uid an engine runs as.
//
// The taps themselves are made by internal/netw (owned by root: netlink
// always sends TUNSETOWNER, 0 unless told otherwise). An engine that runs
// as an unprivileged uid attaches to its tap one of two ways: QEMU is given
// an fd the daemon opened (Open), Firecracker under the jailer opens the
// tap itself by name, which the kernel allows only to the tap's owner or
// group (SetOwner) or to CAP_NET_ADMIN, which the jailed uid lacks.
//
// Netns, when not empty, is the path of a network namespace (e.g.
// /run/netns/NAME) the tap lives in; the work is done on a locked OS
// thread moved there and back. Empty means the caller's namespace.
package tun

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

const cloneDev = "/dev/net/tun"

// Open attaches to the persistent tap name (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR,
// as QEMU opens it itself) and returns the queue's file for an engine.
func Open(name, netns string) (*os.File, error) {
	var f *os.File
	err := inNetns(netns, func() error {
		fd, err := unix.Open(cloneDev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", cloneDev, err)
		}
		if err := setIff(fd, name, unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "tap:"+name)
		return nil
	})
	return f, err
}

// SetOwner makes uid and gid the owner and group of the persistent tap
// name, so a process running as them may attach to it. uid 0, gid 0 give it
// back to root (as netw creates its taps).
func SetOwner(name, netns string, uid, gid int) error {
	return inNetns(netns, func() error {
		fd, err := unix.Open(cloneDev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", cloneDev, err)
		}
		defer unix.Close(fd)
		if err := setIff(fd, name, unix.IFF_TAP|unix.IFF_NO_PI); err != nil {
			return err
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
			return fmt.Errorf("tap %s: TUNSETOWNER %d: %w", name, uid, err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, gid); err != nil {
			return fmt.Errorf("tap %s: TUNSETGROUP %d: %w", name, gid, err)
		}
		return nil
	})
}

// Owner returns the owner and group of tap name as sysfs reports them (-1:
// none) in the caller's namespace.
func Owner(name string) (uid, gid int, err error) {
	read := func(f string) (int, error) {
		b, err := os.ReadFile("/sys/class/net/" + name + "/" + f)
		if err != nil {
			return 0, err
		}
		var n int
		_, err = fmt.Sscan(string(b), &n)
		return n, err
	}
	if uid, err = read("owner"); err != nil {
		return 0, 0, fmt.Errorf("tap %s owner: %w", name, err)
	}
	if gid, err = read("group"); err != nil {
		return 0, 0, fmt.Errorf("tap %s group: %w", name, err)
	}
	return uid, gid, nil
}

func setIff(fd int, name string, flags uint16) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tap name %q: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("attaching to tap %s: %w", name, err)
	}
	return nil
}

// inNetns runs fn on a locked thread inside netns (the caller's when
// empty). A thread that cannot be moved back is left locked, so the Go
// runtime retires it.
func inNetns(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open(netns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("opening network namespace %s: %w", netns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", netns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}
