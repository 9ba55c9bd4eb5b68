package netw

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"banger/internal/api"
)

// A VM's egress policy, compiled from api.NetPolicy. What each mode lets
// through the forward hook (banger's DNS on the gateway is the input hook's
// and always answers; see nft.go):
//
//	internet  global allow-list, then not the host's world (privateRanges
//	          and the subnets attached to the host's interfaces), the rest
//	none      nothing
//	allow     global allow-list, no DNS-over-TLS (853), the policy's CIDR
//	          entries, the addresses its domain entries resolved to through
//	          banger's DNS (an nftables set with the answers' TTLs)
//
// Whatever is not let through is counted (the VM's denied counter) and
// dropped.

// privateRanges are what "internet" never reaches: this network, private
// (RFC 1918), shared (RFC 6598), loopback, link-local (cloud metadata),
// multicast and reserved/broadcast.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// dotPort is DNS over TLS: dropped in mode "allow" whatever the entries say.
const dotPort = 853

// maxAllowEntries bounds a policy (each CIDR entry is a rule).
const maxAllowEntries = 256

// cidrEntry is an allowed destination prefix, on one port (tcp and udp) or
// all when port is 0.
type cidrEntry struct {
	prefix netip.Prefix
	port   uint16
}

type policy struct {
	mode    string
	cidrs   []cidrEntry
	domains []string // lower case, no trailing dot; "*.x" matches subnames of x
}

var domainRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// NormalizePolicy validates p and returns it in canonical form (mode
// filled in, entries trimmed and lower-cased, duplicates removed). Errors
// are api.Invalid and name the bad entry.
func NormalizePolicy(p api.NetPolicy) (api.NetPolicy, error) {
	c, err := compilePolicy(p)
	if err != nil {
		return api.NetPolicy{}, err
	}
	out := api.NetPolicy{Mode: c.mode}
	for _, e := range c.cidrs {
		out.Allow = append(out.Allow, e.String())
	}
	out.Allow = append(out.Allow, c.domains...)
	return out, nil
}

func (e cidrEntry) String() string {
	s := e.prefix.String()
	if e.prefix.IsSingleIP() {
		s = e.prefix.Addr().String()
	}
	if e.port != 0 {
		s += ":" + strconv.Itoa(int(e.port))
	}
	return s
}

func compilePolicy(p api.NetPolicy) (policy, error) {
	c := policy{mode: strings.ToLower(strings.TrimSpace(p.Mode))}
	if c.mode == "" {
		c.mode = api.NetInternet
		if len(p.Allow) > 0 {
			c.mode = api.NetAllow
		}
	}
	switch c.mode {
	case api.NetInternet, api.NetNone:
		if len(p.Allow) > 0 {
			return policy{}, api.Invalid("policy %q takes no allow entries (got %d)", c.mode, len(p.Allow)).
				WithFix("use mode \"allow\" with the entries, or drop the entries")
		}
		return c, nil
	case api.NetAllow:
	default:
		return policy{}, api.Invalid("unknown network policy %q", p.Mode).WithFix("use internet, none or allow")
	}
	if len(p.Allow) > maxAllowEntries {
		return policy{}, api.Invalid("%d allow entries, at most %d", len(p.Allow), maxAllowEntries).
			WithFix("use wider CIDRs or fewer names")
	}
	for _, raw := range p.Allow {
		s := strings.ToLower(strings.TrimSpace(raw))
		if e, ok, err := parseCIDREntry(s); err != nil {
			return policy{}, api.Invalid("allow entry %q: %v", raw, err).
				WithFix("write a CIDR or IP with an optional :port (10.1.0.0/16, 192.0.2.7:443) or a domain name")
		} else if ok {
			if !slices.Contains(c.cidrs, e) {
				c.cidrs = append(c.cidrs, e)
			}
			continue
		}
		s = strings.TrimSuffix(s, ".")
		if s == "" || len(s) > 253 || !domainRE.MatchString(s) {
			return policy{}, api.Invalid("allow entry %q is neither a CIDR, an IP nor a domain name", raw).
				WithFix("write e.g. 10.1.0.0/16, 192.0.2.7:443, example.com or *.example.com")
		}
		if !slices.Contains(c.domains, s) {
			c.domains = append(c.domains, s)
		}
	}
	return c, nil
}

// parseCIDREntry parses "ip", "ip:port", "cidr" or "cidr:port"; ok is
// false (and err nil) when s does not start like an IPv4 address.
func parseCIDREntry(s string) (cidrEntry, bool, error) {
	if strings.Count(s, ":") > 1 {
		return cidrEntry{}, true, fmt.Errorf("IPv6 entries are not supported (VMs have no IPv6)")
	}
	if s == "" || s[0] < '0' || s[0] > '9' || strings.Count(s, ".") != 3 && !strings.Contains(s, "/") {
		return cidrEntry{}, false, nil
	}
	var e cidrEntry
	addr, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return e, true, fmt.Errorf("port %q is not 1..65535", port)
		}
		e.port = uint16(n)
	}
	if strings.Contains(addr, "/") {
		p, err := netip.ParsePrefix(addr)
		if err != nil || !p.Addr().Is4() {
			return e, true, fmt.Errorf("%q is not an IPv4 CIDR", addr)
		}
		e.prefix = p.Masked()
		return e, true, nil
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return e, true, fmt.Errorf("%q is not an IPv4 address", addr)
	}
	e.prefix = netip.PrefixFrom(a, 32)
	return e, true, nil
}

// parseGlobalAllow parses the global allow-list (CIDR or IP, optional
// :port; no names).
func parseGlobalAllow(entries []string) ([]cidrEntry, error) {
	var out []cidrEntry
	for _, raw := range entries {
		e, ok, err := parseCIDREntry(strings.TrimSpace(raw))
		if !ok && err == nil {
			err = fmt.Errorf("not a CIDR or IP address")
		}
		if err != nil {
			return nil, api.Invalid("network allow entry %q: %v", raw, err).
				WithFix("write a CIDR or IP with an optional :port, e.g. 10.0.0.0/8 or 10.1.2.3:3128")
		}
		out = append(out, e)
	}
	return out, nil
}

// allowsName reports whether qname (a DNS question name, any case, with or
// without the trailing dot) is one of the policy's domains.
func (c policy) allowsName(qname string) bool {
	n := strings.TrimSuffix(strings.ToLower(qname), ".")
	for _, d := range c.domains {
		if sub, ok := strings.CutPrefix(d, "*."); ok {
			if strings.HasSuffix(n, "."+sub) {
				return true
			}
		} else if n == d {
			return true
		}
	}
	return false
}
