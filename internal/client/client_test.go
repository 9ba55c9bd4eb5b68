package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
)

func TestUnreachableIsUnavailableWithFix(t *testing.T) {
	dir := t.TempDir()
	c := New(filepath.Join(dir, "missing.sock"))
	_, err := c.Status(context.Background())
	if !api.IsUnavailable(err) {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if ae := api.AsError(err); ae.FixLine() != "banger daemon start" || ae.Action == nil || ae.Action.Verb != "daemon start" {
		t.Fatalf("fix = %q, action %+v", ae.FixLine(), ae.Action)
	}
	if _, err := c.Exec(context.Background(), "a"); !api.IsUnavailable(err) {
		t.Fatalf("exec err = %v", err)
	}
}

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		wantKind api.Kind
		wantMsg  string
	}{
		{"api error", 404, `{"kind":"NotFound","message":"vm \"a\" not found","fix":"banger vm list"}`, api.KindNotFound, `vm "a" not found`},
		{"plain text 404", 404, "404 page not found", api.KindNotFound, "bangerd: 404 page not found"},
		{"empty 503", 503, "", api.KindUnavailable, "bangerd: 503 Service Unavailable"},
		{"odd status", 418, "teapot", api.KindInternal, "bangerd: teapot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Status: fmt.Sprintf("%d %s", tt.status, http.StatusText(tt.status)),
				Body: io.NopCloser(strings.NewReader(tt.body))}
			err := decodeError(resp)
			ae := api.AsError(err)
			if ae.Kind != tt.wantKind || ae.Message != tt.wantMsg {
				t.Fatalf("got %+v", ae)
			}
		})
	}
}

func TestEnsureDaemonMissingBinary(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SocketPath = filepath.Join(dir, "bangerd.sock")
	var stderr bytes.Buffer
	_, err := EnsureDaemon(context.Background(), cfg, &stderr)
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "cannot find bangerd") ||
		!strings.Contains(err.Error(), "make install") {
		t.Fatalf("err = %v", err)
	}
}

// TestEnsureDaemonStartsDetached lets EnsureDaemon start "bangerd" from
// PATH — this test binary re-executed as a real daemon (see TestMain) — and
// checks it runs in its own session and answers.
func TestEnsureDaemonStartsDetached(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "bangerd")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv(testDaemonEnv, "1")

	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SocketPath = filepath.Join(dir, "run", "bangerd.sock")
	cfg.Path = filepath.Join(dir, "config.toml")
	toml := fmt.Sprintf("state_dir = %q\nsocket_path = %q\n", cfg.StateDir, cfg.SocketPath)
	if err := os.WriteFile(cfg.Path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	ctx := context.Background()
	c, err := EnsureDaemon(ctx, cfg, &stderr)
	if err != nil {
		t.Fatalf("EnsureDaemon: %v\nstderr: %s", err, stderr.String())
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Shutdown(context.Background())
		for range 100 {
			if _, err := os.Stat(cfg.SocketPath); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscallKill(st.PID)
		t.Error("bangerd did not remove its socket after shutdown")
	})
	if !strings.Contains(stderr.String(), "starting bangerd (socket "+cfg.SocketPath+" did not answer)") {
		t.Fatalf("stderr = %q", stderr.String())
	}
	if st.ConfigPath != cfg.Path || st.PID == os.Getpid() {
		t.Fatalf("status = %+v", st)
	}
	sid, err := sessionID(st.PID)
	if err != nil {
		t.Fatal(err)
	}
	if sid != st.PID {
		t.Fatalf("bangerd session = %d, want its own (%d)", sid, st.PID)
	}
	// A second EnsureDaemon finds it running and says nothing.
	stderr.Reset()
	if _, err := EnsureDaemon(ctx, cfg, &stderr); err != nil || stderr.Len() != 0 {
		t.Fatalf("second EnsureDaemon: %v, stderr %q", err, stderr.String())
	}
}

func TestEnsureDaemonReportsEarlyExit(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	self, _ := os.Executable()
	os.MkdirAll(bin, 0o755)
	if err := os.Symlink(self, filepath.Join(bin, "bangerd")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	t.Setenv(testDaemonEnv, "1")
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SocketPath = filepath.Join(dir, "bangerd.sock")
	cfg.Path = filepath.Join(dir, "config.toml")
	os.WriteFile(cfg.Path, []byte("state_dir = [oops\n"), 0o600)
	var stderr bytes.Buffer
	_, err := EnsureDaemon(context.Background(), cfg, &stderr)
	if !api.IsUnavailable(err) || !strings.Contains(err.Error(), "exited while starting") ||
		!strings.Contains(err.Error(), "bangerd.out") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

// TestEnsureDaemonWaitsForAStartingDaemon: a daemon that holds its socket but
// answers only after its start-up steps (queued connections wait in the
// backlog) is waited for, not reported as "context deadline exceeded" and
// not started a second time (this failed the live promote test: the daemon's
// start-up image upgrade took a few seconds).
func TestEnsureDaemonWaitsForAStartingDaemon(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir) // no bangerd to start: a second start would fail
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SocketPath = filepath.Join(dir, "bangerd.sock")
	ln, err := net.Listen("unix", cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"version":"dev","pid":1}`)
	})}
	// Serve only after 3 s: the first probe (2 s) and a poll (1 s) time out.
	go func() { time.Sleep(3 * time.Second); srv.Serve(ln) }()
	defer srv.Close()
	var stderr bytes.Buffer
	start := time.Now()
	if _, err := EnsureDaemon(context.Background(), cfg, &stderr); err != nil {
		t.Fatalf("EnsureDaemon on a starting daemon: %v (after %s)", err, time.Since(start))
	}
	if strings.Contains(stderr.String(), "starting bangerd") {
		t.Errorf("started a second daemon: %q", stderr.String())
	}
}
