package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"banger/internal/api"
	"banger/internal/metrics"
)

// vmLister reads VMs for the metrics scrape through the VM service.
type vmLister struct{ vms VMService }

func (l vmLister) ListVMs(ctx context.Context) ([]api.VM, error) { return l.vms.List(ctx) }

// initMetrics builds the Prometheus registry (VMs by state and per-VM
// counters, both from the VM service) and,
// when metrics_listen is set, opens its listener. A listener that cannot
// open does not stop the daemon: it is logged, and GET /v1/metrics on the
// socket and /metrics on the web UI still answer.
func (d *Daemon) initMetrics() {
	d.metrics = metrics.New(metrics.Options{VMs: vmLister{d.vms}, Stats: d.vms, Version: d.opts.Version})
	if d.cfg.MetricsListen == "" {
		return
	}
	ln, err := metrics.Listen(d.cfg.MetricsListen, d.cfg.MetricsAllowRemote)
	if err != nil {
		d.log.Error("metrics listener not started", "err", err)
		return
	}
	d.metricsLn = ln
	d.metricsSrv = &http.Server{
		Handler:           d.metrics.ListenerHandler(d.cfg.MetricsAllowRemote),
		ReadHeaderTimeout: 10 * time.Second,
	}
	d.log.Info("metrics listening", "addr", ln.Addr().String())
}

// serveMetrics serves metrics_listen until stopMetrics (no-op when off).
func (d *Daemon) serveMetrics() {
	if d.metricsSrv == nil {
		return
	}
	go func() {
		if err := d.metricsSrv.Serve(d.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics listener stopped", "err", err)
		}
	}()
}

// stopMetrics closes metrics_listen (scrapes are short: no grace needed
// beyond ctx).
func (d *Daemon) stopMetrics(ctx context.Context) {
	if d.metricsSrv == nil {
		return
	}
	if err := d.metricsSrv.Shutdown(ctx); err != nil {
		_ = d.metricsSrv.Close()
	}
	_ = d.metricsLn.Close()
}

// MetricsAddr is the address metrics_listen bound, nil when it is off.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metricsLn == nil {
		return nil
	}
	return d.metricsLn.Addr()
}

// metricsHandler is GET /v1/metrics: the Prometheus text format, on the
// socket (for `banger`) and, through the web UI's token check, on /metrics.
func (d *Daemon) metricsHandler(w http.ResponseWriter, r *http.Request) error {
	d.metrics.Handler().ServeHTTP(w, r)
	return nil
}
