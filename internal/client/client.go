// Package client is the typed client for bangerd's Unix-socket API. Every
// route has a method; failures come back as *api.Error with the daemon's
// kind, so callers test them with api.IsNotFound and friends. A daemon that
// does not answer is an Unavailable error whose fix is `banger daemon start`
// (EnsureDaemon starts it instead).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/api/httpstatus"
	"banger/internal/buildinfo"
)

// Client talks to one daemon socket. It is safe for concurrent use.
type Client struct {
	socket string
	build  string
	hc     *http.Client

	mu            sync.Mutex
	daemonVersion string // guarded by mu; BuildHeader of the last response
}

// Option configures a Client.
type Option func(*Client)

// WithBuild sets the client's build version (default buildinfo.Version),
// compared with the daemon's by VersionMismatch.
func WithBuild(v string) Option { return func(c *Client) { c.build = v } }

// New returns a client for the daemon listening on socketPath. It does not
// connect until a method is called.
func New(socketPath string, opts ...Option) *Client {
	c := &Client{socket: socketPath, build: buildinfo.Version}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	c.hc = &http.Client{Transport: tr}
	for _, o := range opts {
		o(c)
	}
	return c
}

// SocketPath returns the socket the client talks to.
func (c *Client) SocketPath() string { return c.socket }

// DaemonVersion returns the daemon's build version seen on the last response
// ("" before any).
func (c *Client) DaemonVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.daemonVersion
}

// VersionMismatch reports the daemon's build version and whether it differs
// from the client's.
func (c *Client) VersionMismatch() (string, bool) {
	v := c.DaemonVersion()
	return v, v != "" && v != c.build
}

// unreachable turns a transport failure into Unavailable with the fix.
func (c *Client) unreachable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e := api.Unavailable("bangerd is not answering on %s: %w", c.socket, err)
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOENT) {
		return e.WithAction("daemon start")
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, fs.ErrPermission) {
		return e.WithFix("add yourself to the banger group (sudo usermod -aG banger $USER) and log in again")
	}
	return e.WithAction("daemon start")
}

// do sends a request and returns the response when it is 2xx; otherwise it
// returns the decoded *api.Error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := "http://banger" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set(api.VersionHeader, api.APIVersion)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	c.noteVersion(resp.Header)
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

func (c *Client) noteVersion(h http.Header) {
	if v := h.Get(api.BuildHeader); v != "" {
		c.mu.Lock()
		c.daemonVersion = v
		c.mu.Unlock()
	}
}

// decodeError reads an api.Error body; a body that is not one gets the kind
// of the status.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e api.Error
	if err := json.Unmarshal(b, &e); err == nil && e.Kind != "" && e.Message != "" {
		return &e
	}
	msg := string(bytes.TrimSpace(b))
	if msg == "" {
		msg = resp.Status
	}
	return &api.Error{Kind: httpstatus.KindOf(resp.StatusCode), Message: "bangerd: " + msg}
}

// call does a request and decodes a JSON response into out (when non-nil).
func (c *Client) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := c.do(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return api.Internal("decoding %s %s response: %w", method, path, err)
	}
	return nil
}

// get is a GET of path decoded into a T.
func get[T any](ctx context.Context, c *Client, path string) (T, error) {
	var v T
	return v, c.call(ctx, http.MethodGet, path, nil, nil, &v)
}

// begin sends body to path and returns the operation it began.
func (c *Client) begin(ctx context.Context, method, path string, body any) (api.Operation, error) {
	var op api.Operation
	return op, c.call(ctx, method, path, nil, body, &op)
}

// boolQuery is the query ?name=1 when on, else none.
func boolQuery(name string, on bool) url.Values {
	if !on {
		return nil
	}
	return url.Values{name: {"1"}}
}

func esc(s string) string { return url.PathEscape(s) }

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (api.DaemonStatus, error) {
	return get[api.DaemonStatus](ctx, c, "/v1/status")
}

// Shutdown asks the daemon to shut down cleanly (POST /v1/shutdown).
func (c *Client) Shutdown(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/shutdown", nil, struct{}{}, nil)
}

// Doctor is GET /v1/doctor: the checks as the daemon sees them.
func (c *Client) Doctor(ctx context.Context) (api.DoctorReport, error) {
	return get[api.DoctorReport](ctx, c, "/v1/doctor")
}

// ListImages is GET /v1/images.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	return get[[]api.Image](ctx, c, "/v1/images")
}

// GetImage is GET /v1/images/{name}.
func (c *Client) GetImage(ctx context.Context, name string) (api.Image, error) {
	return get[api.Image](ctx, c, "/v1/images/"+esc(name))
}

// CreateImage begins building an image; follow the returned operation.
func (c *Client) CreateImage(ctx context.Context, req api.ImageCreateRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/images", req)
}

// RegisterImage begins adopting existing artefacts as an image.
func (c *Client) RegisterImage(ctx context.Context, req api.ImageRegisterRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/images/register", req)
}

// DeleteImage deletes an image; force deletes it even if VMs use it.
func (c *Client) DeleteImage(ctx context.Context, name string, force bool) error {
	return c.call(ctx, http.MethodDelete, "/v1/images/"+esc(name), boolQuery("force", force), nil, nil)
}

