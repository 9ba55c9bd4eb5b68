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

// CookieName is the cookie /login sets to the token.
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

// authorized reports whether r carries the token, and whether by cookie.
func (s *Server) authorized(r *http.Request) (ok, byCookie bool) {
	if c, err := r.Cookie(CookieName); err == nil && s.tokenEqual(c.Value) {
		return true, true
	}
	if auth, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found && s.tokenEqual(auth) {
		return true, false
	}
	return false, false
}

func (s *Server) tokenEqual(v string) bool {
	return subtle.ConstantTimeCompare([]byte(v), []byte(s.token)) == 1
}

// requireToken answers 401 without the token. Requests authorized by the
// cookie that change state (any method but GET/HEAD/OPTIONS) or upgrade to
// a WebSocket must come from our own origin: the Origin header must be
// present and name the Host the request was sent to, and Sec-Fetch-Site
// (when the browser sends it) must be same-origin. SameSite=Strict already
// keeps the cookie off cross-site requests; this is the second lock.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, byCookie := s.authorized(r)
		if !ok {
			writeError(w, r, http.StatusUnauthorized, &api.Error{Kind: KindUnauthenticated,
				Message: "missing or wrong web UI token",
				Fix:     "run `banger web url` and open the URL it prints"})
			return
		}
		unsafe := r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions
		if byCookie && (unsafe || strings.EqualFold(r.Header.Get("Upgrade"), "websocket")) {
			if err := sameOrigin(r); err != nil {
				writeError(w, r, http.StatusForbidden, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func sameOrigin(r *http.Request) *api.Error {
	fix := "use the banger UI itself; other sites cannot drive it"
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return api.Invalid("cross-site request refused (Sec-Fetch-Site: %s)", site).WithFix(fix)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return api.Invalid("request without an Origin header refused").WithFix(fix)
	}
	u, err := url.Parse(origin)
	if err != nil || !strings.EqualFold(u.Host, r.Host) {
		return api.Invalid("request from origin %q refused: this is %s", origin, r.Host).WithFix(fix)
	}
	return nil
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>banger</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="0; url=/">
<link rel="stylesheet" href="/assets/style.css"></head>
<body class="login"><main class="login-box"><h1>banger</h1>
<p>{{.}}</p><p><a href="/">Continue to banger</a></p></main></body></html>`))

// login checks ?token=, sets the cookie and sends the browser to the app.
// The answer is a page (not a 30x) so the next request is a same-origin
// navigation that carries the SameSite=Strict cookie, and the token URL is
// left behind in the history of a reload-free redirect.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !s.tokenEqual(r.URL.Query().Get("token")) {
		writeError(w, r, http.StatusUnauthorized, &api.Error{Kind: KindUnauthenticated,
			Message: "wrong or missing login token",
			Fix:     "run `banger web url` on the daemon's host and open the URL it prints"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: s.token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginPage.Execute(w, "Logged in.")
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
