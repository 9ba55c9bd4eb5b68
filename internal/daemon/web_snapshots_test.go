package daemon_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"banger/internal/api"
	"banger/internal/daemon"
	"banger/internal/web"
)

// The web UI's Snapshots view, fork buttons and warm column render from
// the fake daemon in headless Chromium, and a Fork click runs an operation
// whose children are listed.
func TestWebSnapshotsView(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: drives headless Chromium")
	}
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium: apt-get install chromium (make deps does)")
	}
	tokenPath := filepath.Join(t.TempDir(), "web.token")
	var ui *web.Server
	r := start(t, testConfig(t), daemon.Options{
		Web: func(apiHandler http.Handler, _ daemon.VMService, log *slog.Logger) (daemon.WebUI, error) {
			s, err := web.New(web.Options{Listen: "127.0.0.1:0", TokenPath: tokenPath, API: apiHandler, Log: log,
				PollInterval: 200 * time.Millisecond})
			ui = s
			return s, err
		},
	})
	seedRunning(t, r.st, "base", "web")
	ctx := context.Background()
	op, _ := r.c.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "web", Name: "s1"})
	finish(t, r, op, nil)
	op, _ = r.c.WarmImage(ctx, api.ImageWarmRequest{Image: "base"})
	finish(t, r, op, nil)
	tok, err := os.ReadFile(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ui.Addr().String()

	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(chrome), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000), chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true)}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(actx)
	defer func() { cancelTab(); cancelAlloc() }()
	bctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	poll := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond))
	}
	var row, images, vmPage string
	textOf := func(sel string, into *string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			v, err := chromedp.Text(css(sel))(ctx, tg)
			*into = v
			return chromedp.Void{}, err
		}
	}
	err = chromedp.Do(bctx,
		chromedp.Navigate(base+"/login?token="+strings.TrimSpace(string(tok))),
		chromedp.WaitVisible(css("#vm-table")),
		chromedp.Navigate(base+"/#/snapshots"),
		chromedp.WaitVisible(css(`#snapshot-table tr[data-snapshot="s1"]`)),
		chromedp.WaitVisible(css(`#snapshot-table tr[data-snapshot="warm-base"]`)),
		textOf(`#snapshot-table tr[data-snapshot="s1"]`, &row),
		chromedp.Click(css(`button[data-key="fork:s1"]`)),
		chromedp.WaitVisible(css(`#snapshot-progress .fork-list li[data-child="s1-fork"]`)),
		chromedp.WaitVisible(css(`#snapshot-progress li.stage-ok[data-stage="restore"]`)),
		poll(`document.querySelector('#snapshot-table tr[data-snapshot="s1"]').innerText.includes('s1-fork')`),
		chromedp.Navigate(base+"/#/images"),
		chromedp.WaitVisible(css(`button[data-key="iunwarm:base"]`)),
		textOf("#image-table", &images),
		chromedp.Navigate(base+"/#/vms/web"),
		chromedp.WaitVisible(css(`button[data-key="fork:web"]`)),
		textOf("#main", &vmPage),
	)
	if err != nil {
		dctx, dcancel := context.WithTimeout(tab, 10*time.Second)
		defer dcancel()
		page, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("browser: %v\npage:\n%s", err, page)
	}
	for _, w := range []string{"s1", "web", "base", "qemu", "2 vCPU · 1024 MiB"} {
		if !strings.Contains(row, w) {
			t.Errorf("snapshot row %q lacks %q", row, w)
		}
	}
	if !strings.Contains(images, "warm · qemu") {
		t.Errorf("image table %q does not show base as warm", images)
	}
	if !strings.Contains(vmPage, "Snapshot and fork") {
		t.Errorf("vm page lacks the fork card:\n%s", vmPage)
	}
	if _, err := r.st.GetVM(ctx, "s1-fork"); err != nil {
		t.Errorf("the Fork button made no VM: %v", err)
	}
}