// ListVMs is GET /v1/vms.
func (c *Client) ListVMs(ctx context.Context) ([]api.VM, error) {
	return get[[]api.VM](ctx, c, "/v1/vms")
}

// GetVM is GET /v1/vms/{name}.
func (c *Client) GetVM(ctx context.Context, name string) (api.VMDetail, error) {
	return get[api.VMDetail](ctx, c, "/v1/vms/"+esc(name))
}

// CreateVM begins creating (and starting) a VM.
func (c *Client) CreateVM(ctx context.Context, req api.VMCreateRequest) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/vms", req)
}

func (c *Client) vmAction(ctx context.Context, name, action string) (api.Operation, error) {
	return c.begin(ctx, http.MethodPost, "/v1/vms/"+esc(name)+"/"+action, struct{}{})
}

// StartVM begins starting a VM.
func (c *Client) StartVM(ctx context.Context, name string) (api.Operation, error) {
	return c.vmAction(ctx, name, "start")
}

// StopVM begins stopping a VM.
func (c *Client) StopVM(ctx context.Context, name string) (api.Operation, error) {
	return c.vmAction(ctx, name, "stop")
}

// RestartVM begins restarting a VM.
func (c *Client) RestartVM(ctx context.Context, name string) (api.Operation, error) {
	return c.vmAction(ctx, name, "restart")
}

// DeleteVM begins deleting a VM.
func (c *Client) DeleteVM(ctx context.Context, name string) (api.Operation, error) {
	return c.begin(ctx, http.MethodDelete, "/v1/vms/"+esc(name), nil)
}

// EditVM changes a stopped VM's resources.
func (c *Client) EditVM(ctx context.Context, name string, req api.VMEditRequest) (api.VM, error) {
	var vm api.VM
	return vm, c.call(ctx, http.MethodPatch, "/v1/vms/"+esc(name), nil, req, &vm)
}

// SetVMLifetime changes a VM's TTL and idle-stop.
func (c *Client) SetVMLifetime(ctx context.Context, name string, req api.VMLifetimeRequest) (api.VM, error) {
	var vm api.VM
	return vm, c.call(ctx, http.MethodPatch, "/v1/vms/"+esc(name)+"/lifetime", nil, req, &vm)
}

// Stats is GET /v1/vms/{name}/stats.
func (c *Client) Stats(ctx context.Context, name string) (api.VMStats, error) {
	return get[api.VMStats](ctx, c, "/v1/vms/"+esc(name)+"/stats")
}

// Logs copies a VM's serial console to w (from its last opt.Tail lines when
// set); with opt.Follow it keeps copying until ctx ends (which is then not
// an error).
func (c *Client) Logs(ctx context.Context, name string, opt api.LogOptions, w io.Writer) error {
	q := boolQuery("follow", opt.Follow)
	if opt.Tail > 0 {
		if q == nil {
			q = url.Values{}
		}
		q.Set("tail", strconv.Itoa(opt.Tail))
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/vms/"+esc(name)+"/logs", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// Operation fetches an operation. With wait > 0 it long-polls: the daemon
// answers as soon as the op's version is newer than version, or after wait.
// It returns the op's current version.
func (c *Client) Operation(ctx context.Context, id string, version uint64, wait time.Duration) (api.Operation, uint64, error) {
	q := url.Values{"version": {strconv.FormatUint(version, 10)}}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/operations/"+esc(id), q, nil)
	if err != nil {
		return api.Operation{}, 0, err
	}
	defer resp.Body.Close()
	var op api.Operation
	if err := json.NewDecoder(resp.Body).Decode(&op); err != nil {
		return api.Operation{}, 0, api.Internal("decoding operation %s: %w", id, err)
	}
	v, _ := strconv.ParseUint(resp.Header.Get(api.OpVersionHeader), 10, 64)
	return op, v, nil
}

// OperationOutput returns an operation's output lines from index from on and
// the index to ask for next.
func (c *Client) OperationOutput(ctx context.Context, id string, from int) ([]string, int, error) {
	var out api.OperationOutput
	q := url.Values{"from": {strconv.Itoa(from)}}
	if err := c.call(ctx, http.MethodGet, "/v1/operations/"+esc(id)+"/output", q, nil, &out); err != nil {
		return nil, from, err
	}
	return out.Lines, out.Next, nil
}

// CancelOperation cancels a running operation; it then reverts and fails.
func (c *Client) CancelOperation(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodPost, "/v1/operations/"+esc(id)+"/cancel", nil, struct{}{}, nil)
}

// FollowWait is how long each long-poll of Follow waits.
const FollowWait = 30 * time.Second

// Follow long-polls op until it finishes, calling onChange (may be nil) with
// every new state. It returns the final operation, and its *api.Error (kind
// preserved) when it failed.
func (c *Client) Follow(ctx context.Context, op api.Operation, onChange func(api.Operation)) (api.Operation, error) {
	var version uint64
	if onChange != nil {
		onChange(op)
	}
	for op.State == api.OpRunning {
		next, v, err := c.Operation(ctx, op.ID, version, FollowWait)
		if err != nil {
			return op, err
		}
		if v != version {
			op, version = next, v
			if onChange != nil {
				onChange(op)
			}
		}
	}
	if op.State == api.OpFailed {
		if op.Error == nil {
			return op, api.Internal("operation %s failed without an error", op.ID)
		}
		return op, op.Error
	}
	return op, nil
}
