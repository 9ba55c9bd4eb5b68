package client

import (
	"context"

	"banger/internal/api"
)

// WebInfo is GET /v1/web: the web UI's login URL (it carries the token).
func (c *Client) WebInfo(ctx context.Context) (api.WebInfo, error) {
	return get[api.WebInfo](ctx, c, "/v1/web")
}
