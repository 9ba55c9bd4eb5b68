package netw

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"banger/internal/revert"
)

// The ruleset of banger's own table (inet <Table>), in nft syntax, where br
// is the bridge, gw the gateway and net the subnet:
//
//	chain postrouting { type nat hook postrouting priority srcnat
//	    ip saddr net oifname != br masquerade }
//	chain forward { type filter hook forward priority filter
//	    iifname br oifname br drop          # VM to VM, even routed via the gateway
//	    iifname br accept                   # VM to the world
//	    oifname br ct state established,related accept
//	    oifname br drop }                   # nothing new into the VMs
//	chain input { type filter hook input priority filter
//	    iifname br ct state established,related accept
//	    iifname br meta l4proto { icmp, ipv6-icmp } accept
//	    iifname br ip daddr gw udp/tcp dport <dns port> accept
//	    iifname br drop }                   # no other host service for VMs
//
// Other tables (and iptables) are never touched. A host whose own firewall
// drops forwarded traffic (e.g. iptables FORWARD policy DROP) still drops it:
// an accept here does not override a drop in another table.

// writeTable atomically replaces banger's table with the current ruleset.
func (m *Manager) writeTable(r *revert.Reverter) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	existed, err := tableExists(c, m.cfg.Table)
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyINet}
	// add+delete+add in one batch: an atomic replace that works whether or
	// not the table exists yet.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	m.addRules(c, t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables table inet %s: %w", m.cfg.Table, err)
	}
	if !existed {
		r.Add(func() { _ = deleteTable(m.cfg.Table) })
	}
	return nil
}

func tableExists(c *nftables.Conn, name string) (bool, error) {
	_, err := c.ListTableOfFamily(name, nftables.TableFamilyINet)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return false, fmt.Errorf("listing nftables table inet %s: %w", name, err)
}

// deleteTable deletes banger's table inet name; a missing table is fine.
func deleteTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	ok, err := tableExists(c, name)
	if err != nil || !ok {
		return err
	}
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting nftables table inet %s: %w", name, err)
	}
	return nil
}

// TableExists reports whether banger's table inet name exists in the
// current network namespace (for leak audits and doctor).
func TableExists(name string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening nftables: %w", err)
	}
	return tableExists(c, name)
}

func (m *Manager) addRules(c *nftables.Conn, t *nftables.Table) {
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	br := m.cfg.Bridge
	drop, acc := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	established := ctState(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)

	rule(post, ipv4(), ipSaddrIn(m.cfg.Subnet.Addr().AsSlice(), m.cfg.Subnet.Bits()), ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpNeq), masq())

	rule(fwd, ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq), ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq), drop)
	rule(fwd, ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq), acc)
	rule(fwd, ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq), established, acc)
	rule(fwd, ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq), drop)

	iif := ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq)
	rule(in, iif, established, acc)
	rule(in, iif, l4proto(unix.IPPROTO_ICMP), acc)
	rule(in, iif, l4proto(unix.IPPROTO_ICMPV6), acc)
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rule(in, iif, ipv4(), ipDaddr(m.gateway.AsSlice()), l4proto(proto), dport(uint16(m.cfg.DNSPort)), acc)
	}
	rule(in, iif, drop)
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
