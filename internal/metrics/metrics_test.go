package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"banger/internal/api"
	"banger/internal/loopback/loopbacktest"
	"banger/internal/metrics"
	"banger/internal/progress"
)

// fakeSource is a store and a stats loop in one.
type fakeSource struct {
	mu    sync.Mutex
	vms   []api.VM
	stats []api.VMStats
	err   error
}

func (f *fakeSource) ListVMs(context.Context) ([]api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.VM(nil), f.vms...), f.err
}

func (f *fakeSource) LatestStats() []api.VMStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.VMStats(nil), f.stats...)
}

func (f *fakeSource) set(vms []api.VM, stats []api.VMStats) {
	f.mu.Lock()
	f.vms, f.stats = vms, stats
	f.mu.Unlock()
}

func vm(name string, s api.VMState) api.VM {
	return api.VM{Name: name, Runtime: api.VMRuntime{State: s}}
}

// scrape GETs url and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// value returns the sample of family name whose labels include want, and
// whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	f := fams[name]
	if f == nil {
		return nil, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

func TestFamiliesAndScrapeTimeVMs(t *testing.T) {
	src := &fakeSource{}
	src.set([]api.VM{vm("a", api.VMRunning), vm("b", api.VMRunning), vm("c", api.VMStopped)},
		[]api.VMStats{
			{Name: "a", CPUSeconds: 1.5, RSSBytes: 100 << 20, DiskRead: 10, DiskWrite: 20, NetRxBytes: 30, NetTxBytes: 40},
			{Name: "c", CPUSeconds: 9}, // stopped since its last sample: no series
		})
	m := metrics.New(metrics.Options{VMs: src, Stats: src, Version: "v-test"})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	fams := scrape(t, srv.URL)
	types := map[string]dto.MetricType{
		"banger_vms":                             dto.MetricType_GAUGE,
		"banger_operations_total":                dto.MetricType_COUNTER,
		"banger_build_info":                      dto.MetricType_GAUGE,
		"banger_vm_cpu_seconds_total":            dto.MetricType_COUNTER,
		"banger_vm_memory_rss_bytes":             dto.MetricType_GAUGE,
		"banger_vm_disk_read_bytes_total":        dto.MetricType_COUNTER,
		"banger_vm_disk_written_bytes_total":     dto.MetricType_COUNTER,
		"banger_vm_network_receive_bytes_total":  dto.MetricType_COUNTER,
		"banger_vm_network_transmit_bytes_total": dto.MetricType_COUNTER,
		"go_goroutines":                          dto.MetricType_GAUGE,
		"process_resident_memory_bytes":          dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		f := fams[name]
		if f == nil {
			t.Errorf("family %s missing", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is %v, want %v", name, f.GetType(), typ)
		}
	}
	for state, want := range map[string]float64{"running": 2, "stopped": 1, "failed": 0, "creating": 0} {
		if s, ok := value(fams, "banger_vms", map[string]string{"state": state}); !ok || s.GetGauge().GetValue() != want {
			t.Errorf("banger_vms{state=%q} = %v, want %v", state, s, want)
		}
	}
	if s, ok := value(fams, "banger_vm_cpu_seconds_total", map[string]string{"vm": "a"}); !ok || s.GetCounter().GetValue() != 1.5 {
		t.Errorf("cpu of a = %v", s)
	}
	if s, ok := value(fams, "banger_vm_memory_rss_bytes", map[string]string{"vm": "a"}); !ok || s.GetGauge().GetValue() != 100<<20 {
		t.Errorf("rss of a = %v", s)
	}
	if _, ok := value(fams, "banger_vm_cpu_seconds_total", map[string]string{"vm": "c"}); ok {
		t.Errorf("stopped vm c has a cpu series")
	}
	for _, kind := range []string{"vm.create", "vm.delete"} {
		if _, ok := value(fams, "banger_operations_total", map[string]string{"kind": kind, "outcome": "failed"}); !ok {
			t.Errorf("%s failures not initialised to 0", kind)
		}
	}

	// a deleted: its series go with it; the state gauge follows the store.
	src.set([]api.VM{vm("b", api.VMRunning), vm("c", api.VMStopped)}, []api.VMStats{{Name: "a", CPUSeconds: 2}})
	fams = scrape(t, srv.URL)
	if _, ok := value(fams, "banger_vm_cpu_seconds_total", map[string]string{"vm": "a"}); ok {
		t.Errorf("deleted vm a still has series")
	}
	if s, _ := value(fams, "banger_vms", map[string]string{"state": "running"}); s.GetGauge().GetValue() != 1 {
		t.Errorf("running after delete = %v, want 1", s)
	}
}

func TestOperationsAndStages(t *testing.T) {
	m := metrics.New(metrics.Options{VMs: &fakeSource{}})
	rec := &progress.Recorder{}
	rep := m.Reporter("vm.create", rec)
	rep.Stage("allocate")(nil)
	done := rep.Stage("boot")
	time.Sleep(20 * time.Millisecond)
	done(errors.New("no console"))
	done(errors.New("twice")) // a second done is not a second observation
	m.OperationDone("vm.create", errors.New("boom"))
	m.OperationDone("vm.create", nil)
	m.OperationDone("vm.delete", fmt.Errorf("deleting: %w", context.Canceled))
	if got := rec.Names(); len(got) != 3 || got[0] != "allocate" {
		t.Errorf("the wrapped reporter saw %v", got) // Recorder keeps every done call
	}

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := scrape(t, srv.URL)
	if f := fams["banger_stage_duration_seconds"]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("stage histogram missing or not a histogram: %v", f)
	}
	h, ok := value(fams, "banger_stage_duration_seconds", map[string]string{"operation": "vm.create", "stage": "boot", "outcome": "failed"})
	if !ok || h.GetHistogram().GetSampleCount() != 1 || h.GetHistogram().GetSampleSum() < 0.02 {
		t.Errorf("boot histogram = %v, want one observation of at least 20ms", h)
	}
	if h, ok := value(fams, "banger_stage_duration_seconds", map[string]string{"stage": "allocate", "outcome": "ok"}); !ok || h.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("allocate histogram = %v", h)
	}
	for _, c := range []struct {
		kind, outcome string
		want          float64
	}{{"vm.create", "failed", 1}, {"vm.create", "succeeded", 1}, {"vm.delete", "cancelled", 1}, {"vm.delete", "failed", 0}} {
		s, ok := value(fams, "banger_operations_total", map[string]string{"kind": c.kind, "outcome": c.outcome})
		if !ok || s.GetCounter().GetValue() != c.want {
			t.Errorf("operations{%s,%s} = %v, want %v", c.kind, c.outcome, s, c.want)
		}
	}
}

