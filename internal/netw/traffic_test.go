package netw

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

// Addresses of the traffic test. "Upstream" is a third namespace standing
// for the internet: 198.51.100.0/24 links it to the banger namespace and
// 203.0.113.10 is a host on it (DNS server and TCP echo-the-peer server).
const (
	guestA     = "10.203.0.10"
	guestB     = "10.203.0.11"
	uplinkHost = "198.51.100.1"
	uplinkPeer = "198.51.100.2"
	internetIP = "203.0.113.10"
	// the guests' veth peers in the banger namespace, named like banger
	// taps so the bridge table treats them as taps
	portA = "banger-tap-a"
	portB = "banger-tap-b"
)

// prepTraffic builds, without touching the host namespace, three more
// namespaces: guests <ns>-a and <ns>-b, each with eth0 whose peer (va, vb)
// sits in the banger namespace, and <ns>-u reached through up0.
func prepTraffic(tb testing.TB, ns string) []string {
	ga, gb, up := ns+"-a", ns+"-b", ns+"-u"
	for _, n := range []string{ga, gb, up} {
		addNetns(tb, n)
	}
	run(tb, "ip", "-n", ns, "link", "set", "lo", "up")
	for _, g := range []struct{ ns, port, ip string }{{ga, portA, guestA}, {gb, portB, guestB}} {
		run(tb, "ip", "-n", ns, "link", "add", g.port, "type", "veth", "peer", "name", "eth0", "netns", g.ns)
		run(tb, "ip", "-n", g.ns, "addr", "add", g.ip+"/24", "dev", "eth0")
		run(tb, "ip", "-n", g.ns, "link", "set", "eth0", "up")
		run(tb, "ip", "-n", g.ns, "link", "set", "lo", "up")
		run(tb, "ip", "-n", g.ns, "route", "add", "default", "via", "10.203.0.1")
	}
	run(tb, "ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", up)
	run(tb, "ip", "-n", ns, "addr", "add", uplinkHost+"/24", "dev", "up0")
	run(tb, "ip", "-n", ns, "link", "set", "up0", "up")
	run(tb, "ip", "-n", up, "addr", "add", uplinkPeer+"/24", "dev", "eth0")
	run(tb, "ip", "-n", up, "link", "set", "eth0", "up")
	run(tb, "ip", "-n", up, "link", "set", "lo", "up")
	run(tb, "ip", "-n", up, "addr", "add", internetIP+"/32", "dev", "lo")
	run(tb, "ip", "-n", ns, "route", "add", "203.0.113.0/24", "via", uplinkPeer)
	return nil
}

// serveTCP accepts on ln and writes reply(conn) to each connection.
func serveTCP(t *testing.T, ln net.Listener, reply func(net.Conn) string) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(reply(c) + "\n"))
			c.Close()
		}
	}()
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// waitDial waits until a TCP connection to addr succeeds.
func waitDial(t *testing.T, addr string) {
	t.Helper()
	start := time.Now()
	for {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s unreachable: %v", addr, err)
		}
	}
}

