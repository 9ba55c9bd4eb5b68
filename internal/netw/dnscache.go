package netw

import (
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Forwarded answers are cached per question (name, type, class, and the
// DO bit) for their smallest TTL, at most maxCacheTTL, so a guest asking
// the same name over and over costs one upstream query per TTL. Only
// NOERROR answers with records are cached; at most maxCacheEntries, the
// oldest-expiring dropped first when full.
const (
	maxCacheTTL     = 5 * time.Minute
	maxCacheEntries = 4096
)

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

type dnsCache struct {
	mu      sync.Mutex // guards entries
	entries map[string]cacheEntry
}

func newDNSCache() *dnsCache { return &dnsCache{entries: map[string]cacheEntry{}} }

func cacheKey(req *dns.Msg) string {
	q := req.Question[0]
	do := "0"
	if o := req.IsEdns0(); o != nil && o.Do() {
		do = "1"
	}
	return strings.ToLower(q.Name) + "|" + dns.TypeToString[q.Qtype] + "|" + dns.ClassToString[q.Qclass] + "|" + do
}

// get returns a copy of the cached answer to req with its ID and TTLs
// adjusted, or nil.
func (c *dnsCache) get(req *dns.Msg, now time.Time) *dns.Msg {
	c.mu.Lock()
	e, ok := c.entries[cacheKey(req)]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		return nil
	}
	m := e.msg.Copy()
	m.Id = req.Id
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return m
}

// put caches resp (the answer to req) for its smallest TTL.
func (c *dnsCache) put(req, resp *dns.Msg, now time.Time) {
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) == 0 || resp.Truncated {
		return
	}
	ttl := maxCacheTTL
	for _, rr := range resp.Answer {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCacheEntries {
		c.evictLocked(now)
	}
	c.entries[cacheKey(req)] = cacheEntry{msg: resp.Copy(), stored: now, expires: now.Add(ttl)}
}

// evictLocked drops expired entries, or the one expiring first.
func (c *dnsCache) evictLocked(now time.Time) {
	var first string
	var firstAt time.Time
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
			continue
		}
		if first == "" || e.expires.Before(firstAt) {
			first, firstAt = k, e.expires
		}
	}
	if len(c.entries) >= maxCacheEntries {
		delete(c.entries, first)
	}
}
