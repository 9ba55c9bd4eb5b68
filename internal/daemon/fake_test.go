package daemon_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/store"
)

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
	if inner == nil {
		inner = daemontest.Services(nil, nil)
	}
	opts.Services = func(st *store.Store, log *slog.Logger) (daemon.Services, error) {
		r.st = st
		return inner(st, log)
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
