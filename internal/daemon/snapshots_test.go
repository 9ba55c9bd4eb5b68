package daemon_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
	"banger/internal/store"
)

// seedRunning stores an image and a running VM of it.
func seedRunning(t *testing.T, st *store.Store, image, vm string) {
	t.Helper()
	ctx := context.Background()
	img := api.Image{Name: image, Source: "register", Engines: []string{"qemu"}}
	if _, err := st.GetImage(ctx, image); err != nil {
		if err := st.CreateImage(ctx, &img); err != nil {
			t.Fatal(err)
		}
	} else {
		img, _ = st.GetImage(ctx, image)
	}
	v := api.VM{Name: vm, ImageID: img.ID, ImageName: img.Name, VCPUs: 2, MemoryMiB: 1024, DiskBytes: 4 << 30}
	v.Runtime.State, v.Runtime.Engine = api.VMRunning, "qemu"
	if err := st.CreateVM(ctx, &v, store.Alloc{Subnet: config.Default().Subnet}); err != nil {
		t.Fatal(err)
	}
}

// finish follows op to its end and decodes its result into out.
func finish(t *testing.T, r *running, op api.Operation, out any) api.Operation {
	t.Helper()
	final, err := r.c.Follow(context.Background(), op, nil)
	if err != nil {
		t.Fatalf("%s: %v", op.Kind, err)
	}
	if out != nil {
		if err := json.Unmarshal(final.Result, out); err != nil {
			t.Fatalf("%s result %s: %v", op.Kind, final.Result, err)
		}
	}
	return final
}

func TestSnapshotRoutes(t *testing.T) {
	r := start(t, testConfig(t), daemon.Options{})
	ctx := context.Background()
	seedRunning(t, r.st, "base", "web")

	op, err := r.c.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "web", Name: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if op.Kind != "snapshot.create" || op.Target != "web" {
		t.Errorf("operation %s on %s, want snapshot.create on web", op.Kind, op.Target)
	}
	var snap api.Snapshot
	final := finish(t, r, op, &snap)
	if snap.Name != "s1" || snap.VMName != "web" || snap.ImageName != "base" || len(final.Stages) < 2 {
		t.Fatalf("snapshot %+v, stages %+v", snap, final.Stages)
	}
	if _, err := r.c.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "web", Name: "s1"}); err != nil {
		t.Fatal(err) // begun: the duplicate fails in the operation
	}
	list, err := r.c.ListSnapshots(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "s1" {
		t.Fatalf("list = %+v, %v", list, err)
	}

	op, err = r.c.ForkVM(ctx, api.VMForkRequest{Source: "s1", Count: 3, Name: "kid"})
	if err != nil {
		t.Fatal(err)
	}
	var res api.VMForkResult
	finish(t, r, op, &res)
	if res.Snapshot != "s1" || len(res.VMs) != 3 || res.VMs[2].Name != "kid-3" || res.VMs[0].Origin != "s1" {
		t.Fatalf("fork result %+v", res)
	}
	got, err := r.c.GetSnapshot(ctx, "s1")
	if err != nil || len(got.Children) != 3 {
		t.Fatalf("get s1 = %+v, %v; want 3 children", got, err)
	}
	err = r.c.DeleteSnapshot(ctx, "s1")
	if !api.Is(err, api.KindFailedPrecondition) || !strings.Contains(api.AsError(err).Fix, "banger vm delete kid-") {
		t.Fatalf("deleting a snapshot with children: %v, want FailedPrecondition with the fix", err)
	}
	for _, k := range res.VMs {
		if err := r.st.DeleteVM(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.c.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.GetSnapshot(ctx, "s1"); !api.IsNotFound(err) {
		t.Fatalf("get a deleted snapshot: %v", err)
	}
	if err := r.c.DeleteSnapshot(ctx, "s1"); !api.IsNotFound(err) {
		t.Fatalf("delete a deleted snapshot: %v", err)
	}
	// operations are counted like the others
	resp := rawRequest(t, r.cfg.SocketPath, "GET", "/v1/metrics", nil, "")
	b, _ := io.ReadAll(resp.Body)
	for _, kind := range []string{"snapshot.create", "vm.fork"} {
		if !strings.Contains(string(b), `kind="`+kind+`"`) {
			t.Errorf("metrics have no %s operation", kind)
		}
	}
}

func TestWarmRoutes(t *testing.T) {
	r := start(t, testConfig(t), daemon.Options{})
	ctx := context.Background()
	seedRunning(t, r.st, "base", "web")
	op, err := r.c.WarmImage(ctx, api.ImageWarmRequest{Image: "base", Engine: "qemu"})
	if err != nil {
		t.Fatal(err)
	}
	var snap api.Snapshot
	finish(t, r, op, &snap)
	if snap.Kind != api.SnapshotWarm || op.Kind != "image.warm" || op.Target != "base" {
		t.Fatalf("warm: %+v (op %s %s)", snap, op.Kind, op.Target)
	}
	img, err := r.c.GetImage(ctx, "base")
	if err != nil || img.Warm == nil || img.Warm.Snapshot != snap.Name || !img.Warm.Usable {
		t.Fatalf("image after warm: %+v %v", img.Warm, err)
	}
	imgs, err := r.c.ListImages(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].Warm == nil {
		t.Fatalf("image list after warm: %+v %v", imgs, err)
	}
	if err := r.c.DeleteSnapshot(ctx, snap.Name); !api.Is(err, api.KindFailedPrecondition) ||
		api.AsError(err).Fix != "banger image unwarm base" {
		t.Fatalf("deleting a warm snapshot: %v", err)
	}
	if err := r.c.UnwarmImage(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	if img, _ := r.c.GetImage(ctx, "base"); img.Warm != nil {
		t.Fatalf("still warm after unwarm: %+v", img.Warm)
	}
	if err := r.c.UnwarmImage(ctx, "base"); !api.IsNotFound(err) {
		t.Fatalf("unwarm twice: %v", err)
	}
	if err := r.c.UnwarmImage(ctx, "nope"); !api.IsNotFound(err) {
		t.Fatalf("unwarm a missing image: %v", err)
	}
}

// Bad bodies are refused before the service is called, with Invalid and a
// fix; errors from the service keep their kinds.
func TestSnapshotBadRequests(t *testing.T) {
	var forks atomic.Int32
	snaps := &daemontest.Snapshots{ForkFunc: func(context.Context, api.VMForkRequest, progress.Reporter) (api.VMForkResult, error) {
		forks.Add(1)
		return api.VMForkResult{}, nil
	}}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.ServicesWith(nil, nil, snaps)})
	for _, c := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/v1/vms/fork", `{"source":"s","count":65}`, 400, "not from 1 to 64"},
		{"POST", "/v1/vms/fork", `{"source":"s","count":-1}`, 400, "not from 1 to 64"},
		{"POST", "/v1/vms/fork", `{"count":2}`, 400, "needs a source"},
		{"POST", "/v1/vms/fork", `{"source":"s","bogus":1}`, 400, "unknown field"},
		{"POST", "/v1/vms/fork", `{"source":"s"} {}`, 400, "unexpected data"},
		{"POST", "/v1/vms/fork", `{"source":"s","count":"2"}`, 400, `field \"count\"`},
		{"POST", "/v1/vms/fork", `{"source":"` + strings.Repeat("a", daemon.MaxRequestBody) + `"}`, 400, "larger than"},
		{"POST", "/v1/snapshots", `{}`, 400, "needs the VM"},
		{"POST", "/v1/snapshots", `{"vm":"a","stop":"yes"}`, 400, "Invalid"},
		{"POST", "/v1/images/base/warm", `{"image":"other"}`, 400, "path"},
		{"POST", "/v1/images/base/warm", `{"engine":3}`, 400, "Invalid"},
		{"GET", "/v1/snapshots/nope", "", 404, "banger snapshot list"},
		{"DELETE", "/v1/snapshots/nope", "", 404, "NotFound"},
		{"DELETE", "/v1/images/nope/warm", "", 404, "NotFound"},
		{"GET", "/v1/snapshots", "", 200, "[]"},
	} {
		resp := rawRequest(t, r.cfg.SocketPath, c.method, c.path, nil, c.body)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.status || !strings.Contains(string(b), c.want) {
			t.Errorf("%s %s %.60s: %d %s, want %d with %s", c.method, c.path, c.body, resp.StatusCode, b, c.status, c.want)
		}
		if c.status == 400 && !strings.Contains(string(b), `"kind":"Invalid"`) {
			t.Errorf("%s %s %.60s: %s is not Invalid", c.method, c.path, c.body, b)
		}
	}
	if n := forks.Load(); n != 0 {
		t.Fatalf("bad fork requests reached the service %d times", n)
	}
	// The service's own refusals keep their kind through the operation.
	ctx := context.Background()
	op, err := r.c.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "ghost"})
	if err != nil {
		t.Fatal(err)
	}
	final, _ := r.c.Follow(ctx, op, nil)
	if final.State != api.OpFailed || final.Error == nil || final.Error.Kind != api.KindNotFound {
		t.Fatalf("snapshot of a missing VM: %+v", final)
	}
}

