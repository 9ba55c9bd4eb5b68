package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/loopback/loopbacktest"
)

// fakeAPI stands in for the daemon's /v1 handler: it answers GET /v1/vms
// with whatever body is set, and echoes other requests' method and path.
type fakeAPI struct {
	mu  sync.Mutex
	vms string
}

func (f *fakeAPI) setVMs(s string) { f.mu.Lock(); f.vms = s; f.mu.Unlock() }

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1/vms":
		if r.Method == http.MethodGet {
			f.mu.Lock()
			defer f.mu.Unlock()
			io.WriteString(w, f.vms+"\n")
			return
		}
	case "/v1/images", "/v1/operations":
		io.WriteString(w, "[]\n")
		return
	}
	json.NewEncoder(w).Encode(map[string]string{"method": r.Method, "path": r.URL.Path})
}

func newTestServer(t *testing.T, opts Options) (*Server, *fakeAPI) {
	t.Helper()
	f := &fakeAPI{vms: "[]"}
	if opts.API == nil {
		opts.API = f
	}
	opts.Listen = "127.0.0.1:0"
	opts.TokenPath = filepath.Join(t.TempDir(), "web.token")
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	go s.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, f
}

func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "web.token")
	tok, err := LoadOrCreateToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 64 {
		t.Errorf("token %q is not 32 bytes of hex", tok)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	os.Chmod(path, 0o644)
	again, err := LoadOrCreateToken(path)
	if err != nil || again != tok {
		t.Fatalf("second load = %q, %v; want the same token", again, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("a 0644 token file was not made 0600 again")
	}
	os.WriteFile(path, []byte("short\n"), 0o600)
	if _, err := LoadOrCreateToken(path); !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "remove") {
		t.Errorf("short token: %v, want FailedPrecondition with a fix", err)
	}
}

func TestListen(t *testing.T) {
	loopbacktest.Listen(t, Listen, "7070")
}

func TestAuthCSRFAndRebinding(t *testing.T) {
	s, _ := newTestServer(t, Options{})
	base := "http://" + s.Addr().String()
	cookie := CookieName + "=" + s.token
	tests := []struct {
		name   string
		method string
		path   string
		header map[string]string
		host   string
		status int
		want   string // substring of the body
	}{
		{"no token api", "GET", "/v1/vms", nil, "", 401, `"kind":"Unauthenticated"`},
		{"no token page", "GET", "/", map[string]string{"Accept": "text/html"}, "", 401, "banger web url"},
		{"wrong cookie", "GET", "/v1/vms", map[string]string{"Cookie": CookieName + "=nope"}, "", 401, "missing or wrong"},
		{"wrong login", "GET", "/login?token=nope", map[string]string{"Accept": "text/html"}, "", 401, "wrong or missing login token"},
		{"cookie get", "GET", "/v1/vms", map[string]string{"Cookie": cookie}, "", 200, "[]"},
		{"bearer get", "GET", "/v1/status", map[string]string{"Authorization": "Bearer " + s.token}, "", 200, `"/v1/status"`},
		{"page", "GET", "/", map[string]string{"Cookie": cookie}, "", 200, "<title>banger</title>"},
		{"asset", "GET", "/assets/app.js", map[string]string{"Cookie": cookie}, "", 200, "import"},
		{"vendored xterm", "GET", "/assets/vendor/xterm.mjs", map[string]string{"Cookie": cookie}, "", 200, "Terminal"},
		{"post without origin", "POST", "/v1/vms", map[string]string{"Cookie": cookie}, "", 403, "without an Origin"},
		{"post cross origin", "POST", "/v1/vms", map[string]string{"Cookie": cookie, "Origin": "http://evil.example"}, "", 403, "evil.example"},
		{"post cross site", "DELETE", "/v1/vms/x", map[string]string{"Cookie": cookie, "Origin": base, "Sec-Fetch-Site": "cross-site"}, "", 403, "cross-site"},
		{"post same origin", "POST", "/v1/vms", map[string]string{"Cookie": cookie, "Origin": base, "Sec-Fetch-Site": "same-origin"}, "", 200, `"POST"`},
		{"post bearer", "POST", "/v1/vms", map[string]string{"Authorization": "Bearer " + s.token}, "", 200, `"POST"`},
		{"rebinding host", "GET", "/v1/vms", map[string]string{"Cookie": cookie}, "evil.example:7070", 403, "not this machine's loopback"},
		{"localhost host", "GET", "/v1/vms", map[string]string{"Cookie": cookie}, "localhost:7070", 200, "[]"},
		{"unknown page", "GET", "/nope", map[string]string{"Cookie": cookie}, "", 404, "no page"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
				t.Fatalf("%s %s: %d %s, want %d containing %q", tt.method, tt.path, resp.StatusCode, body, tt.status, tt.want)
			}
			if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("security headers missing: %v", resp.Header)
			}
		})
	}
}

func TestLoginSetsStrictCookie(t *testing.T) {
	s, _ := newTestServer(t, Options{})
	u := s.LoginURL()
	if !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.Contains(u, "/login?token="+s.token) {
		t.Fatalf("LoginURL = %q", u)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	cs := resp.Cookies()
	if len(cs) != 1 || cs[0].Name != CookieName || cs[0].Value != s.token || !cs[0].HttpOnly ||
		cs[0].SameSite != http.SameSiteStrictMode || cs[0].Path != "/" {
		t.Fatalf("login cookie = %+v, want HttpOnly SameSite=Strict %s on /", cs, CookieName)
	}
}

// The event stream sends the current snapshot at once and every change.
func TestEventsStream(t *testing.T) {
	s, f := newTestServer(t, Options{PollInterval: 50 * time.Millisecond, StatsInterval: time.Hour})
	f.setVMs(`[{"name":"a","runtime":{"state":"running"}}]`)
	req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func(event string) string {
		t.Helper()
		cur := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				cur = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok && cur == event {
				return v
			}
		}
		t.Fatalf("stream ended before a %q event: %v", event, sc.Err())
		return ""
	}
	if got := next(EventVMs); !strings.Contains(got, `"name":"a"`) {
		t.Fatalf("first vms event = %s", got)
	}
	f.setVMs(`[{"name":"b","runtime":{"state":"stopped"}}]`)
	if got := next(EventVMs); !strings.Contains(got, `"name":"b"`) {
		t.Fatalf("second vms event = %s, want the change", got)
	}
}

func TestShutdownEndsEventStream(t *testing.T) {
	s, _ := newTestServer(t, Options{PollInterval: 50 * time.Millisecond})
	req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, resp.Body); close(done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an open event stream: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream outlived Shutdown")
	}
}

func TestRecorderIsInProcessAPI(t *testing.T) {
	h := newHub(context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(api.VersionHeader) != api.APIVersion {
			w.WriteHeader(400)
		}
		w.WriteHeader(418)
		io.WriteString(w, " x \n")
	}), time.Second, time.Second, slog.New(slog.DiscardHandler))
	body, status := h.get("/v1/vms")
	if status != 418 || string(body) != "x" {
		t.Fatalf("get = %q %d", body, status)
	}
}