// dialRead connects to addr and returns the first line the server sends.
func dialRead(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestIntegrationTraffic(t *testing.T) {
	if !inNetns(t, prepTraffic) {
		return
	}
	ns := os.Getenv(envNetns)
	ga, gb, up := ns+"-a", ns+"-b", ns+"-u"
	ctx := context.Background()
	m := newTestManager(t, Config{TapPoolSize: 1, DNSUpstreams: []string{internetIP}})
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	br, err := netlink.LinkByName(m.Bridge())
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{portA, portB} {
		link, err := netlink.LinkByName(port)
		if err != nil {
			t.Fatal(err)
		}
		if err := attachPort(link, br); err != nil { // the code path taps use
			t.Fatal(err)
		}
		assertPort(t, port, m.Bridge())
	}
	m.SetHost("a", netip.MustParseAddr(guestA))
	m.SetHost("b", netip.MustParseAddr(guestB))
	for _, g := range []struct{ name, ns, port, ip string }{{"a", ga, portA, guestA}, {"b", gb, portB, guestB}} {
		if err := m.BindGuest(Guest{Name: g.name, Tap: g.port, IP: netip.MustParseAddr(g.ip), MAC: nsMAC(t, g.ns)}); err != nil {
			t.Fatal(err)
		}
	}

	// servers: the internet (DNS + who-is-calling), guest B, and a host
	// service on the gateway address that guests must not reach
	inNS(t, up, func() {
		startFakeUpstream(t, internetIP+":53", "example.com.", "192.0.2.7")
		serveTCP(t, listen(t, internetIP+":8080"), func(c net.Conn) string {
			return c.RemoteAddr().(*net.TCPAddr).IP.String()
		})
	})
	inNS(t, gb, func() {
		serveTCP(t, listen(t, guestB+":9090"), func(net.Conn) string { return "b" })
	})
	serveTCP(t, listen(t, m.Gateway().String()+":7070"), func(net.Conn) string { return "host" })

	// the host itself reaches guest B (B's server works); the veths have
	// just come up, so the first packets may be lost: wait, then measure
	waitDial(t, guestB+":9090")
	inNS(t, ga, func() { waitDial(t, m.Gateway().String()+":53") })

	inNS(t, ga, func() {
		dnsAddr := m.DNSAddr()
		for _, proto := range []string{"udp", "tcp"} {
			if r := query(t, proto, dnsAddr, "b.vm.", dns.TypeA); answerData(r) != guestB {
				t.Errorf("%s b.vm: %v", proto, r)
			}
			if r := query(t, proto, dnsAddr, "nobody.vm.", dns.TypeA); r.Rcode != dns.RcodeNameError {
				t.Errorf("%s nobody.vm: rcode %s, want NXDOMAIN", proto, dns.RcodeToString[r.Rcode])
			}
			if r := query(t, proto, dnsAddr, "example.com.", dns.TypeA); answerData(r) != "192.0.2.7" {
				t.Errorf("%s forwarded example.com: %v", proto, r)
			}
			if r := query(t, proto, dnsAddr, "11.0.203.10.in-addr.arpa.", dns.TypePTR); answerData(r) != "b.vm." {
				t.Errorf("%s PTR of B: %v", proto, r)
			}
		}
		if got, err := dialRead(internetIP + ":8080"); err != nil || got != uplinkHost {
			t.Errorf("guest A -> internet: peer %q (err %v), want %s (masqueraded)", got, err, uplinkHost)
		}
		if got, err := dialRead(guestB + ":9090"); err == nil {
			t.Errorf("guest A reached guest B at L2: %q", got)
		}
		if got, err := dialRead(m.Gateway().String() + ":7070"); err == nil {
			t.Errorf("guest A reached a host service on the gateway: %q", got)
		}
	})

	// Port isolation alone: with br_netfilter loaded, bridged frames also
	// pass the inet forward hook where banger's table drops them; turn
	// that off in this namespace so only isolation stands between A and B.
	if _, err := os.Stat(brNFCallIPTables); err == nil {
		writeSysctl(t, brNFCallIPTables, "0")
		inNS(t, ga, func() {
			if got, err := dialRead(guestB + ":9090"); err == nil {
				t.Errorf("guest A reached guest B at L2 without br_netfilter: %q", got)
			}
		})
		writeSysctl(t, brNFCallIPTables, "1")
	}

	// Routed through the gateway both ways instead of at L2: only the
	// forward chain's bridge-to-bridge drop stops it.
	run(t, "ip", "-n", ga, "route", "add", guestB+"/32", "via", m.Gateway().String())
	run(t, "ip", "-n", gb, "route", "add", guestA+"/32", "via", m.Gateway().String())
	inNS(t, ga, func() {
		if got, err := dialRead(guestB + ":9090"); err == nil {
			t.Errorf("guest A reached guest B through the gateway: %q", got)
		}
	})
}

// brNFCallIPTables exists when br_netfilter is loaded; it is per network
// namespace (the outer test checks the host's value does not change).
const brNFCallIPTables = "/proc/sys/net/bridge/bridge-nf-call-iptables"

func writeSysctl(t *testing.T, path, v string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nsMAC returns the MAC of eth0 in namespace ns.
func nsMAC(t *testing.T, ns string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	inNS(t, ns, func() {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Error(err)
			return
		}
		mac = l.Attrs().HardwareAddr
	})
	return mac
}
