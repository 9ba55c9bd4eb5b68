package metrics

import (
	"net"
	"net/http"
	"strings"

	"banger/internal/api"
)

// Listen opens metrics_listen, mirroring web.Listen: unless allowRemote
// (metrics_allow_remote) the host must be a loopback address or localhost,
// and the address actually bound is checked again (a name could resolve
// elsewhere). The listener has no token: the loopback is its guard.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, api.Invalid("metrics_listen %q is not host:port: %w", addr, err).
			WithFix("use e.g. metrics_listen = \"127.0.0.1:9470\"")
	}
	remoteFix := "use a loopback address such as 127.0.0.1:9470, or set metrics_allow_remote = true to let other machines scrape (metrics_listen has no token)"
	if !allowRemote && !loopbackHost(host) {
		return nil, api.FailedPrecondition("metrics_listen %s is not a loopback address", addr).WithFix(remoteFix)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, api.Unavailable("metrics cannot listen on %s: %w", addr, err).
			WithFix("free the port or set metrics_listen to another address (empty turns it off)")
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !allowRemote && (!ok || !tcp.IP.IsLoopback()) {
		_ = ln.Close()
		return nil, api.FailedPrecondition("metrics_listen %s bound %s, which is not loopback", addr, ln.Addr()).WithFix(remoteFix)
	}
	return ln, nil
}

// ListenerHandler is what metrics_listen serves: GET /metrics and nothing
// else. Unless allowRemote, the Host header must name a loopback address
// (DNS rebinding: a page whose name was re-pointed at 127.0.0.1 must not
// read the VM names).
func (m *Metrics) ListenerHandler(allowRemote bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found: this listener serves GET /metrics only", http.StatusNotFound)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowRemote {
			host := r.Host
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			}
			if !loopbackHost(host) {
				http.Error(w, "host "+r.Host+" is not this machine's loopback", http.StatusForbidden)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether host (no port) names this machine's loopback
// (the same rule as the web UI's).
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
