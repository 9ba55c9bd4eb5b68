package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
	"banger/internal/store"
)

func TestErrorKindsRoundTrip(t *testing.T) {
	kinds := []api.Kind{api.KindNotFound, api.KindAlreadyExists, api.KindInvalid,
		api.KindFailedPrecondition, api.KindUnavailable, api.KindInternal}
	var next error
	fake := &daemontest.VMs{EditFunc: func(context.Context, string, api.VMEditRequest) (api.VM, error) { return api.VM{}, next }}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			next = fmt.Errorf("editing vm a: %w", (&api.Error{Kind: k, Message: "boom " + string(k)}).WithFix("do "+string(k)))
			_, err := r.c.EditVM(context.Background(), "a", api.VMEditRequest{VCPUs: 2})
			var ae *api.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T) is not an *api.Error", err, err)
			}
			if ae.Kind != k || !api.Is(err, k) {
				t.Fatalf("kind = %s, want %s", ae.Kind, k)
			}
			if ae.Message != "editing vm a: boom "+string(k) || ae.Fix != "do "+string(k) {
				t.Fatalf("message %q fix %q", ae.Message, ae.Fix)
			}
		})
	}
	// Errors the daemon makes itself.
	if _, err := r.c.GetImage(context.Background(), "missing"); !api.IsNotFound(err) {
		t.Fatalf("missing image: %v", err)
	}
	if _, _, err := r.c.Operation(context.Background(), "nope", 0, 0); !api.IsNotFound(err) {
		t.Fatalf("missing op: %v", err)
	}
}

// New refuses to start without both services, and leaves nothing behind:
// no socket, and the lock is free for the next daemon.
func TestNewRequiresServices(t *testing.T) {
	cfg := testConfig(t)
	for name, opts := range map[string]daemon.Options{
		"none":        {},
		"vms only":    {VMs: &daemontest.VMs{}},
		"images only": {Images: &daemontest.Images{}},
		"services without images": {Services: func(*store.Store, *slog.Logger) (daemon.Services, error) {
			return daemon.Services{VMs: &daemontest.VMs{}}, nil
		}},
		"services without snapshots": {Services: func(*store.Store, *slog.Logger) (daemon.Services, error) {
			return daemon.Services{VMs: &daemontest.VMs{}, Images: &daemontest.Images{}}, nil
		}},
		"vms and images only": {VMs: &daemontest.VMs{}, Images: &daemontest.Images{}},
	} {
		if d, err := daemon.New(cfg, opts); err == nil || !strings.Contains(err.Error(), "required") {
			if d != nil {
				d.Close()
			}
			t.Fatalf("%s: New = %v, want a required-services error", name, err)
		}
		if _, err := os.Stat(cfg.SocketPath); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: a refused daemon left its socket: %v", name, err)
		}
	}
	r := start(t, cfg, daemon.Options{})
	if _, err := r.c.Status(context.Background()); err != nil {
		t.Fatalf("a daemon with services after refused ones: %v", err)
	}
}

func TestStoreReadsAndStatus(t *testing.T) {
	r := start(t, testConfig(t), daemon.Options{})
	ctx := context.Background()
	img := &api.Image{Name: "deb", Source: "register", Engines: []string{"qemu"}}
	if err := r.st.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	imgs, err := r.c.ListImages(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].Name != "deb" {
		t.Fatalf("list images = %+v, %v", imgs, err)
	}
	got, err := r.c.GetImage(ctx, "deb")
	if err != nil || got.ID != img.ID {
		t.Fatalf("get image = %+v, %v", got, err)
	}
	st, err := r.c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Images != 1 || st.VMs != 0 || st.PID != os.Getpid() || st.Version != "test-build" || st.SocketPath != r.cfg.SocketPath {
		t.Fatalf("status = %+v", st)
	}
	if v, mismatch := r.c.VersionMismatch(); v != "test-build" || mismatch {
		t.Fatalf("version mismatch = %q %v", v, mismatch)
	}
}

