package live

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/vishvananda/netns"

	"banger/internal/api"
)

// webPort is where the env's daemon serves the web UI inside its netns (the
// config default, web_listen = 127.0.0.1:7070).
const webPort = 7070

// The web UI as a user drives it in headless Chromium: a wrong token is
// refused, the login URL works, a VM is created from the form with its
// stages shown live, it becomes ready, a terminal in the browser runs
// `hostname`, and the VM is deleted from the list. Screenshots of each page
// go to $BANGER_SCREENSHOTS (default test/web/screenshots).
func TestIntegrationLiveWebUI(t *testing.T) {
	t.Parallel()
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium: apt-get install chromium (make deps does)")
	}
	e := newEnv(t)
	login := strings.TrimSpace(e.must("web", "url"))
	lu, err := url.Parse(login)
	if err != nil || lu.Path != "/login" || len(lu.Query().Get("token")) != 64 || lu.Host != fmt.Sprintf("127.0.0.1:%d", webPort) {
		t.Fatalf("banger web url printed %q, want http://127.0.0.1:%d/login?token=<64 hex>", login, webPort)
	}
	base := e.forwardWeb(webPort)
	lu.Host = strings.TrimPrefix(base, "http://")
	shots := screenshotDir(t)

	// Without the token the API refuses, in the API's own error format.
	resp, err := http.Get(base + "/v1/vms")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"kind":"Unauthenticated"`) {
		t.Fatalf("GET /v1/vms without a token: %d %s, want 401 Unauthenticated", resp.StatusCode, body)
	}

	ctx := newBrowser(t, chrome)
	start := time.Now()
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			buf, err := chromedp.CaptureScreenshot()(ctx, tg)
			if err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.Void{}, os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		}
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			// Show what the page showed: a screenshot, the page text and
			// the terminal's buffer when there is one.
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			defer dcancel()
			_ = chromedp.Do(dctx, shot("failed"))
			page, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body.innerText + '\n--- terminal ---\n' +
				(window.bangerTerm ? Array.from({length: window.bangerTerm.buffer.active.length},
					(_, i) => window.bangerTerm.buffer.active.getLine(i).translateToString(true)).join('\n').trim() : '(none)')`))
			t.Fatalf("%s: %v\npage:\n%s", what, err, page)
		}
		t.Logf("%-28s done at %v", what, time.Since(start).Round(100*time.Millisecond))
	}
	var text string
	textOf := func(sel string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			v, err := chromedp.Text(chromedp.CSS(sel))(ctx, tg)
			text = v
			return chromedp.Void{}, err
		}
	}

	step("wrong token refused",
		chromedp.Navigate(base+"/login?token="+strings.Repeat("0", 64)),
		textOf("body"))
	if !strings.Contains(text, "wrong or missing login token") || !strings.Contains(text, "banger web url") {
		t.Fatalf("a wrong token shows %q, want the refusal with its fix", text)
	}

	name := "web-" + randHex(2)
	step("log in",
		chromedp.Navigate(lu.String()),
		chromedp.WaitVisible(chromedp.CSS("#vm-table")),
		waitJS(`document.getElementById('conn').textContent === 'live'`),
		waitJS(`!!document.querySelector('#vm-image option[value="test"]')`))

	step("fill the create form",
		chromedp.SetValue(chromedp.CSS("#vm-image"), "test"),
		chromedp.SendKeys(chromedp.CSS("#vm-name"), name),
		chromedp.SendKeys(chromedp.CSS("#vm-vcpus"), "1"),
		chromedp.SendKeys(chromedp.CSS("#vm-memory"), "512"),
		chromedp.SendKeys(chromedp.CSS("#vm-disk"), "1"),
		chromedp.Click(chromedp.CSS("#create-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#create-progress li.stage-running[data-stage="agent ready"]`)),
		chromedp.Sleep(1500*time.Millisecond),
		shot("2-create-progress"))
	step("VM becomes ready",
		chromedp.WaitVisible(chromedp.CSS("#create-progress .op-status.ok")),
		textOf("#create-progress"))
	for _, stage := range []string{"allocate", "system disk", "work disk", "network", "engine", "boot", "agent ready"} {
		if !strings.Contains(text, stage) {
			t.Errorf("stage %q missing from the form's progress:\n%s", stage, text)
		}
	}
	if !strings.Contains(text, "is ready") || !strings.Contains(text, " s") {
		t.Errorf("the progress does not end with ready and durations:\n%s", text)
	}

	row := fmt.Sprintf(`tr[data-vm=%q]`, name)
	step("list shows it running with stats",
		chromedp.WaitVisible(chromedp.CSS(row+`[data-state="running"]`)),
		waitJS(fmt.Sprintf(`(document.querySelector('%s .spark-val')?.textContent ?? '—') !== '—'`, row)),
		chromedp.Sleep(4*time.Second), // a few samples make a line
		shot("1-vms"))

	step("VM page with serial log and charts",
		chromedp.Navigate(base+"/#/vms/"+name),
		waitJS(`document.querySelector('.serial')?.textContent.includes('Linux version')`),
		chromedp.Sleep(2*time.Second),
		shot("3-vm-detail"))

	step("terminal runs hostname",
		chromedp.Navigate(base+"/#/vms/"+name+"/terminal"),
		chromedp.WaitVisible(chromedp.CSS(".term-status.ok")),
		waitJS(`window.bangerTerm && window.bangerTerm.buffer.active.getLine(0).translateToString(true).trim() !== ''`),
		chromedp.Click(chromedp.CSS(".xterm")),
		typeKeys("hostname\r"),
		waitJS(fmt.Sprintf(`(() => { const b = window.bangerTerm.buffer.active;
			for (let i = 0; i < b.length; i++) if (b.getLine(i)?.translateToString(true).trim() === %q) return true;
			return false; })()`, name)),
		chromedp.Sleep(500*time.Millisecond),
		shot("4-terminal"))

	step("images page",
		chromedp.Navigate(base+"/#/images"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-image="test"]`)),
		shot("5-images"))
	step("host page",
		chromedp.Navigate(base+"/#/host"),
		chromedp.WaitVisible(chromedp.CSS("table.checks")),
		shot("6-host"))

	step("delete from the list",
		chromedp.Navigate(base+"/#/vms"),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[aria-label="Delete %s"]`, name))),
		chromedp.Click(chromedp.CSS(row+" .confirm .danger")),
		waitJS(fmt.Sprintf(`!document.querySelector('%s') && document.querySelector('#vm-table .empty') !== null`, row)))

	var vms []api.VM
	e.mustJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Fatalf("the UI's delete left VMs: %+v", vms)
	}
	e.assertNoLeaks()
}

