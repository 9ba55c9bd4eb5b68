package live

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// uplink gives the env's guests a way out without touching the host's
// firewall, routes or forwarding: a veth pair between the host and the
// env's namespace on a private link-local /30, and a small HTTP forward
// proxy served by this test process on the host end. Guests reach it through
// banger's bridge and NAT in the namespace; on the host the proxy address is
// local, so nothing is forwarded there. It returns the proxy's URL
// (http://169.254.X.Y:PORT); everything is removed in t.Cleanup.
func (e *env) uplink(t *testing.T) string {
	t.Helper()
	id := strings.TrimPrefix(e.ns, "bgr-")
	host, peer := "bgu-"+id, "bgp-"+id
	hostIP, nsIP := e.uplinkHost, e.uplinkNS
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", e.ns)
	t.Cleanup(func() { run(t, "ip", "link", "del", host) })
	run(t, "ip", "addr", "add", hostIP+"/30", "dev", host)
	run(t, "ip", "link", "set", host, "up")
	run(t, "ip", "-n", e.ns, "addr", "add", nsIP+"/30", "dev", peer)
	run(t, "ip", "-n", e.ns, "link", "set", peer, "up")

	ln, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{t: t}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
		p.closeTunnels()
		p.wg.Wait()
		t.Logf("uplink proxy: %d requests", p.count())
	})
	return "http://" + ln.Addr().String()
}

// proxy is a forward HTTP proxy: absolute-URI requests and CONNECT.
type proxy struct {
	t       *testing.T
	wg      sync.WaitGroup
	mu      sync.Mutex
	n       int        // guarded by mu
	tunnels []net.Conn // guarded by mu
}

func (p *proxy) closeTunnels() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.tunnels {
		c.Close()
	}
}

func (p *proxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.n++
	p.mu.Unlock()
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "forward proxy: absolute http URI or CONNECT only", http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	for _, h := range []string{"Proxy-Connection", "Proxy-Authorization", "Connection"} {
		out.Header.Del(h)
	}
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// connect tunnels a CONNECT request (https through the proxy).
func (p *proxy) connect(w http.ResponseWriter, r *http.Request) {
	up, err := net.DialTimeout("tcp", r.Host, 15*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "no hijack", http.StatusInternalServerError)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	p.mu.Lock()
	p.tunnels = append(p.tunnels, conn, up)
	p.mu.Unlock()
	conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		if buf.Reader.Buffered() > 0 {
			io.CopyN(up, buf, int64(buf.Reader.Buffered()))
		}
		io.Copy(up, conn)
		up.Close()
	}()
	go func() {
		defer p.wg.Done()
		io.Copy(conn, up)
		conn.Close()
	}()
}
