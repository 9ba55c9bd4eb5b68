package client

import (
	"context"
	"net/http"
	"strconv"

	"banger/internal/api"
)

// AddForward is POST /v1/vms/{name}/forwards: a daemon-held port forward.
func (c *Client) AddForward(ctx context.Context, name string, req api.ForwardRequest) (api.Forward, error) {
	var f api.Forward
	return f, c.call(ctx, http.MethodPost, "/v1/vms/"+esc(name)+"/forwards", nil, req, &f)
}

// RemoveForward is DELETE /v1/vms/{name}/forwards/{port}.
func (c *Client) RemoveForward(ctx context.Context, name string, hostPort int) error {
	return c.call(ctx, http.MethodDelete, "/v1/vms/"+esc(name)+"/forwards/"+strconv.Itoa(hostPort), nil, nil, nil)
}
