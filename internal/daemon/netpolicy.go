package daemon

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// NetPolicyService reads and changes VMs' egress policies (vm.Manager). It
// is separate from VMService so that fakes of VMService need not have it.
type NetPolicyService interface {
	NetPolicy(ctx context.Context, name string) (api.NetStatus, error)
	SetNetPolicy(ctx context.Context, name string, p api.NetPolicy) (api.NetStatus, error)
}

func (d *Daemon) netPolicies() (NetPolicyService, error) {
	s, ok := d.vms.(NetPolicyService)
	if !ok {
		return nil, api.Unavailable("this daemon has no network policies")
	}
	return s, nil
}

// getNetPolicy serves GET /v1/vms/{name}/policy.
func (d *Daemon) getNetPolicy(w http.ResponseWriter, r *http.Request) error {
	s, err := d.netPolicies()
	if err != nil {
		return err
	}
	return serveNamed(w, r, s.NetPolicy)
}

// setNetPolicy serves PUT /v1/vms/{name}/policy (api.SetNetPolicyRequest).
func (d *Daemon) setNetPolicy(w http.ResponseWriter, r *http.Request) error {
	s, err := d.netPolicies()
	if err != nil {
		return err
	}
	var req api.SetNetPolicyRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	st, err := s.SetNetPolicy(r.Context(), r.PathValue("name"), req.Policy)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// HostKeyService learns VMs' SSH host keys (vm.Manager); separate from
// VMService like NetPolicyService.
type HostKeyService interface {
	KnownHosts(ctx context.Context, name string) (api.KnownHosts, error)
}

// knownHosts serves POST /v1/vms/{name}/known-hosts.
func (d *Daemon) knownHosts(w http.ResponseWriter, r *http.Request) error {
	s, ok := d.vms.(HostKeyService)
	if !ok {
		return api.Unavailable("this daemon cannot learn ssh host keys")
	}
	return serveNamed(w, r, s.KnownHosts)
}
