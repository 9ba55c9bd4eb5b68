package netw

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// Guest is what netw needs to know about a running VM to police its tap:
// the only source MAC and IPv4 address its tap accepts, and its egress
// policy.
type Guest struct {
	Name   string
	Tap    string
	IP     netip.Addr
	MAC    net.HardwareAddr
	Policy api.NetPolicy
}

type guestState struct {
	Guest
	pol policy
}

// Per-guest objects, named after the tap (unique among running VMs):
// guest-<tap> (inet chain: the egress policy), dom-<tap> (inet set: the
// addresses allowed names resolved to, with timeouts), denied-<tap> (inet
// named counter), port-<tap> (bridge chain: anti-spoofing).
func guestChain(tap string) string { return "guest-" + tap }
func domSet(tap string) string     { return "dom-" + tap }
func deniedCounter(tap string) string {
	return "denied-" + tap
}
func portChain(tap string) string { return "port-" + tap }

// Learned addresses live at least minLearnedTTL (a TTL of 0 would make an
// answer useless) and at most maxLearnedTTL.
const (
	minLearnedTTL = 30 * time.Second
	maxLearnedTTL = time.Hour
)

// BindGuest makes g's tap accept only g's MAC and IP as source, applies its
// egress policy and pins the host's neighbour entry for g.IP to g.MAC. A
// guest already bound under the same name is replaced. Until a tap is
// bound, everything it sends is dropped. On failure nothing changes.
func (m *Manager) BindGuest(g Guest) error {
	pol, err := compilePolicy(g.Policy)
	if err != nil {
		return err
	}
	if !g.IP.Is4() || !m.cfg.Subnet.Contains(g.IP) || len(g.MAC) != 6 || !isBangerPort(g.Tap) {
		return api.Invalid("guest %s: ip %s / mac %s / tap %q not valid for subnet %s", g.Name, g.IP, g.MAC, g.Tap, m.cfg.Subnet)
	}
	m.gmu.Lock()
	defer m.gmu.Unlock()
	if old, ok := m.guests[g.Name]; ok {
		if err := m.unbindLocked(old); err != nil {
			return err
		}
	}
	for _, o := range m.guests {
		if o.Tap == g.Tap || o.IP == g.IP {
			return api.FailedPrecondition("guest %s: tap %s or ip %s is bound to %s", g.Name, g.Tap, g.IP, o.Name)
		}
	}
	st := &guestState{Guest: g, pol: pol}
	st.Policy, _ = NormalizePolicy(g.Policy)
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	if err := m.addGuestLocked(c, st, true); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("binding guest %s in nftables: %w", g.Name, err)
	}
	if err := m.pinNeighbour(st, true); err != nil {
		_ = m.delGuestRules(st)
		return err
	}
	m.guests[g.Name] = st
	m.log.Debug("guest bound", "vm", g.Name, "tap", g.Tap, "ip", g.IP, "policy", st.Policy.Mode)
	return nil
}

// UnbindGuest removes what BindGuest set up for the VM name; an unknown
// name is a no-op.
func (m *Manager) UnbindGuest(name string) error {
	m.gmu.Lock()
	defer m.gmu.Unlock()
	g, ok := m.guests[name]
	if !ok {
		return nil
	}
	return m.unbindLocked(g)
}

func (m *Manager) unbindLocked(g *guestState) error {
	if err := m.delGuestRules(g); err != nil {
		return err
	}
	delete(m.guests, g.Name)
	return m.pinNeighbour(g, false)
}

// SetGuestPolicy replaces a bound guest's egress policy in one batch; on
// error (a bad policy included) the old one stays.
func (m *Manager) SetGuestPolicy(name string, p api.NetPolicy) error {
	pol, err := compilePolicy(p)
	if err != nil {
		return err
	}
	norm, _ := NormalizePolicy(p)
	m.gmu.Lock()
	defer m.gmu.Unlock()
	g, ok := m.guests[name]
	if !ok {
		return api.NotFound("vm %s has no network bound (not running)", name)
	}
	next := *g
	next.pol, next.Policy = pol, norm
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	ti := m.inetTable()
	gc := &nftables.Chain{Name: guestChain(g.Tap), Table: ti}
	c.FlushChain(gc)
	c.FlushSet(&nftables.Set{Table: ti, Name: domSet(g.Tap)})
	m.policyRules(c, ti, gc, &next)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("applying policy of %s: %w", name, err)
	}
	m.guests[name] = &next
	return nil
}

// GuestStatus returns a bound guest's policy and denied-packet count.
func (m *Manager) GuestStatus(name string) (api.NetStatus, error) {
	m.gmu.Lock()
	g, ok := m.guests[name]
	m.gmu.Unlock()
	if !ok {
		return api.NetStatus{}, api.NotFound("vm %s has no network bound (not running)", name)
	}
	n, err := m.denied(g.Tap)
	return api.NetStatus{Policy: g.Policy, Denied: n, Applied: true}, err
}