func rawRequest(t *testing.T, socket, method, path string, hdr map[string]string, body string) *http.Response {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	req, _ := http.NewRequest(method, "http://banger"+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestVersionHeaders(t *testing.T) {
	r := start(t, testConfig(t), daemon.Options{})
	tests := []struct {
		name, method, path, version string
		wantStatus                  int
	}{
		{"no header", "GET", "/v1/status", "", 200},
		{"same major", "GET", "/v1/status", "1", 200},
		{"older minor", "GET", "/v1/status", "1.0", 200},
		{"this version", "GET", "/v1/status", api.APIVersion, 200},
		{"newer minor", "GET", "/v1/status", "1.9", 200},
		{"other major", "GET", "/v1/status", "2", 400},
		{"other major with minor", "GET", "/v1/status", "2.1", 400},
		{"unknown route", "GET", "/v1/nope", "1", 404},
		{"wrong method", "PUT", "/v1/status", "1", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.version != "" {
				hdr[api.VersionHeader] = tt.version
			}
			resp := rawRequest(t, r.cfg.SocketPath, tt.method, tt.path, hdr, "")
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if resp.Header.Get(api.VersionHeader) != api.APIVersion || resp.Header.Get(api.BuildHeader) != "test-build" {
				t.Fatalf("headers = %v", resp.Header)
			}
			if tt.wantStatus == 400 {
				b, _ := io.ReadAll(resp.Body)
				if !strings.Contains(string(b), `"kind":"Invalid"`) || !strings.Contains(string(b), "API version "+tt.version) ||
					!strings.Contains(string(b), "this daemon speaks "+api.APIVersion) || !strings.Contains(string(b), `"fix":"use a banger CLI from the same release`) {
					t.Fatalf("body = %s", b)
				}
			}
		})
	}
}

// A client of another build still talks to the daemon (same API major)
// and learns the daemon's build, which the CLI warns about.
func TestClientSeesBuildMismatch(t *testing.T) {
	r := start(t, testConfig(t), daemon.Options{})
	c := client.New(r.cfg.SocketPath, client.WithBuild("older-build"))
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, mismatch := c.VersionMismatch(); v != "test-build" || !mismatch {
		t.Fatalf("VersionMismatch = %q %v, want test-build true", v, mismatch)
	}
}

func TestBadBodies(t *testing.T) {
	fake := &daemontest.VMs{EditFunc: func(context.Context, string, api.VMEditRequest) (api.VM, error) { return api.VM{}, nil }}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	for _, body := range []string{`{"vcpus":"two"}`, `{"nope":1}`, `{"vcpus":1}{}`, `{`, strings.Repeat(" ", daemon.MaxRequestBody+1)} {
		resp := rawRequest(t, r.cfg.SocketPath, "PATCH", "/v1/vms/a", nil, body)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"kind":"Invalid"`) {
			t.Errorf("body %.30q: status %d %s", body, resp.StatusCode, b)
		}
	}
}

func TestSecondDaemonRefusedByLock(t *testing.T) {
	cfg := testConfig(t)
	start(t, cfg, daemon.Options{})
	second := cfg
	second.SocketPath = cfg.StateDir + "/other.sock"
	_, err := daemon.New(second, daemon.Options{})
	if err == nil {
		t.Fatal("second daemon started on the same state dir")
	}
	if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(err.Error(), want) || !api.IsFailedPrecondition(err) {
		t.Fatalf("error %q does not name %q", err, want)
	}
	if _, serr := os.Stat(second.SocketPath); !errors.Is(serr, fs.ErrNotExist) {
		t.Fatalf("second daemon left a socket: %v", serr)
	}
}

func TestSocketMode(t *testing.T) {
	r := start(t, testConfig(t), daemon.Options{})
	fi, err := os.Stat(r.cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	want := os.FileMode(0o600)
	if _, err := user.LookupGroup(daemon.SocketGroup); err == nil {
		want = 0o660
	}
	if fi.Mode().Perm() != want || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("socket mode = %v, want socket %v", fi.Mode(), want)
	}
	for _, p := range []string{r.cfg.LogPath(), r.cfg.LockPath()} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v err %v", p, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(r.cfg.StateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v err %v", fi.Mode(), err)
	}
}

func TestStaleSocketReplacedLiveRefused(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.SocketPath[:strings.LastIndex(cfg.SocketPath, "/")], 0o755); err != nil {
		t.Fatal(err)
	}
	// A live socket (someone answers): refused, and the lock is released.
	ln, err := net.Listen("unix", cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := daemon.New(cfg, daemon.Options{}); err == nil || !strings.Contains(err.Error(), "answering") {
		t.Fatalf("live socket: %v", err)
	}
	// Now make it stale: closed without unlinking.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(cfg.SocketPath); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}
	r := start(t, cfg, daemon.Options{})
	if _, err := r.c.Status(context.Background()); err != nil {
		t.Fatalf("daemon on replaced socket: %v", err)
	}
}

func TestNotASocketRefused(t *testing.T) {
	cfg := testConfig(t)
	os.MkdirAll(cfg.SocketPath[:strings.LastIndex(cfg.SocketPath, "/")], 0o755)
	os.WriteFile(cfg.SocketPath, []byte("x"), 0o600)
	if _, err := daemon.New(cfg, daemon.Options{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file at socket path: %v", err)
	}
}

func TestShutdownLeavesNoSocket(t *testing.T) {
	for _, how := range []string{"signal", "request"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig(t)
			r := start(t, cfg, daemon.Options{})
			if how == "signal" {
				r.stop(t)
			} else {
				if err := r.c.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-r.done:
					if err != nil {
						t.Fatal(err)
					}
					close(r.done)
				case <-time.After(10 * time.Second):
					t.Fatal("Run did not return after /v1/shutdown")
				}
			}
			if _, err := os.Stat(cfg.SocketPath); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("socket left behind: %v", err)
			}
			if _, err := r.c.Status(context.Background()); !api.IsUnavailable(err) {
				t.Fatalf("status after shutdown: %v", err)
			}
			// The lock and the store are released: a new daemon starts.
			r2 := start(t, cfg, daemon.Options{})
			if _, err := r2.c.Status(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestOperationStagesInOrder(t *testing.T) {
	release := make(chan struct{})
	fake := &daemontest.VMs{CreateFunc: func(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
		for _, s := range []string{"allocate", "disks", "network", "boot"} {
			done := rep.Stage(s)
			rep.Output("doing " + s)
			if s == "disks" {
				<-release // let the client start following mid-way
			}
			done(nil)
		}
		return api.VM{Name: req.Name, VCPUs: 2}, nil
	}}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	ctx := context.Background()
	op, err := r.c.CreateVM(ctx, api.VMCreateRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if op.State != api.OpRunning || op.Kind != "vm.create" || op.Target != "a" {
		t.Fatalf("begin answered %+v", op)
	}
	var finished []string
	seen := map[int]bool{}
	var lines []string
	next := 0
	calls := 0
	final, err := r.c.Follow(ctx, op, func(o api.Operation) {
		calls++
		if calls == 1 {
			close(release)
		}
		for i, s := range o.Stages {
			if s.Outcome != api.StageRunning && !seen[i] {
				seen[i] = true
				finished = append(finished, s.Name)
			}
		}
		l, n, err := r.c.OperationOutput(ctx, o.ID, next)
		if err != nil {
			t.Error(err)
		}
		lines, next = append(lines, l...), n
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(finished, ","); got != "allocate,disks,network,boot" {
		t.Fatalf("stages seen = %s", got)
	}
	if got := strings.Join(lines, ","); got != "doing allocate,doing disks,doing network,doing boot" {
		t.Fatalf("output = %s", got)
	}
	if final.State != api.OpSucceeded || !bytes.Contains(final.Result, []byte(`"vcpus":2`)) {
		t.Fatalf("final = %+v %s", final, final.Result)
	}
}

func TestOperationCancel(t *testing.T) {
	started := make(chan struct{})
	reverted := make(chan struct{})
	fake := &daemontest.VMs{CreateFunc: func(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
		done := rep.Stage("boot")
		close(started)
		<-ctx.Done()
		done(ctx.Err())
		close(reverted)
		return api.VM{}, fmt.Errorf("booting: %w", ctx.Err())
	}}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	ctx := context.Background()
	op, err := r.c.CreateVM(ctx, api.VMCreateRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if err := r.c.CancelOperation(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	final, err := r.c.Follow(ctx, op, nil)
	if err == nil || final.State != api.OpFailed || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("after cancel: %+v, %v", final, err)
	}
	select {
	case <-reverted:
	default:
		t.Fatal("work did not see the cancellation")
	}
	if final.Stages[0].Outcome != api.StageFailed {
		t.Fatalf("stage = %+v", final.Stages[0])
	}
}

func TestOperationSurvivesRequest(t *testing.T) {
	// The op's context is the daemon's, not the request's: a client that
	// disconnects right after beginning does not cancel the work.
	fake := &daemontest.VMs{CreateFunc: func(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
		select {
		case <-time.After(200 * time.Millisecond):
			return api.VM{Name: "a"}, nil
		case <-ctx.Done():
			return api.VM{}, ctx.Err()
		}
	}}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	ctx, cancel := context.WithCancel(context.Background())
	op, err := r.c.CreateVM(ctx, api.VMCreateRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	final, err := r.c.Follow(context.Background(), op, nil)
	if err != nil || final.State != api.OpSucceeded {
		t.Fatalf("final %+v err %v", final, err)
	}
}

func TestExecHijackPipe(t *testing.T) {
	fake := &daemontest.VMs{ExecFunc: func(ctx context.Context, name string) (net.Conn, error) {
		if name != "a" {
			return nil, api.NotFound("vm %q not found", name)
		}
		guest, daemonSide := net.Pipe()
		go func() { // the "agent": upper-cases each line until "exit"
			defer guest.Close()
			sc := bufio.NewScanner(guest)
			for sc.Scan() {
				if sc.Text() == "exit" {
					fmt.Fprintln(guest, "bye")
					return
				}
				fmt.Fprintln(guest, strings.ToUpper(sc.Text()))
			}
		}()
		return daemonSide, nil
	}}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	ctx := context.Background()
	if _, err := r.c.Exec(ctx, "nope"); !api.IsNotFound(err) {
		t.Fatalf("exec on missing vm: %v", err)
	}
	conn, err := r.c.Exec(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "hello\nworld\nexit\n")
	out, err := io.ReadAll(conn) // ends when the guest side closes
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "HELLO\nWORLD\nbye\n" {
		t.Fatalf("piped output = %q", out)
	}
}

func TestLogsStream(t *testing.T) {
	fake := &daemontest.VMs{LogsFunc: func(ctx context.Context, name string, opt api.LogOptions, w io.Writer) error {
		if name != "a" {
			return api.NotFound("vm %q not found", name)
		}
		fmt.Fprintln(w, "line 1")
		if !opt.Follow {
			return nil
		}
		fmt.Fprintln(w, "line 2")
		<-ctx.Done()
		return ctx.Err()
	}}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	var buf bytes.Buffer
	if err := r.c.Logs(context.Background(), "a", api.LogOptions{}, &buf); err != nil || buf.String() != "line 1\n" {
		t.Fatalf("logs = %q, %v", buf.String(), err)
	}
	if err := r.c.Logs(context.Background(), "b", api.LogOptions{}, &buf); !api.IsNotFound(err) {
		t.Fatalf("logs of missing vm: %v", err)
	}
	// follow: lines arrive while the stream is still open.
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() { r.c.Logs(ctx, "a", api.LogOptions{Follow: true}, pw); pw.Close() }()
	sc := bufio.NewScanner(pr)
	for _, want := range []string{"line 1", "line 2"} {
		if !sc.Scan() || sc.Text() != want {
			t.Fatalf("followed line = %q, want %q", sc.Text(), want)
		}
	}
	cancel()
	io.Copy(io.Discard, pr)
}

// A fix that is a banger command crosses the wire as a structured action
// beside the words.
func TestErrorActionOnTheWire(t *testing.T) {
	r := start(t, testConfig(t), daemon.Options{})
	resp := rawRequest(t, r.cfg.SocketPath, "GET", "/v1/vms/nope", nil, "")
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 404 || !strings.Contains(string(b), `"action":{"verb":"vm list"}`) {
		t.Fatalf("status %d body %s", resp.StatusCode, b)
	}
	_, err := r.c.GetVM(context.Background(), "nope")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Action == nil || ae.Action.CommandLine() != "banger vm list" {
		t.Fatalf("client error %#v", err)
	}
}

func TestLifetimeAndDiffRoutes(t *testing.T) {
	fake := &daemontest.VMs{}
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(fake, nil)})
	resp := rawRequest(t, r.cfg.SocketPath, "PATCH", "/v1/vms/nope/lifetime", nil, `{"ttl_seconds":60}`)
	if resp.StatusCode != 404 {
		t.Errorf("lifetime of a missing vm: status %d", resp.StatusCode)
	}
	resp = rawRequest(t, r.cfg.SocketPath, "PATCH", "/v1/vms/a/lifetime", nil, `{"ttl_seconds":"soon"}`)
	if resp.StatusCode != 400 {
		t.Errorf("lifetime with a bad body: status %d", resp.StatusCode)
	}
	resp = rawRequest(t, r.cfg.SocketPath, "GET", "/v1/vms/nope/diff", nil, "")
	if resp.StatusCode != 404 {
		t.Errorf("diff of a missing vm: status %d", resp.StatusCode)
	}
}
