// Package daemon is bangerd's server: it owns the state directory (under an
// exclusive lock), the SQLite store, the log file and the Unix socket, and
// serves the versioned JSON API (/v1/...) from one route table of thin
// handlers. The work itself lives behind VMService, ImageService and SnapshotService.
//
// Long operations (vm create/start/stop/restart/delete, image
// create/register) run in goroutines with a context derived from the daemon's
// lifetime, never from the request, and are followed through internal/ops.
//
// The daemon must never be a parent that takes VMs down with it: engines are
// started detached (setsid) by the services, and bangerd itself ignores
// SIGHUP (cmd/bangerd), so closing the terminal that started it changes
// nothing. SIGTERM/SIGINT (cancelling Run's context) and POST /v1/shutdown
// shut it down cleanly: stop accepting, give in-flight requests and
// operations a short grace period, close the store, release the lock and
// remove the socket.
//
// It must not know how VMs, disks or images work: it maps requests to the
// services and errors to statuses, and checks the client's API version
// (api.SameMajor).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/metrics"
	"banger/internal/ops"
	"banger/internal/revert"
	"banger/internal/store"
)

// Services are the work behind the API. Cleanup (may be nil) runs at
// shutdown before the store closes.
type Services struct {
	VMs       VMService
	Images    ImageService
	Snapshots SnapshotService
	Cleanup   func()
}

// ServicesFunc builds the services once the store is open.
type ServicesFunc func(st *store.Store, log *slog.Logger) (Services, error)

// Options configures a Daemon. The services are required: either VMs,
// Images and Snapshots, or Services (called after the store opens; its
// non-nil results replace them). New fails when any service is missing.
type Options struct {
	VMs       VMService
	Images    ImageService
	Snapshots SnapshotService
	Services  ServicesFunc
	// LogOutput receives the log in addition to cfg.LogPath() (os.Stderr when
	// running in the foreground).
	LogOutput io.Writer
	// Version is the build version reported in BuildHeader and /v1/status.
	Version string
	// ShutdownGrace bounds how long shutdown waits for in-flight requests
	// and for cancelled operations to revert (default 10s).
	ShutdownGrace time.Duration
	// Web, when set, builds the browser UI served beside the socket
	// (cmd/bangerd passes internal/web); nil leaves it off.
	Web WebFunc
}

// Daemon is a running bangerd. Create it with New (which takes the lock and
// opens the socket), then call Run.
type Daemon struct {
	cfg     config.Config
	opts    Options
	log     *slog.Logger
	store   *store.Store
	vms     VMService
	images  ImageService
	snaps   SnapshotService
	tracker *ops.Tracker
	started time.Time

	lock     *flock.Flock
	logFile  *os.File
	ln       net.Listener
	srv      *http.Server
	cleanup  func()
	closeAll func() // releases everything New acquired, in reverse order
	web      WebUI  // nil when off or failed (webErr says why)
	webErr   error

	metrics    *metrics.Metrics
	metricsLn  net.Listener // metrics_listen; nil when off or failed
	metricsSrv *http.Server

	// opsCtx is the parent of every operation's context; cancelled at shutdown.
	opsCtx    context.Context
	opsCancel context.CancelFunc
	opsWG     sync.WaitGroup
	// reqCtx is the base context of requests; cancelled at shutdown to wake
	// long-polls, log follows and exec pipes.
	reqCtx    context.Context
	reqCancel context.CancelFunc

	shutdownOnce sync.Once
	shutdownReq  chan struct{} // closed by POST /v1/shutdown
	closeOnce    sync.Once
	webOnce      sync.Once
}