// typeKeys presses keys in the focused element. The "char" events that
// chromedp.KeyEvent adds are left out: xterm.js already takes the key from
// keydown (a browser would not fire keypress after xterm cancels keydown,
// but a dispatched char event arrives anyway and doubles every letter).
func typeKeys(keys string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, r := range keys {
			for _, k := range kb.Encode(r) {
				if k.Type == kb.KeyChar {
					continue
				}
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, *k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// waitJS polls expr in the page until it is true.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(200*time.Millisecond))
}

// newBrowser starts headless Chromium (a fresh profile, nothing fetched
// from the network) and returns a tab's context; cleanup kills it.
func newBrowser(t *testing.T, bin string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// forwardWeb makes the web UI that the env's daemon serves on
// 127.0.0.1:port inside its netns reachable from this process at
// http://127.0.0.1:<random>: each connection is dialled from inside the
// netns (a socket keeps the namespace it was made in).
func (e *env) forwardWeb(port int) string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	target := fmt.Sprintf("127.0.0.1:%d", port)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := dialInNetns(e.ns, target)
				if err != nil {
					e.t.Logf("forwarding to %s in %s: %v", target, e.ns, err)
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); close(done) }()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// dialInNetns dials addr from inside network namespace ns.
func dialInNetns(ns, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	c, dialErr := net.DialTimeout("tcp", addr, 5*time.Second)
	if err := netns.Set(orig); err != nil {
		// This thread is stuck in the wrong namespace: never unlock it,
		// so the runtime retires it with the goroutine.
		runtime.LockOSThread()
		if c != nil {
			c.Close()
		}
		return nil, err
	}
	return c, dialErr
}

// screenshotDir is $BANGER_SCREENSHOTS or test/web/screenshots.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("BANGER_SCREENSHOTS")
	if dir == "" {
		dir, _ = filepath.Abs("../web/screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}
