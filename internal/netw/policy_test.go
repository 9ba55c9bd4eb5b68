package netw

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"banger/internal/api"
)

func TestNormalizePolicy(t *testing.T) {
	for _, c := range []struct {
		in   api.NetPolicy
		want api.NetPolicy
		bad  string
	}{
		{in: api.NetPolicy{}, want: api.NetPolicy{Mode: "internet"}},
		{in: api.NetPolicy{Mode: "None"}, want: api.NetPolicy{Mode: "none"}},
		{in: api.NetPolicy{Allow: []string{"10.1.2.0/16", " 192.0.2.7:443", "Example.COM.", "*.deb.debian.org", "example.com"}},
			want: api.NetPolicy{Mode: "allow", Allow: []string{"10.1.0.0/16", "192.0.2.7:443", "example.com", "*.deb.debian.org"}}},
		{in: api.NetPolicy{Mode: "allow"}, want: api.NetPolicy{Mode: "allow"}},
		{in: api.NetPolicy{Mode: "open"}, bad: "unknown network policy"},
		{in: api.NetPolicy{Mode: "none", Allow: []string{"1.2.3.4"}}, bad: "takes no allow entries"},
		{in: api.NetPolicy{Allow: []string{"10.0.0.300/8"}}, bad: "not an IPv4 CIDR"},
		{in: api.NetPolicy{Allow: []string{"1.2.3.4:0"}}, bad: "not 1..65535"},
		{in: api.NetPolicy{Allow: []string{""}}, bad: "neither a CIDR"},
		{in: api.NetPolicy{Allow: []string{"exa mple.com"}}, bad: "neither a CIDR"},
		{in: api.NetPolicy{Allow: []string{"*"}}, bad: "neither a CIDR"},
		{in: api.NetPolicy{Allow: []string{"2001:db8::/32"}}, bad: "IPv6"},
	} {
		got, err := NormalizePolicy(c.in)
		if c.bad != "" {
			if !api.IsInvalid(err) || !strings.Contains(err.Error(), c.bad) {
				t.Errorf("%+v: err %v, want Invalid containing %q", c.in, err, c.bad)
			}
			continue
		}
		if err != nil || got.Mode != c.want.Mode || !slices.Equal(got.Allow, c.want.Allow) {
			t.Errorf("%+v: got %+v (err %v), want %+v", c.in, got, err, c.want)
		}
	}
}

