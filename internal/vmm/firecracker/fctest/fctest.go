// Package fctest is a strict fake of Firecracker's API server for tests.
//
// Every request (method, path, JSON body) is validated against the
// official Swagger spec (testdata/firecracker-api.yaml, embedded) with
// kin-openapi; anything the spec does not allow gets 400 with a
// fault_message, as the real server answers. Object schemas that do not
// declare additionalProperties are closed, like Firecracker's serde
// structs (deny_unknown_fields), so a misspelt field is an error, not a
// silent no-op. On top of the schema the fake enforces the ordering rules
// that matter: pre-boot resources are refused after InstanceStart,
// InstanceStart needs boot-source and machine-config, files named in the
// configuration must exist (Firecracker opens them at once), PUT
// /vsock binds uds_path, and pause, snapshot create and snapshot load
// follow Firecracker's rules and write and read real files (snapshot.go).
//
// Like Firecracker, the fake logs (its banner, each API request) to stdout
// until a logger is set — on the command line (--log-path) or with PUT
// /logger — and to that file after. Behind the API runs a fake guest
// (guest.go): a console line some time after InstanceStart, an agent on
// the vsock, and x86 Firecracker's power semantics (power-off halts, a
// reboot with reboot=k ends the process).
//
// Server is the in-process fake; Main runs it as a fake `firecracker`
// executable (a test binary re-executing itself).
package fctest

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"golang.org/x/sys/unix"
)

//go:embed testdata/firecracker-api.yaml
var specYAML []byte

// Request is one request the fake received, with its answer's status.
type Request struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"` // compact, keys sorted
	Status int             `json:"status"`
}

// Server is the fake API. The zero value is not usable; use NewServer.
type Server struct {
	id     string
	router routers.Router
	// OnAction, when set, runs after an action succeeded (before the
	// response is written), e.g. to exit on SendCtrlAltDel.
	OnAction func(action string)
	// OnRequest, when set, sees every request after it was answered.
	OnRequest func(Request)
	// Stdout receives the fake guest's "serial console" lines, and the
	// fake's own log lines while no logger is set.
	Stdout io.Writer
	// BootDelay is how long after InstanceStart the guest's first console
	// line appears (default 300ms); Silent guests never write or answer.
	BootDelay time.Duration
	Silent    bool
	// ShutdownDelay is how long a guest shutdown takes (default 200ms).
	ShutdownDelay time.Duration
	// IgnoreCtrlAltDel: the guest does not act on SendCtrlAltDel.
	IgnoreCtrlAltDel bool
	// OnExit, when set, is called when the process should end (a guest
	// reboot with reboot=k).
	OnExit func()
	// Root, when set, is the host path of the jail the fake runs in (as
	// the jailed uid): every path it is given lives under it, and it
	// attaches to the tap of PUT /network-interfaces as Firecracker does,
	// which the kernel refuses unless the uid owns the tap.
	Root string

	mu         sync.Mutex // guards the fields below
	log        io.Writer  // the logger's file; nil: Stdout
	reqs       []Request
	state      string                    // "Not started", "Running", "Paused"
	configured map[string]bool           // pre-boot resources set, by path
	bodies     map[string]map[string]any // last PUT body, by path (snapshot.go)
	order      []string                  // paths of bodies, first-set order
	vsock      net.Listener
	guest      string // guest state, see guest.go
	bootedAt   time.Time
	bootArgs   string
	agentConns map[net.Conn]bool
}

var (
	docOnce sync.Once
	doc     *openapi3.T
	docErr  error
)

// Spec returns the parsed, converted (OpenAPI 3) and closed spec.
func Spec() (*openapi3.T, error) {
	docOnce.Do(func() { doc, docErr = loadSpec() })
	return doc, docErr
}

func loadSpec() (*openapi3.T, error) {
	var d2 openapi2.T
	if err := openapi2.UnmarshalFromData(specYAML, &d2); err != nil {
		return nil, fmt.Errorf("parsing firecracker-api.yaml: %w", err)
	}
	d3, err := openapi2conv.ToV3(&d2)
	if err != nil {
		return nil, fmt.Errorf("converting firecracker-api.yaml to openapi 3: %w", err)
	}
	// Requests come over a Unix socket with any Host header.
	d3.Servers = openapi3.Servers{{URL: "/"}}
	seen := map[*openapi3.Schema]bool{}
	for _, s := range d3.Components.Schemas {
		closeSchema(s, seen)
	}
	return d3, nil
}

// closeSchema forbids unknown properties on object schemas that do not say
// otherwise, recursively.
func closeSchema(ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
		no := false
		s.AdditionalProperties.Has = &no
	}
	for _, p := range s.Properties {
		closeSchema(p, seen)
	}
	closeSchema(s.Items, seen)
	closeSchema(s.AdditionalProperties.Schema, seen)
	for _, l := range []openapi3.SchemaRefs{s.AllOf, s.AnyOf, s.OneOf} {
		for _, r := range l {
			closeSchema(r, seen)
		}
	}
}

