package metrics

import (
	"net"
	"net/http"

	"banger/internal/loopback"
)

// Listen opens metrics_listen, mirroring web.Listen: unless allowRemote
// (metrics_allow_remote) the host must be a loopback address or localhost,
// and the address actually bound is checked again (a name could resolve
// elsewhere). The listener has no token: the loopback is its guard.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	return loopback.Listen(addr, allowRemote, loopback.Words{
		Key: "metrics_listen", Example: "127.0.0.1:9470", Who: "metrics",
		RemoteFix: "use a loopback address such as 127.0.0.1:9470, or set metrics_allow_remote = true to let other machines scrape (metrics_listen has no token)",
		BusyFix:   "free the port or set metrics_listen to another address (empty turns it off)",
	})
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
			if !loopback.Request(r) {
				http.Error(w, "host "+r.Host+" is not this machine's loopback", http.StatusForbidden)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}
