package netw

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"banger/internal/api"
	"banger/internal/revert"
)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// tunPath is the TUN/TAP control device (a variable for tests).
var tunPath = "/dev/net/tun"

// setupLocked runs the steps of Setup with m.mu held, undoing what it
// created when a step fails.
func (m *Manager) setupLocked(ctx context.Context) error {
	r := revert.New()
	defer r.Fail()

	br, err := m.ensureBridge(r)
	if err != nil {
		return err
	}
	if err := m.failpoint("bridge"); err != nil {
		return err
	}
	if err := m.ensureGatewayAddr(br, r); err != nil {
		return err
	}
	if err := hardenIPv6(m.cfg.Bridge); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bringing bridge %s up: %w", m.cfg.Bridge, err)
	}
	if err := enableIPForward(r); err != nil {
		return err
	}
	if err := m.failpoint("forward"); err != nil {
		return err
	}
	if err := m.writeTable(r); err != nil {
		return err
	}
	if err := m.failpoint("nft"); err != nil {
		return err
	}
	if err := m.ensurePoolLocked(ctx, r); err != nil {
		return err
	}
	if err := m.failpoint("taps"); err != nil {
		return err
	}
	if err := m.dns.start(m.DNSAddr()); err != nil {
		return err
	}
	r.Add(func() { _ = m.dns.stop(context.Background()) })
	if err := m.failpoint("dns"); err != nil {
		return err
	}
	m.startRefiller()
	m.setUp = true
	r.Success()
	m.log.Info("network ready", "bridge", m.cfg.Bridge, "gateway", m.gateway, "subnet", m.cfg.Subnet,
		"pool", m.cfg.TapPoolSize, "free", len(m.free), "dns", m.DNSAddr())
	return nil
}

// failAt names a Setup step after which Setup fails; tests use it to prove
// that a failed Setup leaves nothing behind.
var failAt string

func (m *Manager) failpoint(step string) error {
	if failAt == step {
		return fmt.Errorf("injected failure after %s", step)
	}
	return nil
}

func checkTun() error {
	if _, err := os.Stat(tunPath); err != nil {
		return api.Unavailable("no %s: %w", tunPath, err).WithFix("modprobe tun")
	}
	return nil
}

// ensureBridge returns the bridge, creating it when missing. An existing link
// of another type is an error, as is a subnet already routed elsewhere.
func (m *Manager) ensureBridge(r *revert.Reverter) (netlink.Link, error) {
	name := m.cfg.Bridge
	link, err := netlink.LinkByName(name)
	switch {
	case err == nil:
		if link.Type() != "bridge" {
			return nil, api.FailedPrecondition("interface %s exists but is a %s, not a bridge", name, link.Type()).
				WithFix(fmt.Sprintf("remove it (ip link del %s) or set bridge_name in the banger config", name))
		}
		if err := m.checkOverlap(link.Attrs().Index); err != nil {
			return nil, err
		}
		return link, nil
	case !isNotFound(err):
		return nil, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if err := m.checkOverlap(0); err != nil {
		return nil, err
	}
	// A fixed MAC: otherwise the bridge takes the lowest MAC of its ports
	// and changes it as taps come and go, staling the guests' ARP caches.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: bridgeMAC(name)}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("creating bridge %s: %w", name, err)
	}
	r.Add(func() { _ = deleteLink(name) })
	link, err = netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up new bridge %s: %w", name, err)
	}
	m.log.Info("bridge created", "bridge", name)
	return link, nil
}

// bridgeMAC derives a stable, locally administered unicast MAC from name.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("banger-bridge:" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

// checkOverlap fails when a route on an interface other than the bridge
// (index brIndex, 0 when it does not exist yet) overlaps the subnet.
func (m *Manager) checkOverlap(brIndex int) error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, rt := range routes {
		if rt.Dst == nil || rt.LinkIndex == brIndex {
			continue
		}
		dst, ok := prefixFromIPNet(rt.Dst)
		if !ok || dst.Bits() == 0 || !dst.Overlaps(m.cfg.Subnet) {
			continue
		}
		ifName := fmt.Sprintf("index %d", rt.LinkIndex)
		if l, err := netlink.LinkByIndex(rt.LinkIndex); err == nil {
			ifName = l.Attrs().Name
		}
		return api.FailedPrecondition("subnet %s overlaps route %s on interface %s", m.cfg.Subnet, dst, ifName).
			WithFix("set subnet in the banger config to a free private range, e.g. subnet = \"10.213.0.0/24\"")
	}
	return nil
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func (m *Manager) ensureGatewayAddr(br netlink.Link, r *revert.Reverter) error {
	want := netip.PrefixFrom(m.gateway, m.cfg.Subnet.Bits())
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", m.cfg.Bridge, err)
	}
	for _, a := range addrs {
		if p, ok := prefixFromIPNet(a.IPNet); ok && p == want {
			return nil
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: m.gateway.AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}}
	if err := netlink.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("adding %s to %s: %w", want, m.cfg.Bridge, err)
	}
	r.Add(func() { _ = netlink.AddrDel(br, addr) })
	return nil
}

// enableIPForward turns on IPv4 forwarding in the current network namespace
// and, on failure of a later step, turns it back off if it was off.
func enableIPForward(r *revert.Reverter) error {
	old, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return fmt.Errorf("reading %s: %w", ipForwardPath, err)
	}
	if strings.TrimSpace(string(old)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enabling ip_forward: %w", err)
	}
	r.Add(func() { _ = os.WriteFile(ipForwardPath, old, 0o644) })
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// deleteLink deletes the named link; a missing link is not an error.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// deleteBridge deletes name only if it is a bridge.
func deleteBridge(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return nil
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("deleting bridge %s: %w", name, err)
	}
	return nil
}
