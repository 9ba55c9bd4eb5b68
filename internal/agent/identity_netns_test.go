package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNewNamespace runs fn on a thread of its own in fresh namespaces (flags:
// CLONE_NEWNET, CLONE_NEWNS); the thread is never unlocked, so it dies with
// its namespaces when fn returns and the host's are never touched.
func inNewNamespace(t *testing.T, flags int, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to unshare namespaces: run the test as root")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(flags); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// linkState is an interface's MAC, IPv4 addresses and default gateways.
func linkState(name string) (string, []string, []string, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return "", nil, nil, err
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return "", nil, nil, err
	}
	var as, gws []string
	for _, a := range addrs {
		as = append(as, a.IPNet.String())
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return "", nil, nil, err
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			gws = append(gws, r.Gw.String())
		}
	}
	slices.Sort(as)
	return link.Attrs().HardwareAddr.String(), as, gws, nil
}

// TestIntegrationSetLinkNetns renumbers a veth eth0 in a network namespace
// set up as a parent guest leaves it: its MAC, a primary address in the
// subnet the new one shares (deleting it first keeps the new one, which
// would be its secondary), another address, a default route.
func TestIntegrationSetLinkNetns(t *testing.T) {
	inNewNamespace(t, unix.CLONE_NEWNET, func() error {
		mac, _ := net.ParseMAC("52:54:00:aa:bb:01")
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", HardwareAddr: mac}, PeerName: "peer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("adding veth eth0: %w", err)
		}
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		for _, a := range []string{"10.77.0.2/24", "192.168.5.5/24"} {
			addr, _ := netlink.ParseAddr(a)
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("adding %s: %w", a, err)
			}
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("10.77.0.1")}); err != nil {
			return fmt.Errorf("parent default route: %w", err)
		}
		for _, step := range []struct{ mac, addr, gw string }{
			{"52:54:00:aa:bb:02", "10.77.0.9/24", "10.77.0.254"}, // same subnet, new gateway
			{"52:54:00:aa:bb:03", "10.88.3.5/16", "10.88.0.1"},   // another subnet
			{"52:54:00:aa:bb:03", "10.88.3.5/16", "10.88.0.1"},   // again: nothing to change
		} {
			id := testIdentity()
			id.MAC, id.Address, id.Gateway = step.mac, step.addr, step.gw
			if err := setLink(id); err != nil {
				return fmt.Errorf("setLink %s: %w", step.addr, err)
			}
			gotMAC, addrs, gws, err := linkState("eth0")
			if err != nil {
				return err
			}
			if gotMAC != step.mac || !slices.Equal(addrs, []string{step.addr}) || !slices.Equal(gws, []string{step.gw}) {
				return fmt.Errorf("after setLink %s: mac %s, addresses %v, default via %v; want %s, [%s], [%s]",
					step.addr, gotMAC, addrs, gws, step.mac, step.addr, step.gw)
			}
			l, _ := netlink.LinkByName("eth0")
			if l.Attrs().Flags&net.FlagUp == 0 {
				return fmt.Errorf("eth0 is down after setLink")
			}
		}
		id := testIdentity()
		id.Interface = "eth9"
		if err := setLink(id); err == nil || !strings.Contains(err.Error(), "interface eth9") {
			return fmt.Errorf("setLink on a missing interface: %v", err)
		}
		return nil
	})
}

// TestIntegrationMachineIDBindMount: systemd bind-mounts /run/machine-id
// on an empty read-only /etc/machine-id; the step writes through the mount
// (a rename over a mount point fails with EBUSY).
func TestIntegrationMachineIDBindMount(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "run"), 0o755)
	etc, run := filepath.Join(root, "etc/machine-id"), filepath.Join(root, "run/machine-id")
	os.WriteFile(etc, nil, 0o444)
	os.WriteFile(run, []byte("ffffffffffffffffffffffffffffffff\n"), 0o444)
	id := testIdentity()
	inNewNamespace(t, unix.CLONE_NEWNS, func() error {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("making mounts private: %w", err)
		}
		if err := unix.Mount(run, etc, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		e := (&fakeGuestEnv{}).env(root)
		if err := e.machineID(context.Background(), id); err != nil {
			return err
		}
		if b, _ := os.ReadFile(etc); string(b) != id.MachineID+"\n" {
			return fmt.Errorf("through the mount: %q", b)
		}
		return nil
	})
	if b, _ := os.ReadFile(run); string(b) != id.MachineID+"\n" {
		t.Errorf("/run/machine-id (the mount's source) = %q, want the new id", b)
	}
}