// Forking names no host path: a web UI caller and a non-root socket peer
// may fork (unlike image register/build with paths).
func TestForkByUnprivilegedCallers(t *testing.T) {
	var apiH http.Handler
	cfg := testConfig(t)
	r := start(t, cfg, daemon.Options{Web: func(h http.Handler, _ daemon.VMService, _ *slog.Logger) (daemon.WebUI, error) {
		apiH = h
		return stubWeb{}, nil
	}})
	seedRunning(t, r.st, "base", "web")
	ctx := context.Background()
	op, _ := r.c.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "web", Name: "s1"})
	finish(t, r, op, nil)

	rec := httptest.NewRecorder()
	apiH.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/vms/fork", strings.NewReader(`{"source":"s1","name":"from-web"}`)))
	if rec.Code != 202 {
		t.Fatalf("fork through the web UI: %d %s", rec.Code, rec.Body)
	}

	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl: apt-get install curl")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run curl as uid 65534")
	}
	// Let uid 65534 reach the socket, as the banger group would.
	for p := filepath.Dir(cfg.SocketPath); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(cfg.SocketPath, 0o666); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(curl, "-sS", "--unix-socket", cfg.SocketPath, "-X", "POST", "--data-binary",
		`{"source":"s1","name":"from-nobody"}`, "-w", "\n%{http_code}", "http://banger/v1/vms/fork")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl as uid 65534: %v: %s", err, out)
	}
	s := strings.TrimSpace(string(out))
	if !strings.HasSuffix(s, "\n202") {
		t.Fatalf("fork as uid 65534: %s, want 202", s)
	}
	var o api.Operation
	if err := json.Unmarshal([]byte(s[:strings.LastIndex(s, "\n")]), &o); err != nil {
		t.Fatal(err)
	}
	finish(t, r, o, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := r.st.GetVM(ctx, "from-nobody"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the fork of uid 65534 made no VM: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("uid 65534 forked: %s", s)
}
