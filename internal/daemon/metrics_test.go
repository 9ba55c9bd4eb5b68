package daemon_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
	"banger/internal/store"
	"banger/internal/web"
)

// storeVMs is a fake VM service that keeps its VMs in the daemon's real
// store (so the by-state gauge sees them) and a stats sample per VM (as the
// vm.Manager's stats loop does).
type storeVMs struct {
	*daemontest.VMs
	mu sync.Mutex
	// stats by VM name; guarded by mu
	stats map[string]api.VMStats
}

func newStoreVMs() *storeVMs {
	f := &storeVMs{stats: map[string]api.VMStats{}}
	f.VMs = &daemontest.VMs{CreateFunc: f.create}
	return f
}

// create runs the real create's first stages; a VM named "bad" fails at boot.
func (f *storeVMs) create(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
	done := rep.Stage("allocate")
	img, err := f.Store.GetImage(ctx, "img")
	if err != nil {
		done(err)
		return api.VM{}, err
	}
	v := api.VM{Name: req.Name, ImageID: img.ID, ImageName: img.Name, VCPUs: 1, MemoryMiB: 256}
	err = f.Store.CreateVM(ctx, &v, store.Alloc{Subnet: config.Default().Subnet})
	done(err)
	if err != nil {
		return api.VM{}, err
	}
	done = rep.Stage("boot")
	time.Sleep(5 * time.Millisecond)
	if req.Name == "bad" {
		err := errors.New("no console")
		done(err)
		_ = f.Store.DeleteVM(ctx, v.ID)
		return api.VM{}, err
	}
	done(nil)
	v.Runtime.State = api.VMRunning
	if err := f.Store.UpdateVM(ctx, v); err != nil {
		return api.VM{}, err
	}
	f.mu.Lock()
	f.stats[v.Name] = api.VMStats{Name: v.Name, CPUSeconds: 3.25, RSSBytes: 64 << 20, NetRxBytes: 7}
	f.mu.Unlock()
	return v, nil
}

func (f *storeVMs) Delete(ctx context.Context, name string, rep progress.Reporter) error {
	done := rep.Stage("record")
	v, err := f.Store.GetVM(ctx, name)
	if err == nil {
		err = f.Store.DeleteVM(ctx, v.ID)
	}
	done(err)
	f.mu.Lock()
	delete(f.stats, name)
	f.mu.Unlock()
	return err
}

func (f *storeVMs) LatestStats() []api.VMStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.VMStats
	for _, s := range f.stats {
		out = append(out, s)
	}
	return out
}

func parseMetrics(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parsing metrics: %v", err)
	}
	return fams
}

// sample returns the value of a counter or gauge (or a histogram's count)
// of family name whose labels include want; -1 when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if got[want[i]] != want[i+1] {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

