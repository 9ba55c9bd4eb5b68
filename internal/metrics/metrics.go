// Package metrics is banger's Prometheus exposition: the metric definitions,
// a private registry (never the global default) with the Go and process
// collectors, and the text-format handler the daemon serves on its socket
// (GET /v1/metrics), the web UI on /metrics (behind its token) and, when
// metrics_listen is set, a listener of its own.
//
// Two kinds of metrics live here:
//   - Read at scrape time, so never stale: VMs by state (from the store)
//     and per-VM CPU, memory, disk and network counters (the stats loop's
//     latest sample of each running VM). A VM's series disappear with it:
//     they exist only while its record says running.
//   - Recorded as work happens, through plain methods (no caller imports
//     Prometheus): operations by kind and outcome (OperationDone) and stage
//     durations by operation kind and stage (StageDone, or a Reporter
//     wrapping an operation's progress.Reporter).
//
// Label values are bounded: operation kinds and stage names are constants
// in the code, VM names come from the store and go away on delete.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"banger/internal/api"
	"banger/internal/progress"
)

const namespace = "banger"

// Operation outcomes (the outcome label of banger_operations_total).
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeCancelled = "cancelled"
)

// StageBuckets are the stage-duration histogram's upper bounds in seconds:
// from a store write (milliseconds) to a debootstrap (many minutes).
var StageBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// VMLister lists the VM records (implemented by store.Store).
type VMLister interface {
	ListVMs(ctx context.Context) ([]api.VM, error)
}

// StatsSource returns the stats loop's latest sample of each VM it sampled
// (implemented by vm.Manager). It must not sample on the caller's time.
type StatsSource interface {
	LatestStats() []api.VMStats
}

// Options configures New. VMs is required.
type Options struct {
	VMs VMLister
	// Stats, when set, adds the per-VM series.
	Stats StatsSource
	// Version is reported by banger_build_info.
	Version string
	// ScrapeTimeout bounds the store read of one scrape (default 5s).
	ScrapeTimeout time.Duration
}

// Metrics owns the registry and the metrics recorded as work happens. Its
// methods are safe for concurrent use.
type Metrics struct {
	reg     *prometheus.Registry
	ops     *prometheus.CounterVec
	stages  *prometheus.HistogramVec
	handler http.Handler
}

// New builds the registry: Go and process collectors, build info, the
// scrape-time VM collector and the operation and stage metrics. The
// vm.create and vm.delete outcomes start at zero so that they exist (and
// rate() works) before the first operation.
func New(o Options) *Metrics {
	if o.ScrapeTimeout <= 0 {
		o.ScrapeTimeout = 5 * time.Second
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "operations_total",
			Help: "Finished long operations (vm.create, vm.delete, image.build, …) by kind and outcome.",
		}, []string{"kind", "outcome"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "stage_duration_seconds",
			Help:    "Duration of each stage of an operation (allocate, system disk, work disk, network, engine, boot, agent ready, …).",
			Buckets: StageBuckets,
		}, []string{"operation", "stage", "outcome"}),
	}
	for _, kind := range []string{"vm.create", "vm.delete"} {
		for _, out := range []string{OutcomeSucceeded, OutcomeFailed} {
			m.ops.WithLabelValues(kind, out)
		}
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the version label is bangerd's build.",
		ConstLabels: prometheus.Labels{"version": o.Version},
	})
	build.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build, m.ops, m.stages,
		newVMCollector(o.VMs, o.Stats, o.ScrapeTimeout),
	)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	})
	return m
}

// Handler serves the registry in the Prometheus text format (or whatever
// the scraper negotiates). It does no authentication: callers put it behind
// theirs.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Registry is the private registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// OperationDone counts a finished operation of kind ("vm.create") with its
// error (nil: succeeded; a cancelled context: cancelled; else failed).
func (m *Metrics) OperationDone(kind string, err error) {
	m.ops.WithLabelValues(kind, outcome(err)).Inc()
}

// StageDone records the duration of one stage of an operation of kind.
func (m *Metrics) StageDone(kind, stage string, d time.Duration, err error) {
	out := api.StageOK
	if err != nil {
		out = api.StageFailed
	}
	m.stages.WithLabelValues(kind, stage, out).Observe(d.Seconds())
}

func outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeSucceeded
	case errors.Is(err, context.Canceled):
		return OutcomeCancelled
	}
	return OutcomeFailed
}

// Reporter wraps rep (an operation's reporter) so that every stage it
// reports is also timed into banger_stage_duration_seconds under kind.
func (m *Metrics) Reporter(kind string, rep progress.Reporter) progress.Reporter {
	return &stageTimer{Reporter: rep, m: m, kind: kind}
}

// stageLabel is a stage's metric label: a fork of several children names
// its stages "<child>: <stage>", and child names must not become label
// values (one series each, without bound).
func stageLabel(name string) string {
	if i := strings.LastIndex(name, ": "); i >= 0 {
		return name[i+2:]
	}
	return name
}

type stageTimer struct {
	progress.Reporter
	m    *Metrics
	kind string
}

func (s *stageTimer) Stage(name string) func(error) {
	start := time.Now()
	done := s.Reporter.Stage(name)
	var once sync.Once
	return func(err error) {
		once.Do(func() { s.m.StageDone(s.kind, stageLabel(name), time.Since(start), err) })
		done(err)
	}
}
