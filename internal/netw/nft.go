package netw

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/revert"
)

// banger's own tables, both named Config.Table, in nft syntax, where br is
// the bridge, gw the gateway and net the subnet (per-guest parts in
// guest.go):
//
//	table inet banger {
//	  map guests { type ipv4_addr : verdict }   # guest ip -> jump guest-<tap>
//	  chain postrouting { type nat hook postrouting priority srcnat
//	      ip saddr net oifname != br masquerade }
//	  chain forward { type filter hook forward priority filter
//	      iifname br oifname br drop          # VM to VM, even routed via the gateway
//	      iifname br ip saddr vmap @guests    # the guest's egress policy
//	      iifname br drop                     # unbound sources, IPv6
//	      oifname br ct state established,related accept
//	      oifname br drop }                   # nothing new into the VMs
//	  chain input { type filter hook input priority filter
//	      iifname br ct state established,related accept
//	      iifname br meta l4proto icmp accept
//	      iifname br ip daddr gw udp/tcp dport <dns port> accept
//	      iifname br drop }                   # no other host service for VMs
//	}
//	table bridge banger {                     # anti-spoofing, before anything else
//	  map ports { type ifname : verdict }     # tap -> jump port-<tap>
//	  chain prerouting { type filter hook prerouting priority filter
//	      iifname vmap @ports
//	      iifname { "tap-pool-*", "banger-tap-*" } drop }  # unbound taps
//	}
//
// Other tables (and iptables) are never touched. A host whose own firewall
// drops forwarded traffic (e.g. iptables FORWARD policy DROP) still drops it:
// an accept here does not override a drop in another table. Every change is
// one netlink batch: it applies whole or not at all.

// Names inside banger's tables.
const (
	guestsMap = "guests"
	portsMap  = "ports"
)

func (m *Manager) inetTable() *nftables.Table {
	return &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyINet}
}

func (m *Manager) bridgeTable() *nftables.Table {
	return &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyBridge}
}

// writeTable atomically replaces banger's tables with the current ruleset,
// bound guests included.
func (m *Manager) writeTable(r *revert.Reverter) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	existed, err := TableExists(m.cfg.Table)
	if err != nil {
		return err
	}
	attached, err := attachedSubnets(m.cfg.Bridge)
	if err != nil {
		return err
	}
	m.gmu.Lock()
	defer m.gmu.Unlock()
	m.attached = attached
	ti, tb := m.inetTable(), m.bridgeTable()
	// add+delete+add in one batch: an atomic replace that works whether or
	// not the tables exist yet.
	for _, t := range []*nftables.Table{ti, tb} {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}
	if err := m.addRules(c, ti); err != nil {
		return err
	}
	if err := m.addBridgeRules(c, tb); err != nil {
		return err
	}
	for _, g := range m.guests {
		if err := m.addGuestLocked(c, g, true); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables tables %s: %w", m.cfg.Table, err)
	}
	if !existed {
		r.Add(func() { _ = deleteTable(m.cfg.Table) })
	}
	return nil
}

func tableExists(c *nftables.Conn, name string, fam nftables.TableFamily) (bool, error) {
	_, err := c.ListTableOfFamily(name, fam)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return false, fmt.Errorf("listing nftables table %s: %w", name, err)
}

var tableFamilies = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge}

// deleteTable deletes banger's tables (inet and bridge) named name; missing
// ones are fine.
func deleteTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	any := false
	for _, fam := range tableFamilies {
		ok, err := tableExists(c, name, fam)
		if err != nil {
			return err
		}
		if ok {
			c.DelTable(&nftables.Table{Name: name, Family: fam})
			any = true
		}
	}
	if !any {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting nftables tables %s: %w", name, err)
	}
	return nil
}

// TableExists reports whether one of banger's tables (inet or bridge) named
// name exists in the current network namespace (for leak audits and doctor).
func TableExists(name string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening nftables: %w", err)
	}
	for _, fam := range tableFamilies {
		if ok, err := tableExists(c, name, fam); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

func addRule(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, exprs ...[]expr.Any) {
	var all []expr.Any
	for _, e := range exprs {
		all = append(all, e...)
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
}

func (m *Manager) addRules(c *nftables.Conn, t *nftables.Table) error {
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	guests := &nftables.Set{Table: t, Name: guestsMap, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
	if err := c.AddSet(guests, nil); err != nil {
		return fmt.Errorf("adding map %s: %w", guestsMap, err)
	}
	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) { addRule(c, t, ch, exprs...) }
	br := m.cfg.Bridge
	drop, acc := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	established := ctState(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)

	rule(post, ipv4(), ipSaddrIn(m.cfg.Subnet.Addr().AsSlice(), m.cfg.Subnet.Bits()), ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpNeq), masq())

	iif := ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq)
	rule(fwd, iif, ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq), drop)
	rule(fwd, iif, ipv4(), ipSaddrVmap(guests))
	rule(fwd, iif, drop)
	rule(fwd, ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq), established, acc)
	rule(fwd, ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq), drop)

	rule(in, iif, established, acc)
	rule(in, iif, ipv4(), l4proto(unix.IPPROTO_ICMP), acc)
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rule(in, iif, ipv4(), ipDaddr(m.gateway.AsSlice()), l4proto(proto), dport(uint16(m.cfg.DNSPort)), acc)
	}
	rule(in, iif, drop)
	return nil
}

// addBridgeRules adds the bridge table's base: frames entering banger's
// bridge from a port go to that port's chain (guest.go) or are dropped.
func (m *Manager) addBridgeRules(c *nftables.Conn, t *nftables.Table) error {
	accept := nftables.ChainPolicyAccept
	ports := &nftables.Set{Table: t, Name: portsMap, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
	if err := c.AddSet(ports, nil); err != nil {
		return fmt.Errorf("adding map %s: %w", portsMap, err)
	}
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	addRule(c, t, pre, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID, DestRegister: 0, IsDestRegSet: true},
	})
	// Unbound banger taps (matched by name prefix: `meta ibrname` needs
	// nft_meta_bridge, which not every kernel has).
	for _, prefix := range []string{poolPrefix, extraPrefix} {
		addRule(c, t, pre, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)},
		}, verdict(expr.VerdictDrop))
	}
	return nil
}

func ipSaddrVmap(s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, DestRegister: 0, IsDestRegSet: true},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func masq() []expr.Any { return []expr.Any{&expr.Masq{}} }

func ifname(key expr.MetaKey, name string, op expr.CmpOp) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

func ipv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func ipSaddrIn(network []byte, bits int) []expr.Any {
	mask := net.CIDRMask(bits, 32)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network},
	}
}

func ipDaddrIn(network []byte, bits int) []expr.Any {
	e := ipSaddrIn(network, bits)
	e[0].(*expr.Payload).Offset = 16
	return e
}

// attachedSubnets lists the IPv4 subnets of the host's interfaces other
// than bridge (the host's LAN, VPNs, other bridges).
func attachedSubnets(bridge string) ([]netip.Prefix, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing host addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil && l.Attrs().Name == bridge {
			continue
		}
		p, ok := prefixFromIPNet(a.IPNet)
		if !ok || p.Addr().IsLoopback() {
			continue
		}
		if p = p.Masked(); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func ipDaddr(ip []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip},
	}
}

func dport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}
