package daemon_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/store"
)

// policyVMs adds the NetPolicyService methods to the VMService fake.
type policyVMs struct {
	*daemontest.VMs
	got api.NetPolicy
}

func (p *policyVMs) NetPolicy(_ context.Context, name string) (api.NetStatus, error) {
	if name != "a" {
		return api.NetStatus{}, api.NotFound("vm %q not found", name)
	}
	return api.NetStatus{Policy: p.got}, nil
}

func (p *policyVMs) SetNetPolicy(_ context.Context, name string, pol api.NetPolicy) (api.NetStatus, error) {
	if pol.Mode == "bogus" {
		return api.NetStatus{}, api.Invalid("unknown network policy %q", pol.Mode)
	}
	p.got = pol
	return api.NetStatus{Policy: pol, Applied: true}, nil
}

func TestNetPolicyRoutes(t *testing.T) {
	fake := &policyVMs{VMs: &daemontest.VMs{}}
	r := start(t, testConfig(t), daemon.Options{Services: func(st *store.Store, log *slog.Logger) (daemon.Services, error) {
		svc, err := daemontest.Services(fake.VMs, nil)(st, log)
		svc.VMs = fake
		return svc, err
	}})
	for _, c := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"PUT", "/v1/vms/a/policy", `{"policy":{"mode":"allow","allow":["example.com"]}}`, 200, `"allow":["example.com"]`},
		{"GET", "/v1/vms/a/policy", "", 200, `"mode":"allow"`},
		{"PUT", "/v1/vms/a/policy", `{"policy":{"mode":"bogus"}}`, 400, `"kind":"Invalid"`},
		{"PUT", "/v1/vms/a/policy", `{"policy":{"mode":1}}`, 400, `"kind":"Invalid"`},
		{"GET", "/v1/vms/nope/policy", "", 404, `"kind":"NotFound"`},
	} {
		resp := rawRequest(t, r.cfg.SocketPath, c.method, c.path, nil, c.body)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(string(b), c.want) {
			t.Errorf("%s %s %s: %d %s, want %d with %s", c.method, c.path, c.body, resp.StatusCode, b, c.status, c.want)
		}
	}
	if fake.got.Mode != "allow" {
		t.Errorf("the bad update replaced the policy: %+v", fake.got)
	}
	// a VMService without policies answers Unavailable
	plain := start(t, testConfig(t), daemon.Options{Services: daemontest.Services(&daemontest.VMs{}, nil)})
	resp := rawRequest(t, plain.cfg.SocketPath, "GET", "/v1/vms/a/policy", nil, "")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "Unavailable") {
		t.Errorf("policy of a daemon without policies: %d %s", resp.StatusCode, b)
	}
}
