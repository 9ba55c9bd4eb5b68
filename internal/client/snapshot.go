package client

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// CreateSnapshot begins snapshotting a running VM; the operation's result
// is the api.Snapshot.
func (c *Client) CreateSnapshot(ctx context.Context, req api.SnapshotCreateRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/snapshots", req)
}

// ListSnapshots is GET /v1/snapshots.
func (c *Client) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	return get[[]api.Snapshot](ctx, c, "/v1/snapshots")
}

// GetSnapshot is GET /v1/snapshots/{name}.
func (c *Client) GetSnapshot(ctx context.Context, name string) (api.Snapshot, error) {
	return get[api.Snapshot](ctx, c, "/v1/snapshots/"+esc(name))
}

// DeleteSnapshot deletes a snapshot no live VM was started from.
func (c *Client) DeleteSnapshot(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/snapshots/"+esc(name), nil, nil, nil)
}

// ForkVM begins starting VMs from a snapshot or a running VM; the
// operation's result is the api.VMForkResult.
func (c *Client) ForkVM(ctx context.Context, req api.VMForkRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/vms/fork", req)
}

// WarmImage begins making an image's warm snapshot; the operation's result
// is the api.Snapshot.
func (c *Client) WarmImage(ctx context.Context, req api.ImageWarmRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/images/"+esc(req.Image)+"/warm", req)
}

// UnwarmImage deletes an image's warm snapshot.
func (c *Client) UnwarmImage(ctx context.Context, image string) error {
	return c.call(ctx, http.MethodDelete, "/v1/images/"+esc(image)+"/warm", nil, nil, nil)
}
