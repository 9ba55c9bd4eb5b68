package web

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// GET /metrics reaches the API's /v1/metrics behind the token; without it
// (or with a wrong one) the answer is 401 and carries no metric.
func TestMetricsBehindToken(t *testing.T) {
	s, _ := newTestServer(t, Options{})
	url := "http://" + s.Addr().String() + "/metrics"
	tests := []struct {
		name   string
		header map[string]string
		status int
		want   string
	}{
		{"no token", nil, 401, `"kind":"Unauthenticated"`},
		{"wrong bearer", map[string]string{"Authorization": "Bearer nope"}, 401, "missing or wrong"},
		{"wrong cookie", map[string]string{"Cookie": CookieName + "=nope"}, 401, "missing or wrong"},
		{"bearer", map[string]string{"Authorization": "Bearer " + s.token}, 200, `"path":"/v1/metrics"`},
		{"cookie is no credential", map[string]string{"Cookie": CookieName + "=" + s.token}, 401, "missing or wrong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", url, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
				t.Fatalf("GET /metrics: %d %s, want %d containing %q", resp.StatusCode, body, tt.status, tt.want)
			}
			if tt.status == 401 && (strings.Contains(string(body), "banger_") || strings.Contains(string(body), "/v1/metrics")) {
				t.Fatalf("401 body leaks: %s", body)
			}
		})
	}
}
