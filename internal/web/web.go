// Package web is banger's browser UI: a small HTTP server on web_listen
// (default 127.0.0.1:7070) that serves the embedded single-page app, the
// daemon's own /v1 API handler (the very handler the Unix socket serves, so
// the UI is a client of the API, not a second implementation) and three
// web-only endpoints: the login, a server-sent event stream
// (GET /v1/events) and a terminal WebSocket (GET /v1/vms/{name}/terminal).
// GET /metrics is the API's /v1/metrics (Prometheus text) at the path
// scrapers expect, behind the same token.
//
// Lifecycle: New loads (or makes, 0600) the token file and opens the
// listener, refusing a non-loopback address unless AllowRemote; Serve
// serves until Shutdown, which cancels the base context of every request
// (waking event streams and terminals) and closes the listener.
//
// Security: the token is bound to the UI's origin. /login?token= hands it
// to the page, which keeps it in its origin's localStorage (another port on
// the same host is another origin and cannot read it) and sends it as an
// Authorization: Bearer header; no cookie authorises anything (cookies are
// not port-scoped). The event stream and the terminal WebSocket, which a
// browser cannot give a header, take a single-use ticket (POST /v1/tickets,
// 30 s) in the URL instead, and the WebSocket must come from our own
// origin. A request the browser marks as cross-origin (Sec-Fetch-Site,
// Origin) is refused before the token check. Unless AllowRemote the Host
// header must name a loopback address or localhost (DNS rebinding). The
// app's static files are served without the token: they hold no data.
// Requests through the UI reach the daemon without a Unix-socket peer, so
// the daemon treats them as unprivileged (no host paths: image build
// uploads its files). See auth.go and tickets.go.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"banger/internal/api"
)

//go:embed assets
var assets embed.FS

// ExecFunc opens a fresh stream to a VM's guest agent speaking the agent's
// exec protocol (vm.Manager.Exec); the terminal drives agent.ExecTTY on it.
type ExecFunc func(ctx context.Context, name string) (net.Conn, error)

// Options configures a Server. API and TokenPath are required.
type Options struct {
	// Listen is the TCP address (web_listen), e.g. 127.0.0.1:7070.
	Listen string
	// AllowRemote permits a non-loopback Listen and any Host header
	// (web_allow_remote); the token is then the only guard.
	AllowRemote bool
	// TokenPath is the token file (<state_dir>/web.token), made 0600 with
	// a fresh random token when missing.
	TokenPath string
	// API is the daemon's /v1 handler, mounted behind the token check.
	API http.Handler
	// Exec opens guest agent streams for the terminal; nil answers the
	// terminal with an Unavailable error.
	Exec ExecFunc
	// Log receives request failures; nil discards.
	Log *slog.Logger
	// PollInterval is how often the event stream re-reads VMs, images
	// and operations while someone listens (default 1s); StatsInterval
	// how often it samples running VMs' stats (default 2s).
	PollInterval  time.Duration
	StatsInterval time.Duration
}

// Server is a running web UI. Make it with New, then call Serve.
type Server struct {
	opts    Options
	token   string
	ln      net.Listener
	srv     *http.Server
	hub     *hub
	tickets ticketBox
	ctx     context.Context
	cancel  context.CancelFunc
}

// New loads or creates the token and opens the listener; nothing is served
// until Serve. Errors carry api kinds with a fix.
func New(opts Options) (*Server, error) {
	if opts.API == nil {
		return nil, errors.New("web: no API handler")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = 2 * time.Second
	}
	token, err := LoadOrCreateToken(opts.TokenPath)
	if err != nil {
		return nil, err
	}
	ln, err := Listen(opts.Listen, opts.AllowRemote)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, token: token, ln: ln}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.hub = newHub(s.ctx, opts.API, opts.PollInterval, opts.StatsInterval, opts.Log)
	s.srv = &http.Server{
		Handler:           s.Handler(),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// LoginURL is the URL that logs a browser in (it carries the token).
func (s *Server) LoginURL() string {
	host := s.opts.Listen
	if h, _, err := net.SplitHostPort(host); err == nil && h != "localhost" {
		host = s.ln.Addr().String()
		if tcp, ok := s.ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
			host = net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
		}
	}
	u := url.URL{Scheme: "http", Host: host, Path: "/login", RawQuery: url.Values{"token": {s.token}}.Encode()}
	return u.String()
}

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, ends event streams and terminals, and waits
// for other requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	return err
}

// Handler is the whole web UI: security checks in front of the login, the
// web-only endpoints, the API and the static app.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", s.login)
	mux.Handle("POST /v1/tickets", s.requireToken(http.HandlerFunc(s.ticket)))
	mux.Handle("GET /v1/events", s.requireTicket(http.HandlerFunc(s.events)))
	mux.Handle("GET /v1/vms/{name}/terminal", s.requireTicket(http.HandlerFunc(s.terminal)))
	mux.Handle("/v1/", s.requireToken(noStore(s.opts.API)))
	mux.Handle("GET /metrics", s.requireToken(noStore(atPath("/v1/metrics", s.opts.API))))
	// The app itself (HTML, scripts, styles) holds no data and is served
	// to anyone who passes the Host check; everything it shows comes from
	// the API with the token.
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", files))
	mux.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, static, "index.html")
	}))
	mux.Handle("/", s.requireToken(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, http.StatusNotFound, api.NotFound("no page %s", r.URL.Path).WithFix("open / for the UI"))
	})))
	return s.guard(mux)
}

// atPath serves a request as if it were for path (GET /metrics is the API's
// GET /v1/metrics).
func atPath(path string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path, r2.URL.RawPath = path, ""
		h.ServeHTTP(w, r2)
	})
}

func noStore(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}
