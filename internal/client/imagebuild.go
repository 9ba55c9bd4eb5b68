package client

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// BuildImage begins building an image from an image (a builder VM runs the
// script); follow the returned operation, whose output lines are the
// script's.
func (c *Client) BuildImage(ctx context.Context, req api.ImageBuildRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/images/build", req)
}

// PromoteImage begins turning a stopped VM into an image.
func (c *Client) PromoteImage(ctx context.Context, req api.ImagePromoteRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/images/promote", req)
}
