package daemon_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
)

type stubWeb struct{}

func (stubWeb) Serve() error                   { return nil }
func (stubWeb) Shutdown(context.Context) error { return nil }
func (stubWeb) LoginURL() string               { return "http://127.0.0.1:1/login?token=x" }

// Requests through the web UI (the daemon's handler called in-process, no
// socket peer) may not name host files: they are treated as unprivileged.
// Uploaded files are accepted from them; a root socket peer may still
// name paths (test/attack covers a non-root peer).
func TestHostPathsNeedRootPeer(t *testing.T) {
	var builds []api.ImageBuildRequest
	images := &daemontest.Images{BuildFunc: func(_ context.Context, req api.ImageBuildRequest, _ progress.Reporter) (api.Image, error) {
		builds = append(builds, req)
		return api.Image{}, api.Unavailable("test")
	}}
	var apiH http.Handler
	r := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(nil, images),
		Web: func(h http.Handler, _ daemon.VMService, _ *slog.Logger) (daemon.WebUI, error) {
			apiH = h
			return stubWeb{}, nil
		}})
	post := func(path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		apiH.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)))
		return rec
	}
	for path, body := range map[string]string{
		"/v1/images/build":    `{"name":"x","from":"base","script":"/etc/shadow"}`,
		"/v1/images/register": `{"name":"x","kernel":"/etc/shadow","initrd":"/etc/shadow","rootfs":"/etc/shadow"}`,
	} {
		rec := post(path, body)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), "a web UI caller may not") {
			t.Errorf("POST %s through the web: %d %s, want 400 refusing the web caller", path, rec.Code, rec.Body)
		}
	}
	if rec := post("/v1/images/build", `{"name":"x","from":"base","script_file":{"name":"s.sh","data":"IyEvYmluL3NoCg=="}}`); rec.Code != 202 {
		t.Errorf("uploaded script through the web: %d %s, want 202", rec.Code, rec.Body)
	}
	// Root through the socket names a path: accepted.
	if _, err := r.c.BuildImage(context.Background(), api.ImageBuildRequest{Name: "y", From: "base", Script: "/bin/true"}); err != nil {
		t.Fatalf("root peer: %v", err)
	}
	big := `{"name":"x","from":"base","script_file":{"name":"s","data":"` + strings.Repeat("A", api.MaxBuildBody) + `"}}`
	if rec := post("/v1/images/build", big); rec.Code != 400 || !strings.Contains(rec.Body.String(), "larger than") {
		t.Errorf("a body over the limit: %d %.200s", rec.Code, rec.Body)
	}
}
