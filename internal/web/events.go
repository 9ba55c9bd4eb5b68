package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"banger/internal/api"
)

// Event names on GET /v1/events. Each carries the JSON body of the API call
// it mirrors: "vms" ([]api.VM from GET /v1/vms), "images" ([]api.Image),
// "operations" ([]api.Operation), "snapshots" ([]api.Snapshot) and "stats" (one api.VMStats per running
// VM and sample).
const (
	EventVMs        = "vms"
	EventImages     = "images"
	EventOperations = "operations"
	EventSnapshots  = "snapshots"
	EventStats      = "stats"
)

// snapshotPaths are re-read every poll; an event is sent when a body changes.
var snapshotPaths = []struct{ event, path string }{
	{EventVMs, "/v1/vms"}, {EventImages, "/v1/images"}, {EventOperations, "/v1/operations"},
	{EventSnapshots, "/v1/snapshots"},
}

type event struct {
	name string
	data []byte
}

// hub is the event stream's pub/sub. While anyone subscribes, one loop
// reads the API in-process (the same handler the browser calls) every
// poll interval and publishes what changed, and samples running VMs' stats
// every stats interval; with no subscriber it stops. A new subscriber gets
// the latest snapshots at once.
type hub struct {
	ctx           context.Context
	api           http.Handler
	poll, statsIv time.Duration
	log           *slog.Logger

	mu      sync.Mutex
	subs    map[chan event]struct{} // guarded by mu
	last    map[string][]byte       // guarded by mu; latest body per snapshot event
	running bool                    // guarded by mu; the poll loop runs
	names   []string                // guarded by mu; running VMs of the latest snapshot
}

func newHub(ctx context.Context, h http.Handler, poll, stats time.Duration, log *slog.Logger) *hub {
	return &hub{ctx: ctx, api: h, poll: poll, statsIv: stats, log: log,
		subs: map[chan event]struct{}{}, last: map[string][]byte{}}
}

// subscribe returns a channel of events, primed with the latest snapshots,
// and its cancel. The channel is closed when the subscriber falls too far
// behind (the browser's EventSource then reconnects).
func (h *hub) subscribe() (<-chan event, func()) {
	ch := make(chan event, 64)
	h.mu.Lock()
	for _, p := range snapshotPaths {
		if b, ok := h.last[p.event]; ok {
			ch <- event{p.event, b}
		}
	}
	h.subs[ch] = struct{}{}
	if !h.running {
		h.running = true
		go h.loop()
	}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
	}
}

func (h *hub) loop() {
	pollT := time.NewTicker(h.poll)
	defer pollT.Stop()
	statsT := time.NewTicker(h.statsIv)
	defer statsT.Stop()
	h.refresh()
	for {
		h.mu.Lock()
		if len(h.subs) == 0 || h.ctx.Err() != nil {
			h.running = false
			// Forget the snapshots: the next subscriber starts fresh.
			h.last = map[string][]byte{}
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		select {
		case <-h.ctx.Done():
		case <-pollT.C:
			h.refresh()
		case <-statsT.C:
			h.sampleStats()
		}
	}
}

// refresh re-reads the snapshots and publishes those that changed.
func (h *hub) refresh() {
	for _, p := range snapshotPaths {
		body, status := h.get(p.path)
		if status != http.StatusOK {
			continue
		}
		h.mu.Lock()
		if !bytes.Equal(h.last[p.event], body) {
			h.last[p.event] = body
			h.publishLocked(event{p.event, body})
		}
		if p.event == EventVMs {
			var vms []api.VM
			if json.Unmarshal(body, &vms) == nil {
				h.names = h.names[:0]
				for _, vm := range vms {
					if vm.Runtime.State == api.VMRunning {
						h.names = append(h.names, vm.Name)
					}
				}
			}
		}
		h.mu.Unlock()
	}
}

func (h *hub) sampleStats() {
	h.mu.Lock()
	names := append([]string(nil), h.names...)
	h.mu.Unlock()
	for _, name := range names {
		body, status := h.get("/v1/vms/" + url.PathEscape(name) + "/stats")
		if status != http.StatusOK {
			continue
		}
		h.mu.Lock()
		h.publishLocked(event{EventStats, body})
		h.mu.Unlock()
	}
}

func (h *hub) publishLocked(ev event) {
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
			h.log.Warn("event subscriber too slow, dropping it")
			delete(h.subs, ch)
			close(ch)
		}
	}
}

// get calls the API handler in-process and returns the body (trimmed of
// its trailing newline) and status.
func (h *hub) get(path string) ([]byte, int) {
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, 0
	}
	req.Header.Set(api.VersionHeader, api.APIVersion)
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	h.api.ServeHTTP(rec, req)
	return bytes.TrimSpace(rec.body.Bytes()), rec.status
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	r.wrote = true
	return r.body.Write(p)
}

// events is GET /v1/events: a text/event-stream of the hub's events, with
// a comment line every 15 s to keep proxies and the browser patient.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	ch, cancel := s.hub.subscribe()
	defer cancel()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			_, err = fmt.Fprint(w, ": keepalive\n\n")
		case ev, ok := <-ch:
			if !ok {
				return
			}
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, ev.data)
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}