// GuestDenied returns how many packets the VM's policy dropped.
func (m *Manager) GuestDenied(name string) (uint64, error) {
	st, err := m.GuestStatus(name)
	return st.Denied, err
}

func (m *Manager) denied(tap string) (uint64, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, fmt.Errorf("opening nftables: %w", err)
	}
	o, err := c.GetObject(&nftables.CounterObj{Table: m.inetTable(), Name: deniedCounter(tap)})
	if err != nil {
		return 0, fmt.Errorf("reading counter %s: %w", deniedCounter(tap), err)
	}
	if co, ok := o.(*nftables.CounterObj); ok {
		return co.Packets, nil
	}
	if no, ok := o.(*nftables.NamedObj); ok {
		if ce, ok := no.Obj.(*expr.Counter); ok {
			return ce.Packets, nil
		}
	}
	return 0, fmt.Errorf("counter %s: unexpected object %T", deniedCounter(tap), o)
}

// addGuestLocked queues g's chains, set, counter and map elements on c.
func (m *Manager) addGuestLocked(c *nftables.Conn, g *guestState, fresh bool) error {
	ti, tb := m.inetTable(), m.bridgeTable()
	if fresh {
		c.AddObj(&nftables.CounterObj{Table: ti, Name: deniedCounter(g.Tap)})
		dom := &nftables.Set{Table: ti, Name: domSet(g.Tap), KeyType: nftables.TypeIPAddr, HasTimeout: true}
		if err := c.AddSet(dom, nil); err != nil {
			return fmt.Errorf("adding set %s: %w", dom.Name, err)
		}
	}
	gc := c.AddChain(&nftables.Chain{Name: guestChain(g.Tap), Table: ti})
	c.FlushChain(gc)
	m.policyRules(c, ti, gc, g)
	guests := &nftables.Set{Table: ti, Name: guestsMap, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
	if err := c.SetAddElements(guests, []nftables.SetElement{{Key: g.IP.AsSlice(),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: gc.Name}}}); err != nil {
		return fmt.Errorf("adding %s to map %s: %w", g.IP, guestsMap, err)
	}
	pc := c.AddChain(&nftables.Chain{Name: portChain(g.Tap), Table: tb})
	c.FlushChain(pc)
	portRules(c, tb, pc, g)
	ports := &nftables.Set{Table: tb, Name: portsMap, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
	if err := c.SetAddElements(ports, []nftables.SetElement{{Key: ifnameBytes(g.Tap),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: pc.Name}}}); err != nil {
		return fmt.Errorf("adding %s to map %s: %w", g.Tap, portsMap, err)
	}
	return nil
}

// delGuestRules removes g's nftables objects in one batch.
func (m *Manager) delGuestRules(g *guestState) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	ti, tb := m.inetTable(), m.bridgeTable()
	guests := &nftables.Set{Table: ti, Name: guestsMap, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
	ports := &nftables.Set{Table: tb, Name: portsMap, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
	if err := c.SetDeleteElements(guests, []nftables.SetElement{{Key: g.IP.AsSlice()}}); err != nil {
		return err
	}
	if err := c.SetDeleteElements(ports, []nftables.SetElement{{Key: ifnameBytes(g.Tap)}}); err != nil {
		return err
	}
	for _, ch := range []*nftables.Chain{{Name: guestChain(g.Tap), Table: ti}, {Name: portChain(g.Tap), Table: tb}} {
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	c.DelSet(&nftables.Set{Table: ti, Name: domSet(g.Tap)})
	c.DeleteObject(&nftables.CounterObj{Table: ti, Name: deniedCounter(g.Tap)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("unbinding guest %s in nftables: %w", g.Name, err)
	}
	return nil
}

// policyRules queues the rules of g's policy chain (see policy.go).
func (m *Manager) policyRules(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, g *guestState) {
	rule := func(exprs ...[]expr.Any) { addRule(c, t, ch, exprs...) }
	acc := verdict(expr.VerdictAccept)
	deny := []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: deniedCounter(g.Tap)}, &expr.Verdict{Kind: expr.VerdictDrop}}
	allowEntry := func(e cidrEntry, v []expr.Any) {
		dst := ipDaddrIn(e.prefix.Addr().AsSlice(), e.prefix.Bits())
		if e.port == 0 {
			rule(dst, v)
			return
		}
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			rule(dst, l4proto(proto), dport(e.port), v)
		}
	}
	switch g.pol.mode {
	case api.NetNone:
	case api.NetAllow:
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			rule(l4proto(proto), dport(dotPort), deny)
		}
		for _, e := range m.globalAllow {
			allowEntry(e, acc)
		}
		for _, e := range g.pol.cidrs {
			allowEntry(e, acc)
		}
		if len(g.pol.domains) > 0 {
			rule([]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: domSet(g.Tap)},
			}, acc)
		}
	default: // internet
		for _, e := range m.globalAllow {
			allowEntry(e, acc)
		}
		for _, p := range append(append([]netip.Prefix{}, privateRanges...), m.attached...) {
			rule(ipDaddrIn(p.Addr().AsSlice(), p.Bits()), deny)
		}
		rule(acc)
	}
	rule(deny)
}

