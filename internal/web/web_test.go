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
	case "/v1/images", "/v1/operations", "/v1/snapshots":
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
	bearer := "Bearer " + s.token
	other := "http://127.0.0.1:1" // another port of this host: another origin
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
		{"cookie is no credential", "GET", "/v1/vms", map[string]string{"Cookie": cookie}, "", 401, "missing or wrong"},
		{"wrong bearer", "GET", "/v1/vms", map[string]string{"Authorization": "Bearer nope"}, "", 401, "missing or wrong"},
		{"wrong login", "GET", "/login?token=nope", map[string]string{"Accept": "text/html"}, "", 401, "wrong or missing login token"},
		{"bearer get", "GET", "/v1/status", map[string]string{"Authorization": bearer}, "", 200, `"/v1/status"`},
		{"page without token", "GET", "/", nil, "", 200, "<title>banger</title>"},
		{"asset without token", "GET", "/assets/app.js", nil, "", 200, "import"},
		{"vendored xterm", "GET", "/assets/vendor/xterm.mjs", nil, "", 200, "Terminal"},
		{"post bearer", "POST", "/v1/vms", map[string]string{"Authorization": bearer}, "", 200, `"POST"`},
		{"post same origin", "POST", "/v1/vms", map[string]string{"Authorization": bearer, "Origin": base, "Sec-Fetch-Site": "same-origin"}, "", 200, `"POST"`},
		{"other port origin", "GET", "/v1/vms", map[string]string{"Authorization": bearer, "Origin": other}, "", 403, "127.0.0.1:1"},
		{"same-site get", "GET", "/v1/vms", map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "same-site"}, "", 403, "same-site"},
		{"cross origin post", "POST", "/v1/vms", map[string]string{"Authorization": bearer, "Origin": "http://evil.example"}, "", 403, "evil.example"},
		{"cross site delete", "DELETE", "/v1/vms/x", map[string]string{"Authorization": bearer, "Origin": base, "Sec-Fetch-Site": "cross-site"}, "", 403, "cross-site"},
		{"events without ticket", "GET", "/v1/events", map[string]string{"Cookie": cookie}, "", 401, "missing or wrong"},
		{"events bad ticket", "GET", "/v1/events?ticket=nope", nil, "", 401, "missing or wrong"},
		{"ticket needs token", "POST", "/v1/tickets", map[string]string{"Cookie": cookie}, "", 401, "missing or wrong"},
		{"ticket", "POST", "/v1/tickets", map[string]string{"Authorization": bearer}, "", 200, `"expires_in":30`},
		{"rebinding host", "GET", "/v1/vms", map[string]string{"Authorization": bearer}, "evil.example:7070", 403, "not this machine's loopback"},
		{"localhost host", "GET", "/v1/vms", map[string]string{"Authorization": bearer}, "localhost:7070", 200, "[]"},
		{"unknown page", "GET", "/nope", map[string]string{"Authorization": bearer}, "", 404, "no page"},
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

// /login hands the token to the page's script (kept in localStorage) and
// expires the cookie older versions set; no cookie carries the token.
func TestLoginKeepsNoCookie(t *testing.T) {
	s, _ := newTestServer(t, Options{})
	u := s.LoginURL()
	if !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.Contains(u, "/login?token="+s.token) {
		t.Fatalf("LoginURL = %q", u)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "/assets/login.js") || strings.Contains(string(body), s.token) {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if c.Value != "" || c.MaxAge >= 0 {
			t.Fatalf("login sets cookie %+v, want none but the old one expired", c)
		}
	}
}

// A ticket opens the event stream once; it cannot be used twice.
func TestTicketSingleUse(t *testing.T) {
	s, _ := newTestServer(t, Options{})
	base := "http://" + s.Addr().String()
	req, _ := http.NewRequest("POST", base+"/v1/tickets", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tk Ticket
	json.NewDecoder(resp.Body).Decode(&tk)
	resp.Body.Close()
	if len(tk.Ticket) != 64 {
		t.Fatalf("ticket = %+v", tk)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	get := func() int {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events?ticket="+tk.Ticket, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(); c != 200 {
		t.Fatalf("first use: %d", c)
	}
	if c := get(); c != 401 {
		t.Fatalf("second use: %d, want 401", c)
	}
}

func TestTicketBoxBoundsAndExpiry(t *testing.T) {
	var b ticketBox
	now := time.Now()
	first, _ := b.issue(now.Add(-time.Hour)) // long expired
	for range maxTickets + 10 {
		if _, err := b.issue(now); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.m) > maxTickets {
		t.Fatalf("%d tickets outstanding, bound %d", len(b.m), maxTickets)
	}
	if b.take(first) || b.take("") {
		t.Fatal("an expired or empty ticket was accepted")
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
