package daemon_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/progress"
	"banger/internal/store"
)

// fakeVMs is a hand-written VMService whose behaviour each test sets.
type fakeVMs struct {
	create func(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error)
	edit   func(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error)
	exec   func(ctx context.Context, name string) (net.Conn, error)
	logs   func(ctx context.Context, name string, follow bool, w io.Writer) error
}

var _ daemon.VMService = (*fakeVMs)(nil)

func (f *fakeVMs) Create(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
	return f.create(ctx, req, rep)
}
func (f *fakeVMs) Start(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	defer rep.Stage("boot")(nil)
	return api.VM{Name: name}, nil
}
func (f *fakeVMs) Stop(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	return api.VM{Name: name}, nil
}
func (f *fakeVMs) Restart(ctx context.Context, name string, rep progress.Reporter) (api.VM, error) {
	return api.VM{Name: name}, nil
}
func (f *fakeVMs) Delete(ctx context.Context, name string, rep progress.Reporter) error { return nil }
func (f *fakeVMs) Edit(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error) {
	return f.edit(ctx, name, req)
}
func (f *fakeVMs) Detail(ctx context.Context, name string) (api.VMDetail, error) {
	return api.VMDetail{}, api.NotFound("vm %q not found", name)
}
func (f *fakeVMs) Exec(ctx context.Context, name string) (net.Conn, error) { return f.exec(ctx, name) }
func (f *fakeVMs) Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	return f.logs(ctx, name, follow, w)
}
func (f *fakeVMs) Stats(ctx context.Context, name string) (api.VMStats, error) {
	return api.VMStats{Name: name, CPUPercent: 1.5}, nil
}

// testConfig returns a config whose state and socket live in a temp dir.
func testConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = dir + "/state"
	cfg.SocketPath = dir + "/run/bangerd.sock"
	cfg.Path = dir + "/config.toml"
	return cfg
}

// running is a daemon serving in the background.
type running struct {
	d      *daemon.Daemon
	cfg    config.Config
	c      *client.Client
	st     *store.Store
	cancel context.CancelFunc
	done   chan error
}

// start runs a daemon for cfg until the test ends.
func start(t *testing.T, cfg config.Config, opts daemon.Options) *running {
	t.Helper()
	r := &running{cfg: cfg, done: make(chan error, 1)}
	inner := opts.Services
	opts.Services = func(st *store.Store, log *slog.Logger) (daemon.VMService, daemon.ImageService, func(), error) {
		r.st = st
		if inner != nil {
			return inner(st, log)
		}
		return nil, nil, nil, nil
	}
	if opts.Version == "" {
		opts.Version = "test-build"
	}
	opts.ShutdownGrace = 3 * time.Second
	d, err := daemon.New(cfg, opts)
	if err != nil {
		t.Fatalf("daemon.New: %v", err)
	}
	r.d = d
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- d.Run(ctx) }()
	r.c = client.New(cfg.SocketPath, client.WithBuild("test-build"))
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop shuts the daemon down and waits for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop within 10s")
	}
}
