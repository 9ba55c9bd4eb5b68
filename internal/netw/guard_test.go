package netw

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// The attack tests: the topology of prepTraffic plus a "LAN" namespace
// <ns>-l on 192.168.77.0/24 attached to the host, a metadata address
// (169.254.169.254) and a second internet address served by <ns>-u, and
// fixed guest MACs.
const (
	lanHost      = "192.168.77.2"
	metadataIP   = "169.254.169.254"
	internetIP2  = "203.0.113.20" // example.com in the fake upstream
	guestAMAC    = "02:00:00:00:00:0a"
	guestBMAC    = "02:00:00:00:00:0b"
	spoofedIP    = "10.203.0.99"
	spoofedMAC   = "02:00:00:00:00:99"
	raRouterAddr = "fe80::99"
)

func prepGuard(tb testing.TB, ns string) []string {
	prepTraffic(tb, ns)
	ga, gb, up, lan := ns+"-a", ns+"-b", ns+"-u", ns+"-l"
	run(tb, "ip", "-n", ga, "link", "set", "eth0", "address", guestAMAC)
	run(tb, "ip", "-n", gb, "link", "set", "eth0", "address", guestBMAC)
	addNetns(tb, lan)
	run(tb, "ip", "-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", lan)
	run(tb, "ip", "-n", ns, "addr", "add", "192.168.77.1/24", "dev", "lan0")
	run(tb, "ip", "-n", ns, "link", "set", "lan0", "up")
	run(tb, "ip", "-n", lan, "addr", "add", lanHost+"/24", "dev", "eth0")
	run(tb, "ip", "-n", lan, "link", "set", "eth0", "up")
	run(tb, "ip", "-n", lan, "route", "add", "default", "via", "192.168.77.1")
	for _, a := range []string{metadataIP, internetIP2} {
		run(tb, "ip", "-n", up, "addr", "add", a+"/32", "dev", "lo")
	}
	run(tb, "ip", "-n", ns, "route", "add", metadataIP+"/32", "via", uplinkPeer)
	// the guest's link-local address for the RA, without waiting for DAD
	run(tb, "ip", "-n", ga, "addr", "add", raRouterAddr+"/64", "dev", "eth0", "nodad")
	return nil
}

// guardEnv is a set-up Manager with guests A and B plugged in and bound
// (A with policy pa), and servers on every target.
type guardEnv struct {
	m              *Manager
	ns, ga, gb, up string
}

func setupGuard(t *testing.T, pa api.NetPolicy) *guardEnv {
	t.Helper()
	ns := os.Getenv(envNetns)
	e := &guardEnv{ns: ns, ga: ns + "-a", gb: ns + "-b", up: ns + "-u"}
	e.m = newTestManager(t, Config{TapPoolSize: 1, DNSUpstreams: []string{internetIP}})
	if err := e.m.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	br, err := netlink.LinkByName(e.m.Bridge())
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{portA, portB} {
		link, err := netlink.LinkByName(port)
		if err != nil {
			t.Fatal(err)
		}
		if err := attachPort(link, br); err != nil {
			t.Fatal(err)
		}
	}
	bind := func(name, port, ip, mac string, p api.NetPolicy) {
		hw, _ := net.ParseMAC(mac)
		if err := e.m.BindGuest(Guest{Name: name, Tap: port, IP: netip.MustParseAddr(ip), MAC: hw, Policy: p}); err != nil {
			t.Fatalf("BindGuest %s: %v", name, err)
		}
		e.m.SetHost(name, netip.MustParseAddr(ip))
	}
	bind("a", portA, guestA, guestAMAC, pa)
	bind("b", portB, guestB, guestBMAC, api.NetPolicy{})

	who := func(c net.Conn) string { return "ok" }
	inNS(t, e.up, func() {
		startFakeUpstreamNames(t, internetIP+":53", map[string]string{"example.com.": internetIP2, "other.com.": internetIP})
		for _, a := range []string{internetIP + ":8080", internetIP + ":8081", internetIP + ":853", internetIP2 + ":8080",
			metadataIP + ":80", uplinkPeer + ":8080"} {
			serveTCP(t, listen(t, a), who)
		}
	})
	inNS(t, e.ns+"-l", func() { serveTCP(t, listen(t, lanHost+":80"), who) })
	inNS(t, e.gb, func() { serveTCP(t, listen(t, guestB+":9090"), who) })
	serveTCP(t, listen(t, e.m.Gateway().String()+":7070"), who)
	serveTCP(t, listen(t, uplinkHost+":7071"), who)
	waitDial(t, guestB+":9090")
	inNS(t, e.ga, func() { waitDial(t, e.m.Gateway().String()+":53") })
	return e
}

