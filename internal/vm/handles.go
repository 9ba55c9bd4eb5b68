package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// handlesFileName is the scratch file in each VM dir that lets a restarted
// daemon find (or tear down) a VM's kernel state.
const handlesFileName = "handles.json"

// Handles is everything only true while a VM's engine runs.
type Handles struct {
	Engine     string      `json:"engine"`
	VMM        vmm.Handles `json:"vmm"`
	Tap        string      `json:"tap,omitempty"`
	SystemDisk disk.Disk   `json:"system_disk"`
}

// API returns the API view of the handles.
func (h *Handles) API() *api.VMHandles {
	if h == nil {
		return nil
	}
	return &api.VMHandles{
		PID: h.VMM.PID, Tap: h.Tap, Engine: engineExtra(h),
	}
}

func engineExtra(h *Handles) map[string]string {
	m := map[string]string{
		"engine":          h.Engine,
		"api_socket":      h.VMM.APISocket,
		"agent_socket":    h.VMM.AgentSocket,
		"agent_transport": h.VMM.AgentTransport,
	}
	if h.VMM.Accel != "" {
		m["accel"] = h.VMM.Accel
	}
	for k, v := range h.VMM.Extra {
		m[k] = v
	}
	return m
}

// ParseHandles decodes a handles.json; it never panics on bad input.
func ParseHandles(data []byte) (*Handles, error) {
	var h Handles
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", handlesFileName, err)
	}
	if h.VMM.PID < 0 {
		return nil, fmt.Errorf("parsing %s: negative pid %d", handlesFileName, h.VMM.PID)
	}
	return &h, nil
}

func readHandles(dir string) (*Handles, error) {
	data, err := os.ReadFile(filepath.Join(dir, handlesFileName))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return ParseHandles(data)
}

// writeHandles writes handles.json atomically (tmp + rename).
func writeHandles(dir string, h *Handles) error {
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, handlesFileName+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing handles: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, handlesFileName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing handles: %w", err)
	}
	return nil
}

func removeHandles(dir string) {
	os.Remove(filepath.Join(dir, handlesFileName))
}

// cacheHandles records h for VM id (nil removes it).
func (m *Manager) cacheHandles(id string, h *Handles) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h == nil {
		delete(m.handles, id)
		return
	}
	m.handles[id] = h
}

// handlesOf returns the cached handles, loading handles.json on a miss.
func (m *Manager) handlesOf(v api.VM) *Handles {
	m.mu.Lock()
	h := m.handles[v.ID]
	m.mu.Unlock()
	if h != nil {
		return h
	}
	h, err := readHandles(v.Runtime.VMDir)
	if err != nil {
		m.log.Warn("reading handles", "vm", v.Name, "err", err)
		return nil
	}
	if h != nil {
		m.cacheHandles(v.ID, h)
	}
	return h
}

// vmAlive is the one liveness check used everywhere: the VM has handles and
// its engine process runs. When this daemon has not loaded the VM's engine
// (its binary moved, its probe failed) the engine cannot check; a process
// that still exists under the recorded pid then counts as alive, so that
// nothing tears down — or boots a second engine over — a guest that may
// still run (see unloadedEngine).
func (m *Manager) vmAlive(v api.VM) (*Handles, bool) {
	h := m.handlesOf(v)
	if h == nil || h.VMM.PID <= 0 {
		return h, false
	}
	e, ok := m.engines[h.Engine]
	if !ok {
		return h, proc.Exists(h.VMM.PID)
	}
	return h, e.Alive(h.VMM)
}

// unloadedEngine returns the error (with the fix) for an operation on a VM
// whose engine process may run but whose engine this daemon has not
// loaded, or nil when h's engine is loaded (or h has no process).
func (m *Manager) unloadedEngine(v api.VM, h *Handles) error {
	if h == nil || h.VMM.PID <= 0 {
		return nil
	}
	if _, ok := m.engines[h.Engine]; ok {
		return nil
	}
	why := m.unavailable[h.Engine]
	if why == "" {
		why = "it is not configured"
	}
	return api.FailedPrecondition("vm %q runs on engine %s (pid %d), which this daemon has not loaded (%s); the vm is left as it is",
		v.Name, h.Engine, h.VMM.PID, why).
		WithFix("make " + h.Engine + " usable again (see banger doctor) and restart bangerd")
}