// A store that cannot be read still lets the rest of the scrape through.
func TestStoreErrorKeepsTheRest(t *testing.T) {
	m := metrics.New(metrics.Options{VMs: &fakeSource{err: errors.New("db locked")}})
	rr := httptest.NewRecorder()
	m.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rr.Body)
	if err != nil {
		t.Fatal(err)
	}
	if fams["go_goroutines"] == nil || fams["banger_operations_total"] == nil {
		t.Errorf("scrape with a failing store lost the other families: %d families", len(fams))
	}
}

func TestListen(t *testing.T) {
	loopbacktest.Listen(t, metrics.Listen, "9470")
}

func TestListenerHandler(t *testing.T) {
	m := metrics.New(metrics.Options{VMs: &fakeSource{}})
	h := m.ListenerHandler(false)
	for _, c := range []struct {
		path, host string
		status     int
	}{
		{"/metrics", "127.0.0.1:9470", 200},
		{"/metrics", "localhost:9470", 200},
		{"/metrics", "evil.example:9470", 403},
		{"/v1/vms", "127.0.0.1:9470", 404},
	} {
		req := httptest.NewRequest("GET", c.path, nil)
		req.Host = c.host
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req)
		if rr.Code != c.status {
			t.Errorf("GET %s Host %s = %d, want %d", c.path, c.host, rr.Code, c.status)
		}
	}
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Host = "evil.example"
	rr := httptest.NewRecorder()
	m.ListenerHandler(true).ServeHTTP(rr, req)
	if rr.Code != 200 {
		t.Errorf("with allowRemote any Host is served, got %d", rr.Code)
	}
}