// NewServer returns a fake for the microVM id.
func NewServer(id string) (*Server, error) {
	d, err := Spec()
	if err != nil {
		return nil, err
	}
	r, err := gorillamux.NewRouter(d)
	if err != nil {
		return nil, fmt.Errorf("building the router: %w", err)
	}
	return &Server{id: id, router: r, state: "Not started", configured: map[string]bool{}, bodies: map[string]map[string]any{}, Stdout: io.Discard,
		guest: guestOff, agentConns: map[net.Conn]bool{}}, nil
}

// Version is the Firecracker version the fake claims to be.
const Version = "1.16.0"

// SetLogger sends the fake's log lines to w from now on (--log-path).
func (s *Server) SetLogger(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = w
	s.configured["/logger"] = true
}

// Logf writes one log line, formatted like Firecracker's, to the logger's
// file or, while none is set, to Stdout.
func (s *Server) Logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logfLocked(format, args...)
}

func (s *Server) logfLocked(format string, args ...any) {
	w := s.log
	if w == nil {
		w = s.Stdout
	}
	fmt.Fprintf(w, "%s [%s:main] %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000000000"), s.id, fmt.Sprintf(format, args...))
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Close releases the vsock socket the fake bound and its agent sessions.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropAgentsLocked()
	if s.vsock != nil {
		s.vsock.Close()
		s.vsock = nil
	}
}

// fault is an error answer.
type fault struct {
	status int
	msg    string
}

func faultf(format string, args ...any) *fault {
	return &fault{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP validates, applies and records one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.logfLocked("The API server received a %s request on %q with body %q.", methodName(r.Method), r.URL.Path, string(body))
	status, out, f := s.handleLocked(r, body)
	if f != nil {
		status, out = f.status, map[string]string{"fault_message": f.msg}
	}
	rec := Request{Method: r.Method, Path: r.URL.Path, Body: normalise(body), Status: status}
	s.reqs = append(s.reqs, rec)
	s.mu.Unlock()
	if out != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	if out != nil {
		_ = json.NewEncoder(w).Encode(out)
	}
	if s.OnRequest != nil {
		s.OnRequest(rec)
	}
}

// methodName is the method as Firecracker's log spells it ("Put").
func methodName(m string) string {
	if m == "" {
		return m
	}
	return m[:1] + strings.ToLower(m[1:])
}

func (s *Server) handleLocked(r *http.Request, body []byte) (int, any, *fault) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := s.router.FindRoute(r)
	if err != nil {
		return 0, nil, faultf("Invalid request method and/or path: %s %s.", r.Method, r.URL.Path)
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		return 0, nil, faultf("An error occurred when deserializing the json body of a request: %s", oneLine(err))
	}
	var m map[string]any
	if len(body) > 0 {
		_ = json.Unmarshal(body, &m)
	}
	if r.Method == http.MethodGet {
		return s.getLocked(r.URL.Path)
	}
	return s.applyLocked(r.Method, r.URL.Path, params, m)
}

func (s *Server) getLocked(path string) (int, any, *fault) {
	switch path {
	case "/":
		return 200, map[string]string{"app_name": "Firecracker", "id": s.id, "state": s.state, "vmm_version": "1.17.0-dev"}, nil
	case "/version":
		return 200, map[string]string{"firecracker_version": "1.17.0-dev"}, nil
	}
	return 0, nil, faultf("fctest: GET %s is valid but not implemented by the fake", path)
}

// preBootOnly are PUT resources Firecracker refuses once the guest runs.
var preBootOnly = []string{"/boot-source", "/machine-config", "/drives/", "/network-interfaces/", "/vsock",
	"/logger", "/metrics", "/mmds/config", "/balloon", "/cpu-config", "/entropy", "/serial", "/pmem/",
	"/snapshot/load", "/hotplug/memory"}

func isPreBootOnly(method, path string) bool {
	if method != http.MethodPut {
		return method == http.MethodPatch && path == "/machine-config"
	}
	for _, p := range preBootOnly {
		if path == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) {
			return true
		}
	}
	return false
}

