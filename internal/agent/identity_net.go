package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// setLink renumbers id.Interface through netlink, in the calling thread's
// network namespace: the MAC (changed live, or down/set/up when the driver
// refuses a live change), the new IPv4 address added before every other
// IPv4 address is removed, and the default route through id.Gateway
// replacing any other default route on the link. id must be validated.
func setLink(id Identity) error {
	link, err := netlink.LinkByName(id.Interface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", id.Interface, err)
	}
	mac, _ := net.ParseMAC(id.MAC)
	if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := setMAC(link, mac); err != nil {
			return err
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up: %w", id.Interface, err)
		}
	}
	addr, err := netlink.ParseAddr(id.Address)
	if err != nil {
		return fmt.Errorf("address %s: %w", id.Address, err)
	}
	// The old addresses go first: deleting a subnet's primary address
	// deletes its secondaries, which the new one is when it shares the
	// parent's subnet.
	old, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing %s's addresses: %w", id.Interface, err)
	}
	for _, a := range old {
		if a.IPNet.String() == addr.IPNet.String() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing %s from %s: %w", a.IPNet, id.Interface, err)
		}
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("adding %s to %s: %w", id.Address, id.Interface, err)
	}
	return setDefaultRoute(link, net.ParseIP(id.Gateway).To4())
}

// setMAC changes the hardware address live, or with the link down when the
// driver refuses (EBUSY).
func setMAC(link netlink.Link, mac net.HardwareAddr) error {
	name := link.Attrs().Name
	err := netlink.LinkSetHardwareAddr(link, mac)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("setting %s's MAC to %s: %w", name, mac, err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("setting %s down: %w", name, err)
	}
	if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
		return fmt.Errorf("setting %s's MAC to %s (link down): %w", name, mac, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

// setDefaultRoute makes gw the link's one IPv4 default route (main table).
func setDefaultRoute(link netlink.Link, gw net.IP) error {
	name := link.Attrs().Name
	dflt := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	want := netlink.Route{LinkIndex: link.Attrs().Index, Dst: dflt, Gw: gw, Table: unix.RT_TABLE_MAIN}
	if err := netlink.RouteReplace(&want); err != nil {
		return fmt.Errorf("default route via %s on %s: %w", gw, name, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing %s's routes: %w", name, err)
	}
	for _, r := range routes {
		isDefault := r.Dst == nil || r.Dst.IP.Equal(net.IPv4zero) && r.Dst.Mask.String() == dflt.Mask.String()
		if !isDefault || (r.Gw.Equal(gw) && r.Priority == 0) {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("removing the old default route via %s on %s: %w", r.Gw, name, err)
		}
	}
	return nil
}