// The metrics scraped over real HTTP from the web UI (with its token), the
// socket and metrics_listen follow VMs being created, failing and deleted.
func TestMetricsFollowVMs(t *testing.T) {
	cfg := testConfig(t)
	cfg.MetricsListen = "127.0.0.1:0"
	fake := newStoreVMs()
	tokenPath := filepath.Join(t.TempDir(), "web.token")
	var ui *web.Server
	r := start(t, cfg, daemon.Options{
		Services: func(st *store.Store, log *slog.Logger) (daemon.Services, error) {
			fake.Store = st
			return daemon.Services{VMs: fake, Images: &daemontest.Images{Store: st}, Snapshots: &daemontest.Snapshots{Store: st}}, nil
		},
		Web: func(apiHandler http.Handler, vms daemon.VMService, log *slog.Logger) (daemon.WebUI, error) {
			s, err := web.New(web.Options{Listen: "127.0.0.1:0", TokenPath: tokenPath, API: apiHandler, Log: log})
			ui = s
			return s, err
		},
	})
	ctx := context.Background()
	if err := r.st.CreateImage(ctx, &api.Image{Name: "img", Source: "register", Engines: []string{"qemu"}}); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	webURL := "http://" + ui.Addr().String() + "/metrics"
	scrapeWeb := func() map[string]*dto.MetricFamily {
		t.Helper()
		req, _ := http.NewRequest("GET", webURL, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return parseMetrics(t, resp.Body)
	}
	wait := func(op api.Operation, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := r.c.Follow(c, op, nil); err != nil && !strings.Contains(err.Error(), "no console") {
			t.Fatalf("following %s: %v", op.Kind, err)
		}
	}

	fams := scrapeWeb()
	for name, typ := range map[string]dto.MetricType{
		"banger_vms": dto.MetricType_GAUGE, "banger_operations_total": dto.MetricType_COUNTER,
		"banger_stage_duration_seconds": dto.MetricType_HISTOGRAM, "go_goroutines": dto.MetricType_GAUGE,
		"process_cpu_seconds_total": dto.MetricType_COUNTER, "banger_build_info": dto.MetricType_GAUGE,
	} {
		if f := fams[name]; name != "banger_stage_duration_seconds" && (f == nil || f.GetType() != typ) {
			t.Errorf("family %s = %v, want type %v", name, f, typ)
		}
	}
	if got := sample(fams, "banger_vms", "state", "running"); got != 0 {
		t.Errorf("running before any create = %v", got)
	}
	if got := sample(fams, "banger_operations_total", "kind", "vm.create", "outcome", "succeeded"); got != 0 {
		t.Errorf("vm.create succeeded before any create = %v, want an initialised 0", got)
	}

	wait(r.c.CreateVM(ctx, api.VMCreateRequest{Name: "one"}))
	wait(r.c.CreateVM(ctx, api.VMCreateRequest{Name: "two"}))
	wait(r.c.CreateVM(ctx, api.VMCreateRequest{Name: "bad"}))
	fams = scrapeWeb()
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"banger_vms", []string{"state", "running"}, 2},
		{"banger_operations_total", []string{"kind", "vm.create", "outcome", "succeeded"}, 2},
		{"banger_operations_total", []string{"kind", "vm.create", "outcome", "failed"}, 1},
		{"banger_stage_duration_seconds", []string{"operation", "vm.create", "stage", "allocate", "outcome", "ok"}, 3},
		{"banger_stage_duration_seconds", []string{"operation", "vm.create", "stage", "boot", "outcome", "ok"}, 2},
		{"banger_stage_duration_seconds", []string{"operation", "vm.create", "stage", "boot", "outcome", "failed"}, 1},
		{"banger_vm_cpu_seconds_total", []string{"vm", "one"}, 3.25},
		{"banger_vm_memory_rss_bytes", []string{"vm", "two"}, 64 << 20},
		{"banger_vm_network_receive_bytes_total", []string{"vm", "one"}, 7},
	}
	for _, c := range checks {
		if got := sample(fams, c.name, c.labels...); got != c.want {
			t.Errorf("after creates: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	wait(r.c.DeleteVM(ctx, "one"))
	fams = scrapeWeb()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"banger_vms", []string{"state", "running"}, 1},
		{"banger_operations_total", []string{"kind", "vm.delete", "outcome", "succeeded"}, 1},
		{"banger_stage_duration_seconds", []string{"operation", "vm.delete", "stage", "record"}, 1},
		{"banger_vm_cpu_seconds_total", []string{"vm", "one"}, -1}, // gone with the VM
		{"banger_vm_memory_rss_bytes", []string{"vm", "one"}, -1},
		{"banger_vm_cpu_seconds_total", []string{"vm", "two"}, 3.25},
	} {
		if got := sample(fams, c.name, c.labels...); got != c.want {
			t.Errorf("after delete: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// The same text on the socket and on metrics_listen (no token there).
	resp := rawRequest(t, cfg.SocketPath, "GET", "/v1/metrics", nil, "")
	if resp.StatusCode != 200 || sample(parseMetrics(t, resp.Body), "banger_vms", "state", "running") != 1 {
		t.Errorf("GET /v1/metrics on the socket: %d", resp.StatusCode)
	}
	addr := r.d.MetricsAddr()
	if addr == nil {
		t.Fatal("metrics_listen 127.0.0.1:0 did not open")
	}
	lresp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer lresp.Body.Close()
	if lresp.StatusCode != 200 || sample(parseMetrics(t, lresp.Body), "banger_vm_cpu_seconds_total", "vm", "two") != 3.25 {
		t.Errorf("metrics_listen: %d", lresp.StatusCode)
	}
}

// Without the web UI's token, or with a wrong one, /metrics answers 401 and
// nothing of the metrics.
func TestMetricsNeedWebToken(t *testing.T) {
	tokenPath := filepath.Join(t.TempDir(), "web.token")
	var ui *web.Server
	start(t, testConfig(t), daemon.Options{
		Web: func(apiHandler http.Handler, vms daemon.VMService, log *slog.Logger) (daemon.WebUI, error) {
			s, err := web.New(web.Options{Listen: "127.0.0.1:0", TokenPath: tokenPath, API: apiHandler, Log: log})
			ui = s
			return s, err
		},
	})
	for _, auth := range []string{"", "Bearer wrong", "Bearer "} {
		req, _ := http.NewRequest("GET", "http://"+ui.Addr().String()+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("auth %q: %d, want 401", auth, resp.StatusCode)
		}
		for _, leak := range []string{"banger_", "go_", "process_", "# HELP", "# TYPE"} {
			if strings.Contains(string(body), leak) {
				t.Errorf("auth %q: 401 body leaks %q: %s", auth, leak, body)
			}
		}
	}
}