// portRules queues the anti-spoofing rules of g's bridge port: frames must
// come from g's MAC and carry IPv4 from g's IP or ARP for g's MAC and IP.
// Everything else (IPv6 with its RAs, other ethertypes, VLAN tags) drops.
func portRules(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, g *guestState) {
	rule := func(exprs ...[]expr.Any) { addRule(c, t, ch, exprs...) }
	drop, acc := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	rule(payloadCmp(expr.PayloadBaseLLHeader, 6, g.MAC, expr.CmpOpNeq), drop)
	rule(payloadCmp(expr.PayloadBaseLLHeader, 12, []byte{0x08, 0x00}, expr.CmpOpEq),
		payloadCmp(expr.PayloadBaseNetworkHeader, 12, g.IP.AsSlice(), expr.CmpOpEq), acc)
	rule(payloadCmp(expr.PayloadBaseLLHeader, 12, []byte{0x08, 0x06}, expr.CmpOpEq),
		payloadCmp(expr.PayloadBaseNetworkHeader, 0, []byte{0, 1, 8, 0, 6, 4}, expr.CmpOpEq),
		payloadCmp(expr.PayloadBaseNetworkHeader, 8, g.MAC, expr.CmpOpEq),
		payloadCmp(expr.PayloadBaseNetworkHeader, 14, g.IP.AsSlice(), expr.CmpOpEq), acc)
	rule(drop)
}

func payloadCmp(base expr.PayloadBase, off uint32, data []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: op, Register: 1, Data: append([]byte{}, data...)},
	}
}

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// pinNeighbour sets (or, with set false, removes) the host's permanent
// neighbour entry g.IP -> g.MAC on the bridge, so no ARP can move it.
func (m *Manager) pinNeighbour(g *guestState, set bool) error {
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("looking up bridge %s: %w", m.cfg.Bridge, err)
	}
	n := &netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: g.IP.AsSlice(), HardwareAddr: g.MAC}
	if set {
		if err := netlink.NeighSet(n); err != nil {
			return fmt.Errorf("pinning neighbour %s of %s: %w", g.IP, g.Name, err)
		}
		return nil
	}
	if err := netlink.NeighDel(n); err != nil && !isNoEntry(err) {
		return fmt.Errorf("removing neighbour %s of %s: %w", g.IP, g.Name, err)
	}
	return nil
}

func isNoEntry(err error) bool {
	return err != nil && (err == unix.ENOENT || err.Error() == unix.ENOENT.Error())
}

// isBangerPort accepts banger tap names and, for the namespace tests, any
// valid interface name.
func isBangerPort(name string) bool { return ifNameRE.MatchString(name) }

// guestByIP returns the bound guest with address ip.
func (m *Manager) guestByIP(ip netip.Addr) (*guestState, bool) {
	m.gmu.Lock()
	defer m.gmu.Unlock()
	for _, g := range m.guests {
		if g.IP == ip {
			return g, true
		}
	}
	return nil, false
}

// dnsAllowed says whether a query for qname from src may be forwarded
// upstream: not in mode none, only allowed names in mode allow (so DNS
// cannot tunnel data out past the policy).
func (m *Manager) dnsAllowed(src netip.Addr, qname string) bool {
	g, ok := m.guestByIP(src)
	if !ok {
		return true
	}
	switch g.pol.mode {
	case api.NetNone:
		return false
	case api.NetAllow:
		return g.pol.allowsName(qname)
	}
	return true
}

// dnsLearn adds the A records of resp (the answer to src's query for an
// allowed name) to src's set, each for its TTL, before the guest sees the
// answer.
func (m *Manager) dnsLearn(src netip.Addr, qname string, resp *dns.Msg) {
	g, ok := m.guestByIP(src)
	if !ok || g.pol.mode != api.NetAllow || !g.pol.allowsName(qname) {
		return
	}
	var elems []nftables.SetElement
	for _, rr := range resp.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		ttl := min(max(time.Duration(a.Hdr.Ttl)*time.Second, minLearnedTTL), maxLearnedTTL)
		elems = append(elems, nftables.SetElement{Key: a.A.To4(), Timeout: ttl})
	}
	if len(elems) == 0 {
		return
	}
	c, err := nftables.New()
	if err == nil {
		err = c.SetAddElements(&nftables.Set{Table: m.inetTable(), Name: domSet(g.Tap), KeyType: nftables.TypeIPAddr, HasTimeout: true}, elems)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		m.log.Warn("recording allowed addresses", "vm", g.Name, "name", qname, "err", err)
	}
}

// BindVM is BindGuest for callers holding a VM's record fields: mac in
// text form.
func (m *Manager) BindVM(name, tap string, ip netip.Addr, mac string, p api.NetPolicy) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return api.Invalid("vm %s has a bad mac %q: %v", name, mac, err)
	}
	return m.BindGuest(Guest{Name: name, Tap: tap, IP: ip, MAC: hw, Policy: p})
}
