package client

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// NetPolicy is GET /v1/vms/{name}/policy.
func (c *Client) NetPolicy(ctx context.Context, name string) (api.NetStatus, error) {
	return get[api.NetStatus](ctx, c, "/v1/vms/"+esc(name)+"/policy")
}

// SetNetPolicy is PUT /v1/vms/{name}/policy.
func (c *Client) SetNetPolicy(ctx context.Context, name string, p api.NetPolicy) (api.NetStatus, error) {
	var st api.NetStatus
	return st, c.call(ctx, http.MethodPut, "/v1/vms/"+esc(name)+"/policy", nil, api.SetNetPolicyRequest{Policy: p}, &st)
}

// KnownHosts is POST /v1/vms/{name}/known-hosts: the daemon learns the
// VM's SSH host keys through its agent and writes its known_hosts file.
func (c *Client) KnownHosts(ctx context.Context, name string) (api.KnownHosts, error) {
	var kh api.KnownHosts
	return kh, c.call(ctx, http.MethodPost, "/v1/vms/"+esc(name)+"/known-hosts", nil, nil, &kh)
}
