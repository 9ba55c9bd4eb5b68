package hostcap

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	devMapperControl = "/dev/mapper/control"
	devVhostVsock    = "/dev/vhost-vsock"
	devLoopControl   = "/dev/loop-control"
	devTun           = "/dev/net/tun"
	procDevices      = "/proc/devices"
	procMisc         = "/proc/misc"
	procIPForward    = "/proc/sys/net/ipv4/ip_forward"
)

// moduleAvailable reports whether a kernel module is loaded, built in, or
// installed for the running kernel (and so loads on demand).
func moduleAvailable(name string) (bool, string) {
	if _, err := os.Stat(filepath.Join("/sys/module", name)); err == nil {
		return true, "loaded"
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false, ""
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	dashed := strings.ReplaceAll(name, "_", "-")
	for _, f := range []string{"modules.builtin", "modules.dep"} {
		if fileHasModule(filepath.Join(dir, f), name, dashed) {
			if f == "modules.builtin" {
				return true, "built in"
			}
			return true, "loadable"
		}
	}
	return false, ""
}

func fileHasModule(path, name, dashed string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), ":")
		base := filepath.Base(line)
		base, _, _ = strings.Cut(base, ".ko")
		if base == name || base == dashed {
			return true
		}
	}
	return false
}

// procDevicesHas reports whether /proc/devices lists a driver.
func procDevicesHas(driver string) bool {
	b, err := os.ReadFile(procDevices)
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[1] == driver {
			return true
		}
	}
	return false
}

const dmFix = "modprobe dm_snapshot (and install dmsetup: apt-get install dmsetup)"

// kernelHasDM reports whether the running kernel has the device-mapper
// driver (a misc device, and a block major once loaded).
func kernelHasDM() bool {
	if b, err := os.ReadFile(procMisc); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[1] == "device-mapper" {
				return true
			}
		}
	}
	return procDevicesHas("device-mapper")
}

// probeDeviceMapper never runs dmsetup unless the driver answers: dmsetup
// creates /dev/mapper/control when it is missing, a side effect the probe
// must not have.
func probeDeviceMapper(ctx context.Context) Cap {
	_, statErr := os.Stat(devMapperControl)
	if !kernelHasDM() {
		d := "device-mapper missing (" + devMapperControl + " does not exist)"
		if statErr == nil {
			d = "device-mapper missing (the kernel has no device-mapper driver; " + devMapperControl + " is a stale node)"
		}
		return Cap{Detail: d, Fix: dmFix}
	}
	if err := openRW(devMapperControl); err != nil {
		return Cap{Detail: fmt.Sprintf("device-mapper in the kernel but %s: %v", devMapperControl, err), Fix: dmFix}
	}
	dmsetup, err := lookTool("dmsetup")
	if err != nil {
		return Cap{Detail: "device-mapper present but dmsetup not found", Fix: "apt-get install dmsetup"}
	}
	out, err := runCmd(ctx, dmsetup, "targets")
	if err != nil {
		return Cap{Detail: fmt.Sprintf("device-mapper present but %v", err), Fix: dmFix}
	}
	if hasDMTarget(out, "snapshot") {
		return Cap{OK: true, Detail: "device-mapper with the snapshot target"}
	}
	if ok, how := moduleAvailable("dm_snapshot"); ok {
		return Cap{OK: true, Detail: "device-mapper present; dm_snapshot " + how}
	}
	return Cap{Detail: "device-mapper present but the snapshot target is not available", Fix: dmFix}
}

// hasDMTarget reads `dmsetup targets` output ("snapshot  v1.16.0").
func hasDMTarget(out, target string) bool {
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == target {
			return true
		}
	}
	return false
}

func probeVhostVsock() Cap {
	if _, err := os.Stat(devVhostVsock); err != nil {
		return Cap{
			Detail: devVhostVsock + " missing: QEMU guests reach the agent over virtio-serial instead",
			Fix:    "modprobe vhost_vsock",
		}
	}
	return Cap{OK: true, Detail: devVhostVsock + " present"}
}

// openRW opens a device read-write and closes it; opening the TUN clone
// device or loop-control creates nothing.
func openRW(path string) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func probeLoop(ctx context.Context) Cap {
	if err := openRW(devLoopControl); err != nil {
		return Cap{Detail: fmt.Sprintf("%s: %v", devLoopControl, err), Fix: "modprobe loop (and run bangerd as root)"}
	}
	losetup, err := lookTool("losetup")
	if err != nil {
		return Cap{Detail: "loop devices present but losetup not found", Fix: "apt-get install mount"}
	}
	if _, err := runCmd(ctx, losetup, "--list"); err != nil {
		return Cap{Detail: fmt.Sprintf("loop devices present but %v", err), Fix: "modprobe loop (and run bangerd as root)"}
	}
	return Cap{OK: true, Detail: devLoopControl + " and losetup work"}
}

func probeTun() Cap {
	if err := openRW(devTun); err != nil {
		return Cap{Detail: fmt.Sprintf("%s: %v", devTun, err), Fix: "modprobe tun (and run bangerd as root)"}
	}
	return Cap{OK: true, Detail: devTun + " opens"}
}

func probeBridge() Cap {
	if ok, how := moduleAvailable("bridge"); ok {
		return Cap{OK: true, Detail: "bridge module " + how}
	}
	// Some kernels have no module tree at all; an existing bridge proves support.
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join("/sys/class/net", e.Name(), "bridge")); err == nil {
				return Cap{OK: true, Detail: "bridging works (bridge " + e.Name() + " exists)"}
			}
		}
	}
	return Cap{Detail: "no bridge support found (/sys/module/bridge missing)", Fix: "modprobe bridge"}
}

func probeNftables(ctx context.Context) Cap {
	nft, err := lookTool("nft")
	if err != nil {
		return Cap{Detail: "nft not found", Fix: "apt-get install nftables"}
	}
	out, err := runCmd(ctx, nft, "--version")
	if err != nil {
		return Cap{Detail: err.Error(), Fix: "apt-get install nftables"}
	}
	ver := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	if _, err := runCmd(ctx, nft, "list", "tables"); err != nil {
		return Cap{
			Detail: fmt.Sprintf("%s installed but listing tables failed: %v", ver, err),
			Fix:    "run bangerd as root on a kernel with nf_tables (modprobe nf_tables)",
		}
	}
	return Cap{OK: true, Detail: ver + "; netlink works"}
}

func probeIPForward() Cap {
	b, err := os.ReadFile(procIPForward)
	if err != nil {
		return Cap{Detail: fmt.Sprintf("reading %s: %v", procIPForward, err)}
	}
	if strings.TrimSpace(string(b)) == "1" {
		return Cap{OK: true, Detail: "net.ipv4.ip_forward = 1"}
	}
	return Cap{
		Detail: "net.ipv4.ip_forward = 0: bangerd enables it when the daemon starts (needed for its bridge's NAT)",
		Fix:    "nothing to do for banger; to make it permanent: echo net.ipv4.ip_forward=1 > /etc/sysctl.d/99-banger.conf",
	}
}