func TestAllowsName(t *testing.T) {
	p, err := compilePolicy(api.NetPolicy{Allow: []string{"example.com", "*.debian.org"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"example.com.": true, "EXAMPLE.com": true, "www.example.com.": false,
		"deb.debian.org.": true, "debian.org.": false, "evil-debian.org.": false, "other.com.": false,
	} {
		if got := p.allowsName(name); got != want {
			t.Errorf("allowsName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRateLimits(t *testing.T) {
	l := newRateLimits(10, 5)
	src, other := netip.MustParseAddr("10.203.0.10"), netip.MustParseAddr("10.203.0.11")
	now := time.Unix(1000, 0)
	n := 0
	for range 20 {
		if l.allow(src, now) {
			n++
		}
	}
	if n != 5 {
		t.Errorf("burst let %d through, want 5", n)
	}
	if !l.allow(other, now) {
		t.Errorf("another source was limited by the first one's flood")
	}
	if !l.allow(src, now.Add(200*time.Millisecond)) {
		t.Errorf("no token after 200ms at 10/s")
	}
	for range maxInflightPerSource {
		if !l.acquire(src) {
			t.Fatal("acquire refused below the cap")
		}
	}
	if l.acquire(src) {
		t.Errorf("acquire beyond maxInflightPerSource")
	}
	if !l.acquire(other) {
		t.Errorf("another source refused while the first holds its cap")
	}
	l.release(src)
	if !l.acquire(src) {
		t.Errorf("acquire refused after a release")
	}
}

// resolve asks banger's DNS for name's A record; "" when there is none.
func resolve(t *testing.T, dnsAddr, name string) (string, int) {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), dnsAddr)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return answerData(r), r.Rcode
}

func TestIntegrationPolicy(t *testing.T) {
	if !inNetns(t, prepGuard) {
		return
	}
	e := setupGuard(t, api.NetPolicy{Mode: api.NetNone})
	dnsAddr := e.m.DNSAddr()
	if reach(t, e.ga, "", internetIP+":8080") {
		t.Errorf("mode none: guest A reached the internet")
	}
	inNS(t, e.ga, func() {
		if ip, _ := resolve(t, dnsAddr, "b.vm."); ip != guestB {
			t.Errorf("mode none: b.vm = %q, want %s", ip, guestB)
		}
		if _, rc := resolve(t, dnsAddr, "example.com."); rc != dns.RcodeRefused {
			t.Errorf("mode none: example.com rcode %s, want REFUSED (no DNS tunnel out)", dns.RcodeToString[rc])
		}
	})

	// allow-list by CIDR and port, applied live
	start := time.Now()
	if err := e.m.SetGuestPolicy("a", api.NetPolicy{Allow: []string{internetIP + ":8080"}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE policy change applied in %v", time.Since(start))
	if !reach(t, e.ga, "", internetIP+":8080") {
		t.Errorf("allow %s:8080: not reachable", internetIP)
	}
	for _, a := range []string{internetIP + ":8081", internetIP2 + ":8080", internetIP + ":853"} {
		if reach(t, e.ga, "", a) {
			t.Errorf("allow %s:8080: %s reachable", internetIP, a)
		}
	}

	// a bad policy is an error and leaves the old one in place
	for _, bad := range [][]string{{"10.0.0.300/8"}, {""}} {
		if err := e.m.SetGuestPolicy("a", api.NetPolicy{Allow: bad}); !api.IsInvalid(err) {
			t.Errorf("bad policy %q: err %v, want Invalid", bad, err)
		}
	}
	if !reach(t, e.ga, "", internetIP+":8080") {
		t.Errorf("the old policy did not survive a bad update")
	}

	// allow-list by name: reachable only once resolved through banger's DNS
	if err := e.m.SetGuestPolicy("a", api.NetPolicy{Allow: []string{"example.com"}}); err != nil {
		t.Fatal(err)
	}
	if reach(t, e.ga, "", internetIP2+":8080") {
		t.Errorf("example.com's address reachable before it was resolved")
	}
	inNS(t, e.ga, func() {
		if ip, _ := resolve(t, dnsAddr, "example.com."); ip != internetIP2 {
			t.Errorf("example.com = %q, want %s", ip, internetIP2)
		}
		if _, rc := resolve(t, dnsAddr, "other.com."); rc != dns.RcodeRefused {
			t.Errorf("other.com (not allowed) rcode %s, want REFUSED", dns.RcodeToString[rc])
		}
	})
	if !reach(t, e.ga, "", internetIP2+":8080") {
		t.Errorf("example.com's address unreachable after resolving it")
	}
	if reach(t, e.ga, "", internetIP+":8080") {
		t.Errorf("a name not on the list (other.com's %s) reachable", internetIP)
	}
	if reach(t, e.ga, "", internetIP+":853") {
		t.Errorf("DNS over TLS to another resolver reachable")
	}
	// B (mode internet) did not learn A's allowed addresses or policy
	if !reach(t, e.gb, "", internetIP+":8080") {
		t.Errorf("guest B (internet) lost the internet")
	}
	st, err := e.m.GuestStatus("a")
	if err != nil || st.Denied == 0 || st.Policy.Mode != api.NetAllow {
		t.Errorf("status of a: %+v (err %v), want mode allow and denied > 0", st, err)
	}
	t.Logf("MEASURE denied packets of a: %d", st.Denied)
}

// TestIntegrationDNSFlood: a guest flooding queries to a dead upstream
// neither starves another guest's lookups nor grows the daemon's fds.
func TestIntegrationDNSFlood(t *testing.T) {
	if !inNetns(t, prepGuard) {
		return
	}
	e := setupGuard(t, api.NetPolicy{})
	// the upstream stops answering (a blackhole): every forward waits 2 s
	run(t, "ip", "-n", e.up, "route", "add", "blackhole", uplinkHost+"/32")
	dnsAddr := e.m.DNSAddr()
	fdsBefore := fdCount(t)
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	inNS(t, e.ga, func() {
		for w := range 8 {
			conn, err := net.ListenPacket("udp", ":0")
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				dst, _ := net.ResolveUDPAddr("udp", dnsAddr)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					m := new(dns.Msg).SetQuestion(fmt.Sprintf("x%d-%d.flood.example.", w, i), dns.TypeA)
					b, _ := m.Pack()
					_, _ = conn.WriteTo(b, dst)
					sent.Add(1)
					time.Sleep(time.Millisecond)
				}
			}()
		}
	})
	maxFDs := 0
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		inNS(t, e.gb, func() {
			start := time.Now()
			if ip, _ := resolve(t, dnsAddr, "a.vm."); ip != guestA {
				t.Errorf("during the flood b resolved a.vm to %q", ip)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("during the flood b's lookup took %v", d)
			}
		})
		maxFDs = max(maxFDs, fdCount(t))
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("MEASURE flood: %d queries sent, fds %d before, at most %d during", sent.Load(), fdsBefore, maxFDs)
	if maxFDs > fdsBefore+100 { // 64 forwards in flight, the listeners, slack
		t.Errorf("fds grew from %d to %d during the flood", fdsBefore, maxFDs)
	}
}

func fdCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestIntegrationPolicyScale binds 50 guests, counts the rules and times a
// bind, a policy change and an unbind.
func TestIntegrationPolicyScale(t *testing.T) {
	if !inNetns(t, nil) {
		return
	}
	m := newTestManager(t, Config{TapPoolSize: 0, GlobalAllow: []string{"10.9.9.9:3128"}})
	if err := m.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	var bind time.Duration
	for i := range 50 {
		g := Guest{Name: fmt.Sprintf("vm%d", i), Tap: fmt.Sprintf("banger-tap-%04x", i),
			IP: netip.MustParseAddr(fmt.Sprintf("10.203.0.%d", 10+i)), MAC: net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}}
		if i%2 == 1 {
			g.Policy = api.NetPolicy{Allow: []string{"192.0.2.0/24", "198.51.100.7:443", "deb.debian.org"}}
		}
		start := time.Now()
		if err := m.BindGuest(g); err != nil {
			t.Fatal(err)
		}
		bind += time.Since(start)
	}
	out, err := exec.Command("nft", "-a", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v (apt-get install nftables)", err)
	}
	rules := strings.Count(string(out), "# handle") - strings.Count(string(out), "table ") - strings.Count(string(out), "chain ")
	start := time.Now()
	if err := m.SetGuestPolicy("vm7", api.NetPolicy{Mode: api.NetNone}); err != nil {
		t.Fatal(err)
	}
	change := time.Since(start)
	start = time.Now()
	if err := m.UnbindGuest("vm7"); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE 50 guests: %d rules, %d bytes of ruleset; bind %v each, policy change %v, unbind %v",
		rules, len(out), bind/50, change, time.Since(start))
	if err := m.UnbindGuest("vm7"); err != nil {
		t.Errorf("second unbind: %v", err)
	}
	if err := m.BindGuest(Guest{Name: "vm7", Tap: "banger-tap-0007", IP: netip.MustParseAddr("10.203.0.17"),
		MAC: net.HardwareAddr{2, 0, 0, 0, 1, 7}}); err != nil {
		t.Errorf("rebind after unbind: %v", err)
	}
}

func TestDNSCache(t *testing.T) {
	c := newDNSCache()
	now := time.Unix(1000, 0)
	req := new(dns.Msg).SetQuestion("Example.com.", dns.TypeA)
	resp := new(dns.Msg).SetReply(req)
	resp.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")}}
	c.put(req, resp, now)
	again := new(dns.Msg).SetQuestion("example.COM.", dns.TypeA)
	got := c.get(again, now.Add(10*time.Second))
	if got == nil || got.Id != again.Id || got.Answer[0].Header().Ttl != 50 {
		t.Fatalf("cached answer: %v", got)
	}
	if got.Answer[0].Header().Ttl = 1; resp.Answer[0].Header().Ttl != 60 {
		t.Errorf("the cache handed out its own record")
	}
	if c.get(again, now.Add(61*time.Second)) != nil {
		t.Errorf("an expired answer was served")
	}
	if c.get(new(dns.Msg).SetQuestion("example.com.", dns.TypeAAAA), now) != nil {
		t.Errorf("another type was served from the cache")
	}
	nx := new(dns.Msg).SetRcode(req, dns.RcodeNameError)
	c2 := newDNSCache()
	c2.put(req, nx, now)
	if c2.get(req, now) != nil {
		t.Errorf("NXDOMAIN was cached")
	}
	for i := range maxCacheEntries + 10 {
		q := new(dns.Msg).SetQuestion(fmt.Sprintf("n%d.example.", i), dns.TypeA)
		r := new(dns.Msg).SetReply(q)
		r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")}}
		c.put(q, r, now)
	}
	if n := len(c.entries); n > maxCacheEntries {
		t.Errorf("%d cache entries, cap %d", n, maxCacheEntries)
	}
}
