package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// apiTimeout bounds one API call when ctx has no deadline. Firecracker
// answers configuration calls in milliseconds.
const apiTimeout = 10 * time.Second

// client talks to one Firecracker API socket.
type client struct {
	sock string
	http *http.Client
}

func newClient(sock string) *client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}
	return &client{sock: sock, http: &http.Client{Transport: tr, Timeout: apiTimeout}}
}

// APIError is an error answer from Firecracker.
type APIError struct {
	Method, Path string
	Status       int
	Fault        string // fault_message
}

func (e *APIError) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d: %s", e.Method, e.Path, e.Status, e.Fault)
}

// do sends one request; body (when non-nil) is sent as JSON and a JSON
// answer is decoded into out (when non-nil).
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s on %s: %w", method, path, c.sock, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var f struct {
			FaultMessage string `json:"fault_message"`
		}
		msg := string(bytes.TrimSpace(data))
		if json.Unmarshal(data, &f) == nil && f.FaultMessage != "" {
			msg = f.FaultMessage
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Fault: msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding firecracker %s %s: %w", method, path, err)
		}
	}
	return nil
}

// instanceInfo is GET /.
type instanceInfo struct {
	ID    string `json:"id"`
	State string `json:"state"`
}