// reach reports whether a TCP connection from namespace ns (from local
// address src when set) to addr gets the server's line.
func reach(t *testing.T, ns, src, addr string) bool {
	t.Helper()
	var ok bool
	in := func(fn func()) { inNS(t, ns, fn) }
	if ns == "" {
		in = func(fn func()) { fn() }
	}
	in(func() {
		d := net.Dialer{Timeout: 700 * time.Millisecond}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		b := make([]byte, 3)
		n, _ := c.Read(b)
		ok = string(b[:n]) == "ok\n"
	})
	return ok
}

func TestIntegrationDefaultPolicy(t *testing.T) {
	if !inNetns(t, prepGuard) {
		return
	}
	e := setupGuard(t, api.NetPolicy{})
	gw := e.m.Gateway().String()
	if !reach(t, e.ga, "", internetIP+":8080") {
		t.Errorf("guest A cannot reach the internet")
	}
	for _, c := range []struct{ what, addr string }{
		{"the metadata service", metadataIP + ":80"},
		{"an RFC 1918 LAN host", lanHost + ":80"},
		{"a host on a subnet attached to the host", uplinkPeer + ":8080"},
		{"the host on a non-DNS port of the gateway", gw + ":7070"},
		{"the host on another of its addresses", uplinkHost + ":7071"},
		{"another VM", guestB + ":9090"},
	} {
		if reach(t, e.ga, "", c.addr) {
			t.Errorf("ATTACK SUCCEEDED: guest A reached %s (%s)", c.what, c.addr)
		}
	}
	inNS(t, e.ga, func() {
		if r := query(t, "udp", e.m.DNSAddr(), "b.vm.", dns.TypeA); answerData(r) != guestB {
			t.Errorf("DNS b.vm: %v", r)
		}
	})
	if n, err := e.m.GuestDenied("a"); err != nil || n == 0 {
		t.Errorf("denied counter of a = %d (err %v), want > 0", n, err)
	}
}

func TestIntegrationAntiSpoof(t *testing.T) {
	if !inNetns(t, prepGuard) {
		return
	}
	e := setupGuard(t, api.NetPolicy{})
	// a second IP on the guest: its packets must not leave the host
	run(t, "ip", "-n", e.ga, "addr", "add", spoofedIP+"/24", "dev", "eth0")
	if reach(t, e.ga, spoofedIP, internetIP+":8080") {
		t.Errorf("ATTACK SUCCEEDED: guest A sent from the spoofed source %s to the internet", spoofedIP)
	}
	run(t, "ip", "-n", e.ga, "addr", "del", spoofedIP+"/24", "dev", "eth0")

	// ARP poisoning of B's address: the host keeps talking to B
	waitDial(t, guestB+":9090") // the host has a neighbour entry for B
	time.Sleep(1100 * time.Millisecond)
	inNS(t, e.ga, func() {
		for range 3 {
			sendARP(t, "eth0", mustMAC(guestAMAC), netip.MustParseAddr(guestB), e.m.Gateway())
			time.Sleep(200 * time.Millisecond)
		}
	})
	if mac := neighMAC(t, e.m.Bridge(), guestB); mac != guestBMAC {
		t.Errorf("ATTACK SUCCEEDED: the host's neighbour entry for B is %s, want B's %s", mac, guestBMAC)
	}
	if !reach(t, "", "", guestB+":9090") {
		t.Errorf("host -> B fails after the ARP attack")
	}

	// another MAC on the guest
	run(t, "ip", "-n", e.ga, "link", "set", "eth0", "address", spoofedMAC)
	run(t, "ip", "-n", e.ga, "neigh", "flush", "all")
	if reach(t, e.ga, "", internetIP+":8080") {
		t.Errorf("ATTACK SUCCEEDED: guest A sent from the spoofed MAC %s", spoofedMAC)
	}
	run(t, "ip", "-n", e.ga, "link", "set", "eth0", "address", guestAMAC)
	if !reach(t, e.ga, "", internetIP+":8080") {
		t.Errorf("guest A back on its own MAC cannot reach the internet")
	}
}