func (s *Server) applyLocked(method, path string, params map[string]string, m map[string]any) (int, any, *fault) {
	started := s.state != "Not started"
	if started && isPreBootOnly(method, path) {
		return 0, nil, faultf("The requested operation is not supported after starting the microVM.")
	}
	if !started && (method == http.MethodPatch && path != "/machine-config" && path != "/mmds" || path == "/snapshot/create") {
		return 0, nil, faultf("The requested operation is not supported before starting the microVM.")
	}
	for param, field := range map[string]string{"drive_id": "drive_id", "iface_id": "iface_id"} {
		if v, ok := params[param]; ok && m[field] != v {
			return 0, nil, faultf("The id from the path %q does not match the id from the body %v!", v, m[field])
		}
	}
	if f := s.openFilesLocked(m); f != nil {
		return 0, nil, f
	}
	switch path {
	case "/actions":
		return s.actionLocked(m["action_type"].(string))
	case "/snapshot/create":
		return s.createSnapshotLocked(m)
	case "/snapshot/load":
		return s.loadSnapshotLocked(m)
	case "/vsock":
		if err := s.bindVsockLocked(s.HostPath(m["uds_path"].(string))); err != nil {
			return 0, nil, err
		}
	case "/logger":
		if p, ok := m["log_path"].(string); ok {
			f, err := os.OpenFile(s.HostPath(p), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return 0, nil, faultf("Cannot open log_path %s: %v", p, err)
			}
			s.log = f
		}
	case "/boot-source":
		s.bootArgs, _ = m["boot_args"].(string)
	case "/vm":
		if m["state"] == "Paused" {
			s.state = "Paused"
		} else {
			s.state = "Running"
		}
	}
	if method == http.MethodPut {
		s.remember(path, m)
	}
	s.configured[path] = true
	return http.StatusNoContent, nil, nil
}

// HostPath is where path, as Firecracker was given it, is on the host.
func (s *Server) HostPath(path string) string {
	if s.Root == "" {
		return path
	}
	return filepath.Join(s.Root, path)
}

// openFilesLocked opens the files a configuration names the way
// Firecracker does (the kernel and initrd read-only, a drive read-write
// unless is_read_only, log and metrics for appending), with the process's
// own permissions; in a jail it also attaches to the tap.
func (s *Server) openFilesLocked(m map[string]any) *fault {
	for _, field := range []string{"kernel_image_path", "initrd_path", "path_on_host", "log_path", "metrics_path"} {
		p, ok := m[field].(string)
		if !ok {
			continue
		}
		flag := os.O_RDONLY
		switch field {
		case "path_on_host":
			if ro, _ := m["is_read_only"].(bool); !ro {
				flag = os.O_RDWR
			}
		case "log_path", "metrics_path":
			flag = os.O_WRONLY | os.O_APPEND
		}
		f, err := os.OpenFile(s.HostPath(p), flag, 0)
		if err != nil {
			return faultf("Cannot open %s %s: %v", field, p, err)
		}
		f.Close()
	}
	if tap, ok := m["host_dev_name"].(string); ok && s.Root != "" {
		if err := attachTap(s.HostPath("/dev/net/tun"), tap); err != nil {
			return faultf("Open tap device failed: %v", err)
		}
	}
	return nil
}

// attachTap opens the persistent tap name as Firecracker does
// (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, through the jail's /dev/net/tun, the
// node the jailer made for the uid) and lets it go.
func attachTap(dev, name string) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dev, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("Error while creating ifreq structure: %w. Invalid TUN/TAP Backend provided by %s", err, name)
	}
	return nil
}

func (s *Server) actionLocked(action string) (int, any, *fault) {
	switch action {
	case "InstanceStart":
		if s.state != "Not started" {
			return 0, nil, faultf("The requested operation is not supported after starting the microVM.")
		}
		for _, need := range []string{"/boot-source", "/machine-config"} {
			if !s.configured[need] {
				return 0, nil, faultf("Cannot start microvm without %s configured.", strings.TrimPrefix(need, "/"))
			}
		}
		s.state = "Running"
		s.startGuestLocked()
	case "SendCtrlAltDel":
		if s.state == "Not started" {
			return 0, nil, faultf("The requested operation is not supported before starting the microVM.")
		}
		if !s.IgnoreCtrlAltDel {
			s.shutdownLocked("reboot") // systemd's ctrl-alt-del.target
		}
	case "FlushMetrics":
		if !s.configured["/metrics"] {
			return 0, nil, faultf("The metrics system is not initialized.")
		}
	}
	if s.OnAction != nil {
		s.OnAction(action)
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) bindVsockLocked(path string) *fault {
	l, err := net.Listen("unix", path)
	if err != nil {
		return faultf("Cannot create vsock device: %v", err)
	}
	if s.vsock != nil {
		s.vsock.Close()
	}
	s.vsock = l
	go s.serveVsock(l)
	return nil
}

// normalise re-encodes a JSON body compactly with sorted keys; non-JSON
// bodies are kept as a JSON string so the log stays valid JSON.
func normalise(body []byte) json.RawMessage {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		b, _ := json.Marshal(string(body))
		return b
	}
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return b
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
