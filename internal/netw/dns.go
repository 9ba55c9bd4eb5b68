package netw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"banger/internal/api"
)

const (
	vmZone = "vm."
	// hostTTL is short: VMs come and go.
	hostTTL = 5
	// forwardTimeout bounds each upstream try.
	forwardTimeout = 2 * time.Second
)

// dnsServer answers A (and PTR) for <vm>.vm from an in-memory table and
// forwards every other query to the upstream resolvers.
type dnsServer struct {
	subnet    netip.Prefix
	upstreams []string
	log       *slog.Logger
	// allowed and learn, when set, apply the querying guest's egress
	// policy: whether a name may be forwarded, and the answer's addresses
	// to record before the guest sees them (guest.go).
	allowed func(src netip.Addr, qname string) bool
	learn   func(src netip.Addr, qname string, resp *dns.Msg)
	// inflight bounds concurrent upstream forwards (each holds a socket);
	// limits rate-limits each source.
	inflight chan struct{}
	limits   *rateLimits
	cache    *dnsCache

	mu    sync.Mutex // guards the fields below
	hosts map[string]netip.Addr
	names map[netip.Addr]string
	udp   *dns.Server
	tcp   *dns.Server
}

func newDNSServer(subnet netip.Prefix, upstreams []string, log *slog.Logger) *dnsServer {
	return &dnsServer{
		subnet:    subnet,
		upstreams: upstreams,
		log:       log,
		hosts:     map[string]netip.Addr{},
		names:     map[netip.Addr]string{},
		inflight:  make(chan struct{}, maxInflightForwards),
		limits:    newRateLimits(perSourceQPS, perSourceBurst),
		cache:     newDNSCache(),
	}
}

// resolvConfUpstreams returns the nameservers of a resolv.conf as ip:port,
// or none when it cannot be read.
func resolvConfUpstreams(path string) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return []string{}
	}
	out := []string{}
	for _, s := range cc.Servers {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, net.JoinHostPort(a.String(), cc.Port))
		}
	}
	return out
}

func hostKey(name string) string {
	return strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(name), "."), ".vm")
}

func (s *dnsServer) setHost(name string, ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := hostKey(name)
	if old, ok := s.hosts[key]; ok {
		delete(s.names, old)
	}
	s.hosts[key] = ip
	s.names[ip] = key
}

func (s *dnsServer) removeHost(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := hostKey(name)
	if ip, ok := s.hosts[key]; ok {
		delete(s.names, ip)
		delete(s.hosts, key)
	}
}

// start listens on addr (udp and tcp) and serves; it is a no-op when
// already serving. Sockets are opened before start returns.
func (s *dnsServer) start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil {
		return nil
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return dnsListenErr(addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return dnsListenErr(addr, err)
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: ln, Handler: s, NotifyStartedFunc: notify}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Warn("dns server stopped", "addr", addr, "err", err)
			}
		}()
	}
	<-started // both are serving before start returns, so stop never races them
	<-started
	s.log.Info("dns serving", "addr", addr, "upstreams", s.upstreams)
	return nil
}

func dnsListenErr(addr string, err error) error {
	return api.Unavailable("dns: listening on %s: %w", addr, err).
		WithFix("stop whatever listens on that port on the bridge address, or set a different subnet")
}