// New acquires the daemon's resources in order: state dir (0700), exclusive
// lock on cfg.LockPath() (a second daemon fails naming the holder's pid and
// changes nothing), store, log file (0600), the Unix socket (before the
// services, so a daemon that cannot serve touches nothing), then services
// (both required). On error everything acquired so far is released.
func New(cfg config.Config, opts Options) (*Daemon, error) {
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	d := &Daemon{cfg: cfg, opts: opts, vms: opts.VMs, images: opts.Images, snaps: opts.Snapshots,
		tracker: ops.NewTracker(0), started: time.Now().UTC(), shutdownReq: make(chan struct{})}
	r := revert.New()
	defer r.Fail()

	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, api.FailedPrecondition("creating state dir %s: %w", cfg.StateDir, err).
			WithFix("check state_dir in " + cfg.Path + " and its parent's permissions")
	}
	lock, err := acquireLock(cfg.LockPath())
	if err != nil {
		return nil, err
	}
	d.lock = lock
	r.Add(func() { _ = lock.Unlock() })

	ctx := context.Background()
	st, err := store.Open(ctx, cfg.DBPath())
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	d.store = st
	r.Add(func() { _ = st.Close() })

	if err := d.openLog(); err != nil {
		return nil, err
	}
	r.Add(func() { _ = d.logFile.Close() })

	ln, err := listen(cfg.SocketPath)
	if err != nil {
		return nil, err
	}
	d.ln = ln
	r.Add(func() { _ = ln.Close(); _ = os.Remove(cfg.SocketPath) })

	// Connections queue in the socket's backlog until Run serves them.
	if opts.Services != nil {
		svc, err := opts.Services(st, d.log)
		if err != nil {
			return nil, fmt.Errorf("starting services: %w", err)
		}
		if svc.VMs != nil {
			d.vms = svc.VMs
		}
		if svc.Images != nil {
			d.images = svc.Images
		}
		if svc.Snapshots != nil {
			d.snaps = svc.Snapshots
		}
		d.cleanup = svc.Cleanup
		if svc.Cleanup != nil {
			r.Add(svc.Cleanup)
		}
	}
	if d.vms == nil || d.images == nil || d.snaps == nil {
		return nil, errors.New("starting daemon: a VM service, an image service and a snapshot service are required")
	}

	d.initMetrics()
	if d.metricsLn != nil {
		r.Add(func() { d.stopMetrics(context.Background()) })
	}

	d.opsCtx, d.opsCancel = context.WithCancel(context.Background())
	d.reqCtx, d.reqCancel = context.WithCancel(context.Background())
	d.srv = &http.Server{
		Handler:           d.routes(),
		BaseContext:       func(net.Listener) context.Context { return d.reqCtx },
		ConnContext:       peerContext,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	d.startWeb()
	if d.web != nil {
		r.Add(func() { d.stopWeb(context.Background()) })
	}
	closers := r.Clone()
	d.closeAll = closers.Fail
	r.Success()
	d.log.Info("bangerd started", "version", opts.Version, "pid", os.Getpid(),
		"socket", cfg.SocketPath, "state_dir", cfg.StateDir)
	return d, nil
}

func (d *Daemon) openLog() error {
	f, err := os.OpenFile(d.cfg.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return api.FailedPrecondition("opening log %s: %w", d.cfg.LogPath(), err).
			WithFix("check the permissions of " + d.cfg.StateDir)
	}
	d.logFile = f
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(strings.ToUpper(d.cfg.LogLevel)))
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(f, hopts)
	if d.opts.LogOutput != nil {
		h = slog.NewMultiHandler(h, slog.NewTextHandler(d.opts.LogOutput, hopts))
	}
	d.log = slog.New(h)
	return nil
}

// Logger returns the daemon's logger.
func (d *Daemon) Logger() *slog.Logger { return d.log }

// Run serves the API until ctx ends or a client asks for /v1/shutdown, then
// shuts down cleanly and releases everything New acquired. It returns nil on
// a clean shutdown.
func (d *Daemon) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- d.srv.Serve(d.ln) }()
	d.serveMetrics()
	if d.web != nil {
		go func() {
			if err := d.web.Serve(); err != nil {
				d.log.Error("web UI stopped", "err", err)
			}
		}()
	}
	var serveErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "reason", "signal or context")
	case <-d.shutdownReq:
		d.log.Info("shutting down", "reason", "shutdown request")
	case serveErr = <-errc:
		d.log.Error("serving failed", "err", serveErr)
	}
	d.shutdown()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serving %s: %w", d.cfg.SocketPath, serveErr)
	}
	return nil
}

// requestShutdown asks Run to return (POST /v1/shutdown).
func (d *Daemon) requestShutdown() {
	d.shutdownOnce.Do(func() { close(d.shutdownReq) })
}

// shutdown stops accepting, waits briefly for in-flight requests, cancels
// running operations and waits briefly for them to revert, then releases the
// services, store, log, lock and socket.
func (d *Daemon) shutdown() {
	grace, cancel := context.WithTimeout(context.Background(), d.opts.ShutdownGrace)
	defer cancel()
	d.reqCancel() // wake long-polls, follows and exec pipes
	d.stopWeb(grace)
	d.stopMetrics(grace)
	if err := d.srv.Shutdown(grace); err != nil {
		d.log.Warn("in-flight requests did not finish", "err", err)
		_ = d.srv.Close()
	}
	d.opsCancel()
	done := make(chan struct{})
	go func() { d.opsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-grace.Done():
		d.log.Warn("operations still running at shutdown")
	}
	d.log.Info("bangerd stopped")
	d.Close()
}

// stopWeb shuts the web UI down (once; later calls do nothing).
func (d *Daemon) stopWeb(ctx context.Context) {
	d.webOnce.Do(func() {
		if d.web == nil {
			return
		}
		if err := d.web.Shutdown(ctx); err != nil {
			d.log.Warn("web UI requests did not finish", "err", err)
		}
	})
}

// Close releases everything New acquired without serving; Run calls it on
// the way out. It is safe to call more than once.
func (d *Daemon) Close() {
	d.closeOnce.Do(func() {
		if d.reqCancel != nil {
			d.reqCancel()
		}
		if d.opsCancel != nil {
			d.opsCancel()
		}
		d.closeAll()
	})
}
