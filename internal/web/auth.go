package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/loopback"
)

// CookieName is the cookie older versions' /login set to the token; /login
// now expires it (it authorises nothing).
const CookieName = "banger_token"

// KindUnauthenticated is the error kind of a 401 answer (a missing or wrong
// token). It is web-only: the Unix socket has no tokens.
const KindUnauthenticated api.Kind = "Unauthenticated"

// LoadOrCreateToken returns the token stored at path, creating the file
// (0600, 32 random bytes as hex) when it does not exist. A file readable by
// others is made 0600 again.
func LoadOrCreateToken(path string) (string, error) {
	if path == "" {
		return "", errors.New("web: no token path")
	}
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 32 {
			return "", api.FailedPrecondition("web token file %s is too short (%d characters)", path, len(tok)).
				WithFix("remove " + path + " and restart bangerd to make a new token")
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("chmod web token %s: %w", path, err)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading web token %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("making web token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating web token %s: %w", path, err)
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("writing web token %s: %w", path, err)
	}
	return tok, nil
}

// Listen opens a TCP listener on addr. Unless allowRemote, the host must be
// a loopback address or localhost, and the address actually bound is
// checked again (a name could resolve elsewhere).
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	return loopback.Listen(addr, allowRemote, loopback.Words{
		Key: "web_listen", Example: "127.0.0.1:7070", Who: "web UI",
		RemoteFix: "use a loopback address such as 127.0.0.1:7070, or set web_allow_remote = true to accept other machines (the token is then the only guard)",
		BusyFix:   "free the port or set web_listen to another address (empty turns the web UI off)",
	})
}

// guard sets the security headers on every answer and refuses a Host that
// is not ours (DNS rebinding: a page on evil.example whose name was
// re-pointed at 127.0.0.1 sends Host: evil.example).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "+
			"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		if !s.opts.AllowRemote {
			if !loopback.Request(r) {
				writeError(w, r, http.StatusForbidden, api.Invalid("host %q is not this machine's loopback", r.Host).
					WithFix("open the UI as http://127.0.0.1:PORT or http://localhost:PORT (banger web url prints it)"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// authorized reports whether r carries the token in its Authorization
// header. A browser sends that header only when the page's own script adds
// it — the page keeps the token in its origin's localStorage, which a page
// on another port of the same host cannot read — so the credential is
// bound to the UI's origin. No cookie authorises anything: cookies are not
// port-scoped, and a cookie for 127.0.0.1 reaches every server on it.
func (s *Server) authorized(r *http.Request) bool {
	auth, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return found && s.tokenEqual(auth)
}

func (s *Server) tokenEqual(v string) bool {
	return subtle.ConstantTimeCompare([]byte(v), []byte(s.token)) == 1
}

func unauthenticated(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, http.StatusUnauthorized, &api.Error{Kind: KindUnauthenticated,
		Message: "missing or wrong web UI token",
		Fix:     "run `banger web url` and open the URL it prints"})
}

// requireToken answers 401 without the token (see authorized). A request
// a browser marks as coming from another origin (Sec-Fetch-Site other than
// same-origin or none, or an Origin naming another host:port) is refused
// first, whatever it carries.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := notCrossOrigin(r); err != nil {
			writeError(w, r, http.StatusForbidden, err)
			return
		}
		if !s.authorized(r) {
			unauthenticated(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireTicket is requireToken for the two endpoints a browser cannot add
// a header to (EventSource, WebSocket): they also accept ?ticket=, a
// single-use ticket the page gets from POST /v1/tickets with its token.
// A WebSocket upgrade must come from our own origin (Origin present and
// naming the Host).
func (s *Server) requireTicket(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := notCrossOrigin(r); err != nil {
			writeError(w, r, http.StatusForbidden, err)
			return
		}
		byTicket := false
		if !s.authorized(r) {
			if !s.tickets.take(r.URL.Query().Get("ticket")) {
				unauthenticated(w, r)
				return
			}
			byTicket = true
		}
		if byTicket && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			if err := sameOrigin(r); err != nil {
				writeError(w, r, http.StatusForbidden, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

const crossOriginFix = "use the banger UI itself; other sites and other ports cannot drive it"

// notCrossOrigin refuses what the browser says comes from another origin.
// Requests without these headers (curl, scrapers) pass to the token check.
func notCrossOrigin(r *http.Request) *api.Error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return api.Invalid("cross-origin request refused (Sec-Fetch-Site: %s)", site).WithFix(crossOriginFix)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return api.Invalid("request from origin %q refused: this is %s", origin, r.Host).WithFix(crossOriginFix)
		}
	}
	return nil
}

// sameOrigin needs an Origin header naming the Host (a browser's WebSocket
// always sends one).
func sameOrigin(r *http.Request) *api.Error {
	if r.Header.Get("Origin") == "" {
		return api.Invalid("request without an Origin header refused").WithFix(crossOriginFix)
	}
	return notCrossOrigin(r)
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>banger</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/style.css">
<script type="module" src="/assets/login.js"></script></head>
<body class="login"><main class="login-box"><h1>banger</h1>
<p>{{.}}</p><p><a href="/">Continue to banger</a></p></main></body></html>`))

// login checks ?token= and answers a page whose script (assets/login.js)
// keeps the token in this origin's localStorage, drops the token URL from
// the history and opens the app. It also expires the cookie older banger
// versions set, which every port of this host was sent.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !s.tokenEqual(r.URL.Query().Get("token")) {
		writeError(w, r, http.StatusUnauthorized, &api.Error{Kind: KindUnauthenticated,
			Message: "wrong or missing login token",
			Fix:     "run `banger web url` on the daemon's host and open the URL it prints"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginPage.Execute(w, "Logging in…")
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>banger: {{.Message}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;background:#0f1419;color:#e6e9ef;display:grid;place-items:center;min-height:90vh}
main{max-width:36rem;background:#18202a;border:1px solid #2c3744;border-radius:10px;padding:1.5rem 2rem}
h1{font-size:1.3rem;color:#ff8f8f}code{background:#0f1419;padding:.1rem .3rem;border-radius:4px}</style></head>
<body><main role="alert"><h1>{{.Message}}</h1>{{if .Fix}}<p>Fix: {{.Fix}}</p>{{end}}</main></body></html>`))

// writeError answers e as the API does (JSON api.Error) for /v1 paths and
// for clients that accept JSON, else as a small HTML page.
func writeError(w http.ResponseWriter, r *http.Request, status int, e *api.Error) {
	w.Header().Set("Cache-Control", "no-store")
	if strings.HasPrefix(r.URL.Path, "/v1/") || !strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(e)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = errorPage.Execute(w, e)
}
