package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// Metrics is GET /v1/metrics: the daemon's Prometheus metrics in the text
// format, copied to w as they arrive.
func (c *Client) Metrics(ctx context.Context, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, "/v1/metrics", nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("reading metrics: %w", err)
	}
	return nil
}
