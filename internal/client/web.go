package client

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// WebInfo is GET /v1/web: the web UI's login URL (it carries the token).
func (c *Client) WebInfo(ctx context.Context) (api.WebInfo, error) {
	var w api.WebInfo
	return w, c.call(ctx, http.MethodGet, "/v1/web", nil, nil, &w)
}
