// Package loopback opens the daemon's TCP listeners (web UI, metrics) on
// the loopback unless remote access was asked for, and checks that a
// request's Host names the loopback (DNS rebinding: a page whose name was
// re-pointed at 127.0.0.1 sends its own name as Host).
package loopback

import (
	"net"
	"net/http"
	"strings"

	"banger/internal/api"
)

// Words are what Listen's errors say about one listener.
type Words struct {
	Key       string // config key, e.g. "web_listen"
	Example   string // a good value, e.g. "127.0.0.1:7070"
	Who       string // what "cannot listen", e.g. "web UI"
	RemoteFix string // the fix for a non-loopback address
	BusyFix   string // the fix when the address cannot be bound
}

// Listen opens a TCP listener on addr. Unless allowRemote, the host must be
// a loopback address or localhost, and the address actually bound is
// checked again (a name could resolve elsewhere).
func Listen(addr string, allowRemote bool, w Words) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, api.Invalid("%s %q is not host:port: %w", w.Key, addr, err).
			WithFix("use e.g. " + w.Key + " = \"" + w.Example + "\"")
	}
	if !allowRemote && !Host(host) {
		return nil, api.FailedPrecondition("%s %s is not a loopback address", w.Key, addr).WithFix(w.RemoteFix)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, api.Unavailable("%s cannot listen on %s: %w", w.Who, addr, err).WithFix(w.BusyFix)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !allowRemote && (!ok || !tcp.IP.IsLoopback()) {
		_ = ln.Close()
		return nil, api.FailedPrecondition("%s %s bound %s, which is not loopback", w.Key, addr, ln.Addr()).WithFix(w.RemoteFix)
	}
	return ln, nil
}

// Host reports whether host (no port) names this machine's loopback.
func Host(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Request reports whether r's Host header (port or not) names the loopback.
func Request(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	return Host(host)
}
