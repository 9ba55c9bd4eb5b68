package netw

import (
	"net/netip"
	"sync"
	"time"
)

// DNS forwarder limits: a flood from one guest must neither exhaust the
// daemon's file descriptors (each forward holds a socket for up to
// forwardTimeout) nor starve other guests' lookups.
const (
	// maxInflightForwards bounds concurrent upstream forwards; beyond it a
	// query gets SERVFAIL at once.
	maxInflightForwards = 64
	// maxInflightPerSource keeps one source from holding all of them.
	maxInflightPerSource = 16
	// perSourceQPS and perSourceBurst: a token bucket per source address;
	// beyond it a query gets REFUSED.
	perSourceQPS   = 50
	perSourceBurst = 100
	// maxTrackedSources bounds the buckets kept; full buckets are dropped
	// first when it is reached.
	maxTrackedSources = 4096
)

type bucket struct {
	tokens float64
	last   time.Time
}

// rateLimits is a token bucket per source address.
type rateLimits struct {
	rate, burst float64

	mu       sync.Mutex // guards the fields below
	buckets  map[netip.Addr]*bucket
	inflight map[netip.Addr]int
}

func newRateLimits(rate, burst float64) *rateLimits {
	return &rateLimits{rate: rate, burst: burst, buckets: map[netip.Addr]*bucket{}, inflight: map[netip.Addr]int{}}
}

// acquire counts one more forward in flight for src, unless src already
// has maxInflightPerSource; release undoes it.
func (l *rateLimits) acquire(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight[src] >= maxInflightPerSource {
		return false
	}
	l.inflight[src]++
	return true
}

func (l *rateLimits) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight[src]--; l.inflight[src] <= 0 {
		delete(l.inflight, src)
	}
}

// allow takes a token from src's bucket at time now.
func (l *rateLimits) allow(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[src]
	if !ok {
		if len(l.buckets) >= maxTrackedSources {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[src] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pruneLocked forgets buckets that have refilled (they would start full).
func (l *rateLimits) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
