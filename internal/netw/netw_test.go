package netw

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"banger/internal/api"
)

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		kind api.Kind // "" = ok
	}{
		{"defaults", Config{DNSUpstreams: []string{}}, ""},
		{"custom", Config{Bridge: "br-x", Subnet: netip.MustParsePrefix("10.9.0.0/16"), TapPoolSize: 4, DNSUpstreams: []string{"1.1.1.1", "9.9.9.9:5353"}}, ""},
		{"long bridge", Config{Bridge: "a-very-long-bridge-name"}, api.KindInvalid},
		{"bad bridge chars", Config{Bridge: "br/0"}, api.KindInvalid},
		{"bridge like tap", Config{Bridge: "tap-pool-9"}, api.KindInvalid},
		{"ipv6 subnet", Config{Subnet: netip.MustParsePrefix("fd00::/64")}, api.KindInvalid},
		{"tiny subnet", Config{Subnet: netip.MustParsePrefix("10.0.0.0/30")}, api.KindInvalid},
		{"host bits", Config{Subnet: netip.MustParsePrefix("10.0.0.5/24")}, api.KindInvalid},
		{"negative pool", Config{TapPoolSize: -1}, api.KindInvalid},
		{"huge pool", Config{TapPoolSize: MaxTapPoolSize + 1}, api.KindInvalid},
		{"bad table", Config{Table: "bad table"}, api.KindInvalid},
		{"bad port", Config{DNSPort: 70000}, api.KindInvalid},
		{"bad upstream", Config{DNSUpstreams: []string{"dns.google"}}, api.KindInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, nil)
			if tt.kind == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || api.KindOf(err) != tt.kind {
				t.Fatalf("New: got %v, want kind %s", err, tt.kind)
			}
			if api.AsError(err).Fix == "" {
				t.Errorf("error %q has no fix", err)
			}
		})
	}
}