func (s *dnsServer) stop(ctx context.Context) error {
	s.mu.Lock()
	udp, tcp := s.udp, s.tcp
	s.udp, s.tcp = nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range []*dns.Server{udp, tcp} {
		if srv == nil {
			continue
		}
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping dns: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ServeDNS implements dns.Handler.
func (s *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	var src netip.Addr
	if ap, err := netip.ParseAddrPort(w.RemoteAddr().String()); err == nil {
		src = ap.Addr().Unmap()
	}
	if !s.limits.allow(src, time.Now()) {
		_ = w.WriteMsg(new(dns.Msg).SetRcode(req, dns.RcodeRefused))
		return
	}
	resp := s.answerFrom(src, req, w.RemoteAddr().Network())
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns reply failed", "err", err)
	}
}

// answer builds the reply to req, arrived over network ("udp" or "tcp"),
// from no particular guest.
func (s *dnsServer) answer(req *dns.Msg, network string) *dns.Msg {
	return s.answerFrom(netip.Addr{}, req, network)
}

// answerFrom builds the reply to req from src.
func (s *dnsServer) answerFrom(src netip.Addr, req *dns.Msg, network string) *dns.Msg {
	resp := new(dns.Msg)
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		return resp.SetRcode(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	switch {
	case name == vmZone || strings.HasSuffix(name, "."+vmZone):
		return s.answerHost(req, q)
	case strings.HasSuffix(name, ".in-addr.arpa."):
		if ip, ok := ptrAddr(name); ok && s.subnet.Contains(ip) {
			return s.answerPTR(req, q, ip)
		}
	}
	if s.allowed != nil && !s.allowed(src, name) {
		return new(dns.Msg).SetRcode(req, dns.RcodeRefused)
	}
	if resp = s.cache.get(req, time.Now()); resp == nil {
		if !s.limits.acquire(src) {
			return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
		}
		resp = s.forward(req, network)
		s.limits.release(src)
		s.cache.put(req, resp, time.Now())
	}
	if s.learn != nil && resp.Rcode == dns.RcodeSuccess {
		s.learn(src, name, resp)
	}
	return resp
}

func (s *dnsServer) answerHost(req *dns.Msg, q dns.Question) *dns.Msg {
	s.mu.Lock()
	ip, ok := s.hosts[hostKey(q.Name)]
	s.mu.Unlock()
	return authoritative(req, q, ok, dns.TypeA, func(hdr dns.RR_Header) dns.RR { return &dns.A{Hdr: hdr, A: ip.AsSlice()} })
}

// authoritative is the answer for a name in our zone: NXDOMAIN when it is
// not found, the record rr makes when q asks for its type (or ANY), else
// NOERROR with no data.
func authoritative(req *dns.Msg, q dns.Question, found bool, rrtype uint16, rr func(dns.RR_Header) dns.RR) *dns.Msg {
	resp := new(dns.Msg).SetReply(req)
	resp.Authoritative, resp.RecursionAvailable = true, true
	if !found {
		resp.Rcode = dns.RcodeNameError
		return resp
	}
	if q.Qtype == rrtype || q.Qtype == dns.TypeANY {
		resp.Answer = append(resp.Answer, rr(dns.RR_Header{Name: q.Name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: hostTTL}))
	}
	return resp
}

func (s *dnsServer) answerPTR(req *dns.Msg, q dns.Question, ip netip.Addr) *dns.Msg {
	s.mu.Lock()
	host, ok := s.names[ip]
	s.mu.Unlock()
	return authoritative(req, q, ok, dns.TypePTR, func(hdr dns.RR_Header) dns.RR { return &dns.PTR{Hdr: hdr, Ptr: host + "." + vmZone} })
}

// ptrAddr parses d.c.b.a.in-addr.arpa. into a.b.c.d.
func ptrAddr(name string) (netip.Addr, bool) {
	parts := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	for i, j := 0, 3; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	a, err := netip.ParseAddr(strings.Join(parts, "."))
	return a, err == nil && a.Is4()
}

// forward relays req to the upstreams in turn, over the same transport it
// arrived on; SERVFAIL when none answers.
func (s *dnsServer) forward(req *dns.Msg, network string) *dns.Msg {
	if network != "tcp" {
		network = "udp"
	}
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		s.log.Debug("dns forward refused: too many in flight")
		return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
	}
	c := &dns.Client{Net: network, Timeout: forwardTimeout}
	for _, up := range s.upstreams {
		resp, _, err := c.Exchange(req, up)
		if err == nil && resp != nil {
			return resp
		}
		s.log.Debug("dns upstream failed", "upstream", up, "err", err)
	}
	return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
}