func TestIntegrationRouterAdvertisement(t *testing.T) {
	if !inNetns(t, prepGuard) {
		return
	}
	e := setupGuard(t, api.NetPolicy{})
	before := defaultRoutes6(t)
	inNS(t, e.ga, func() {
		for range 3 {
			sendRA(t, "eth0", mustMAC(guestAMAC), netip.MustParseAddr(raRouterAddr))
			time.Sleep(300 * time.Millisecond)
		}
	})
	time.Sleep(500 * time.Millisecond)
	if after := defaultRoutes6(t); after != before {
		t.Errorf("ATTACK SUCCEEDED: the host's IPv6 default routes changed after a guest's RA: %q -> %q", before, after)
	}
}

func defaultRoutes6(t *testing.T) string {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			s += r.String() + ";"
		}
	}
	return s
}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func neighMAC(t *testing.T, dev, ip string) string {
	t.Helper()
	link, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.IP.String() == ip {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

// sendFrame writes one raw Ethernet frame on ifname.
func sendFrame(t *testing.T, ifname string, frame []byte) {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		t.Fatal(err)
	}
}

// sendARP sends an ARP reply to the gateway claiming ip is at mac.
func sendARP(t *testing.T, ifname string, mac net.HardwareAddr, ip, gw netip.Addr) {
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f := append(append(append([]byte{}, bcast...), mac...), 0x08, 0x06)
	f = append(f, 0, 1, 8, 0, 6, 4, 0, 2) // ethernet/ipv4, reply
	f = append(append(f, mac...), ip.AsSlice()...)
	f = append(append(f, bcast...), gw.AsSlice()...)
	sendFrame(t, ifname, f)
}

// sendRA sends a router advertisement (router lifetime 1800 s) from the
// link-local src to all nodes.
func sendRA(t *testing.T, ifname string, mac net.HardwareAddr, src netip.Addr) {
	dst := netip.MustParseAddr("ff02::1")
	icmp := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	icmp = append(icmp, 1, 1) // source link-layer address option
	icmp = append(icmp, mac...)
	s, d := src.As16(), dst.As16()
	var sum uint32
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, 0, byte(len(icmp)), 0, 0, 0, 58)
	for _, b := range [][]byte{pseudo, icmp} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(icmp[2:], ^uint16(sum))
	ip6 := []byte{0x60, 0, 0, 0, 0, byte(len(icmp)), 58, 255}
	ip6 = append(append(append(ip6, s[:]...), d[:]...), icmp...)
	f := append([]byte{0x33, 0x33, 0, 0, 0, 1}, mac...)
	f = append(append(f, 0x86, 0xdd), ip6...)
	sendFrame(t, ifname, f)
}

// startFakeUpstreamNames is a DNS server answering A for the given names.
func startFakeUpstreamNames(t *testing.T, addr string, names map[string]string) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg).SetReply(req)
		if ip, ok := names[req.Question[0].Name]; ok {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP(ip),
			})
		} else {
			resp.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(resp)
	})
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
}