func TestDerivedAddresses(t *testing.T) {
	tests := []struct {
		subnet, gw, mask string
	}{
		{"10.203.0.0/24", "10.203.0.1", "255.255.255.0"},
		{"172.30.0.0/16", "172.30.0.1", "255.255.0.0"},
		{"192.168.77.0/28", "192.168.77.1", "255.255.255.240"},
	}
	for _, tt := range tests {
		m, err := New(Config{Subnet: netip.MustParsePrefix(tt.subnet), DNSUpstreams: []string{}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Gateway().String() != tt.gw || m.Netmask() != tt.mask {
			t.Errorf("%s: gateway %s netmask %s, want %s %s", tt.subnet, m.Gateway(), m.Netmask(), tt.gw, tt.mask)
		}
	}
}

func TestDefaultsFilled(t *testing.T) {
	m, err := New(Config{DNSUpstreams: []string{"10.0.0.2"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config()
	if c.Bridge != "banger0" || c.Table != "banger" || c.DNSPort != 53 || c.Subnet != DefaultSubnet {
		t.Errorf("defaults not applied: %+v", c)
	}
	if !slices.Equal(c.DNSUpstreams, []string{"10.0.0.2:53"}) {
		t.Errorf("upstreams %v, want [10.0.0.2:53]", c.DNSUpstreams)
	}
}

func TestResolvConfUpstreams(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	data := "# comment\nnameserver 192.0.2.1\nnameserver 2001:db8::1\noptions edns0\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got := resolvConfUpstreams(p)
	want := []string{"192.0.2.1:53", "[2001:db8::1]:53"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := resolvConfUpstreams(filepath.Join(t.TempDir(), "missing")); len(got) != 0 {
		t.Errorf("missing file: got %v", got)
	}
}

func TestPoolTapNames(t *testing.T) {
	m, err := New(Config{TapPoolSize: 3, DNSUpstreams: []string{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		pool, ours bool
	}{
		{"tap-pool-0", true, true},
		{"tap-pool-2", true, true},
		{"tap-pool-3", false, true},
		{"tap-pool-01", false, true},
		{"banger-tap-ab12", false, true},
		{"tap0", false, false},
		{"eth0", false, false},
	}
	for _, tt := range tests {
		if got := m.isPoolTap(tt.name); got != tt.pool {
			t.Errorf("isPoolTap(%s) = %v", tt.name, got)
		}
		if got := isBangerTapName(tt.name); got != tt.ours {
			t.Errorf("isBangerTapName(%s) = %v", tt.name, got)
		}
	}
}

// TestDNSOnLoopback runs the real DNS server on 127.0.0.1 (no root needed)
// with a fake upstream, over UDP and TCP.
func TestDNSOnLoopback(t *testing.T) {
	upstream := startFakeUpstream(t, "127.0.0.1:0", "example.com.", "192.0.2.7")
	subnet := netip.MustParsePrefix("10.203.0.0/24")
	s := newDNSServer(subnet, []string{upstream}, testLogger(t))
	addr := freeLoopbackAddr(t)
	if err := s.start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.stop(context.Background()) })
	s.setHost("alpha", netip.MustParseAddr("10.203.0.5"))
	s.setHost("Beta", netip.MustParseAddr("10.203.0.6"))
	s.setHost("gone", netip.MustParseAddr("10.203.0.9"))
	s.removeHost("gone")

	tests := []struct {
		q     string
		qtype uint16
		rcode int
		want  string // rdata of the single answer, "" for none
	}{
		{"alpha.vm.", dns.TypeA, dns.RcodeSuccess, "10.203.0.5"},
		{"BETA.vm.", dns.TypeA, dns.RcodeSuccess, "10.203.0.6"},
		{"alpha.vm.", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"gone.vm.", dns.TypeA, dns.RcodeNameError, ""},
		{"nobody.vm.", dns.TypeA, dns.RcodeNameError, ""},
		{"5.0.203.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "alpha.vm."},
		{"9.0.203.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, ""},
		{"example.com.", dns.TypeA, dns.RcodeSuccess, "192.0.2.7"},
		{"elsewhere.org.", dns.TypeA, dns.RcodeNameError, ""},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			r := query(t, proto, addr, tt.q, tt.qtype)
			if r.Rcode != tt.rcode {
				t.Errorf("%s %s %s: rcode %s, want %s", proto, tt.q, dns.TypeToString[tt.qtype],
					dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				continue
			}
			if got := answerData(r); got != tt.want {
				t.Errorf("%s %s: answer %q, want %q", proto, tt.q, got, tt.want)
			}
		}
	}
}

func TestDNSUpstreamDownIsServfail(t *testing.T) {
	dead := freeLoopbackAddr(t) // nothing listens there
	s := newDNSServer(DefaultSubnet, []string{dead}, testLogger(t))
	req := new(dns.Msg).SetQuestion("example.com.", dns.TypeA)
	start := time.Now()
	r := s.answer(req, "tcp")
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v, want a short timeout", d)
	}
}

func query(t *testing.T, proto, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, qtype), addr)
	if err != nil {
		t.Fatalf("%s query %s at %s: %v", proto, name, addr, err)
	}
	return r
}

func answerData(r *dns.Msg) string {
	if len(r.Answer) != 1 {
		return ""
	}
	switch rr := r.Answer[0].(type) {
	case *dns.A:
		return rr.A.String()
	case *dns.PTR:
		return rr.Ptr
	}
	return r.Answer[0].String()
}

// startFakeUpstream serves name → ip over udp and tcp at addr and NXDOMAIN
// for everything else; it returns the udp address (tcp uses the same port).
func startFakeUpstream(t *testing.T, addr, name, ip string) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg).SetReply(req)
		if req.Question[0].Name == name {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
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
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() {
			if srv.ShutdownContext(context.Background()) != nil {
				pc.Close()
				ln.Close()
			}
		})
	}
	return pc.LocalAddr().String()
}

// freeLoopbackAddr returns a 127.0.0.1 port free for both udp and tcp.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port")
	return ""
}
