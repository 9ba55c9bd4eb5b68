package attack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"banger/internal/api"
	"banger/internal/web"
)

// Two origins on one host, in headless Chromium: the banger UI on
// 127.0.0.1:A, where the user logs in, and another local user's page on
// 127.0.0.1:B. Cookies are not port-scoped, so whatever the UI keeps in a
// cookie is sent to B's server, and B's page can make same-site requests to
// A. The page on B tries fetch, XHR, a form POST, an image, an EventSource
// and a WebSocket against A's API with credentials, and its server records
// every cookie the browser sends it. Nothing of A's may be authorised and
// no credential may reach B; the UI on A still lists VMs over the event
// stream and opens a terminal WebSocket.
func TestAttackWebOtherOrigin(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: drives headless Chromium (~8 s)")
	}
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium: apt-get install chromium (make deps does)")
	}
	vms, _ := json.Marshal([]api.VM{{Name: "legit", Runtime: api.VMRuntime{State: api.VMRunning}}})
	images, _ := json.Marshal([]api.Image{{Name: "base"}})
	builds := make(chan api.ImageBuildRequest, 4)
	apiH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/images/build":
			var req api.ImageBuildRequest
			json.NewDecoder(r.Body).Decode(&req)
			builds <- req
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(api.Unavailable("test: no builder"))
			return
		case "/v1/vms":
			if r.Method == http.MethodGet {
				w.Write(vms)
				return
			}
		case "/v1/images":
			w.Write(images)
			return
		case "/v1/operations":
			w.Write([]byte("[]"))
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"method": r.Method, "path": r.URL.Path})
	})
	var mu sync.Mutex
	var execs []string    // VMs the terminal reached Exec for
	var authed []string   // attack requests A authorised (status < 400)
	var received []string // cookies B's server was sent
	exec := func(_ context.Context, name string) (net.Conn, error) {
		mu.Lock()
		execs = append(execs, name)
		mu.Unlock()
		return nil, api.Unavailable("test: no guest")
	}
	s, err := web.New(web.Options{Listen: "127.0.0.1:0", TokenPath: filepath.Join(t.TempDir(), "web.token"),
		API: apiH, Exec: exec, Log: slog.New(slog.DiscardHandler), PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	// A: the UI's own handler, behind a recorder of what the attack got.
	lnA := listenLocal(t)
	a := "http://" + lnA.Addr().String()
	ui := s.Handler()
	serve(t, lnA, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusWriter{ResponseWriter: w}
		ui.ServeHTTP(rec, r)
		if atk := r.URL.Query().Get("atk"); atk != "" && rec.status() < 400 {
			mu.Lock()
			authed = append(authed, fmt.Sprintf("%s %s (%s): %d", r.Method, r.URL.Path, atk, rec.status()))
			mu.Unlock()
		}
	}))
	// B: the attacker.
	lnB := listenLocal(t)
	page := strings.ReplaceAll(attackPage, "ORIGIN_A", a)
	page = strings.ReplaceAll(page, "HOST_A", lnA.Addr().String())
	serve(t, lnB, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		for _, c := range r.Cookies() {
			received = append(received, r.URL.Path+": "+c.Name+"="+c.Value)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(page))
	}))

	login, err := url(s.LoginURL(), lnA.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx := browser(t, chrome)
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage: %s", what, err, text)
		}
	}
	// The user logs in on A; the list comes over the event stream, and
	// the terminal's WebSocket is authorised.
	run("login and list", chromedp.Navigate(login),
		chromedp.WaitVisible(chromedp.CSS(`#conn.ok`)), chromedp.WaitVisible(chromedp.CSS(`#vm-table`)))
	if text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#vm-table').innerText`)); !strings.Contains(text, "legit") {
		t.Fatalf("the VM list on A lacks the VM: %q", text)
	}
	run("terminal", chromedp.Navigate(a+"/#/vms/legit/terminal"), chromedp.Sleep(1500*time.Millisecond))
	mu.Lock()
	legitTerm := strings.Join(execs, ",")
	mu.Unlock()
	if legitTerm != "legit" {
		t.Fatalf("the UI's own terminal did not reach the VM (Exec calls %q)", legitTerm)
	}
	// The image build form uploads the script: the request carries its
	// contents, no host path.
	script := filepath.Join(t.TempDir(), "setup.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho from-the-browser\n"), 0o644)
	run("image build form", chromedp.Navigate(a+"/#/images"), chromedp.WaitVisible(chromedp.CSS("#bi-name")),
		chromedp.SendKeys(chromedp.CSS("#bi-name"), "webbuilt"),
		chromedp.SetUploadFiles(chromedp.CSS("#bi-script"), []string{script}),
		chromedp.Click(chromedp.CSS("#build-image button[type=submit]")))
	select {
	case req := <-builds:
		if req.Script != "" || req.ScriptFile == nil || string(req.ScriptFile.Data) != "#!/bin/sh\necho from-the-browser\n" || len(req.HostPaths()) != 0 {
			t.Fatalf("the web UI's build request = %+v, want the script's contents and no host path", req)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the image build form sent nothing")
	}
	// The user then opens the other user's page on B.
	run("attack page", chromedp.Navigate("http://"+lnB.Addr().String()+"/"), chromedp.Sleep(3*time.Second))
	res, err := chromedp.Run(ctx, chromedp.Action[network.GetCookiesResult](func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{"http://" + lnB.Addr().String() + "/"}})
	}))
	if err != nil {
		t.Fatal(err)
	}
	cookies := res.Cookies
	outcome, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.results)`))
	t.Logf("attacker page saw: %s", outcome)
	mu.Lock()
	defer mu.Unlock()
	for _, c := range cookies {
		t.Errorf("the browser holds cookie %s=%s… for 127.0.0.1:B", c.Name, c.Value[:min(8, len(c.Value))])
	}
	for _, c := range received {
		t.Errorf("the attacker's server on B was sent A's credential: %s", c)
	}
	for _, a := range authed {
		t.Errorf("A authorised the page on B: %s", a)
	}
	for _, e := range execs[1:] {
		t.Errorf("the page on B reached a terminal for %s", e)
	}
}

const attackPage = `<!doctype html><html><body>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="POST" action="ORIGIN_A/v1/vms?atk=form" target="sink" enctype="text/plain">
<input name='{"name":"pwn","x":"' value='"}'></form>
<img src="ORIGIN_A/v1/vms?atk=img">
<script>
window.results = {};
const A = "ORIGIN_A", note = (k, v) => { window.results[k] = v; };
fetch(A + "/v1/vms?atk=fetch", {credentials: "include"}).then(r => note("fetch", r.status), e => note("fetch", String(e)));
fetch(A + "/v1/vms?atk=fetch-post", {credentials: "include", mode: "no-cors", method: "POST", body: "{}"}).then(r => note("post", r.type), e => note("post", String(e)));
fetch(A + "/v1/tickets?atk=ticket", {credentials: "include", method: "POST"}).then(r => note("ticket", r.status), e => note("ticket", String(e)));
const x = new XMLHttpRequest(); x.open("GET", A + "/v1/status?atk=xhr"); x.withCredentials = true;
x.onloadend = () => note("xhr", x.status); x.send();
const es = new EventSource(A + "/v1/events?atk=sse", {withCredentials: true});
es.onopen = () => note("sse", "open"); es.onerror = () => note("sse", "error");
const ws = new WebSocket("ws://HOST_A/v1/vms/attackvm/terminal?atk=ws");
ws.onopen = () => note("ws", "open"); ws.onerror = () => note("ws", "error");
document.getElementById("f").submit();
note("cookie", document.cookie); note("storage", JSON.stringify(localStorage));
</script></body></html>`

// statusWriter records the status a handler answered (101 for a hijacked
// WebSocket) and passes Flush and Hijack through.
type statusWriter struct {
	http.ResponseWriter
	mu   sync.Mutex
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.mu.Lock()
	if w.code == 0 {
		w.code = code
	}
	w.mu.Unlock()
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.mu.Unlock()
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	w.code = http.StatusSwitchingProtocols
	w.mu.Unlock()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func serve(t *testing.T, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// url is the login URL with its host replaced by host (the recorder's).
func url(login, host string) (string, error) {
	i := strings.Index(login, "/login")
	if i < 0 {
		return "", fmt.Errorf("login URL %q has no /login", login)
	}
	return "http://" + host + login[i:], nil
}

func browser(t *testing.T, bin string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}
