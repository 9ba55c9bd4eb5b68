package fctest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"os"
	"strings"
	"time"
)

// Snapshots, as Firecracker keeps them (src/vmm/src/persist.rs,
// rpc_interface.rs, snapshot/mod.rs at the vendored spec's commit):
//
//   - PATCH /vm {"state": "Paused"|"Resumed"} only after InstanceStart (or a
//     snapshot load): "not supported before starting the microVM" before.
//   - PUT /snapshot/create only after start ("not supported before starting
//     the microVM") and on a Paused VM: a running one is refused with
//     "Create snapshot error: Cannot save the microVM state: Operation not
//     allowed: save/restore unavailable while running". It writes the state
//     file (create, truncate) and then the memory file, both opened by the
//     process with its own permissions, the memory file sized to the guest's
//     RAM. Only Full snapshots are modelled (Diff needs dirty-page tracking).
//   - PUT /snapshot/load only on a fresh process: after any pre-boot
//     resource other than the logger and metrics it is refused with "Load
//     snapshot error: Loading a microVM snapshot not allowed after
//     configuring boot-specific resources."; after start it is a post-boot
//     refusal. Exactly one of mem_backend and mem_file_path. The state file
//     must be well-formed: magic, version, at most 10 MiB, CRC64 — a
//     truncated or garbage file fails. network_overrides must name
//     interfaces of the snapshot ("Unknown Network Device."), a
//     vsock_override needs a vsock device. The memory file is opened
//     read-only (File::open) and mapped MAP_PRIVATE, at least the guest's
//     RAM in size; the drives are reopened at the paths the state recorded
//     (read-write unless read-only), the tap by its (overridden) name, the
//     vsock socket bound at its (overridden) path. A failure after the state
//     was read leaves the process "too dirty to recover": Firecracker exits
//     (OnExit). On success the VM is started (post-boot rules apply),
//     Running with resume_vm, else Paused, and the fake guest is up at once.
//
// Not modelled: a paused guest still answers its agent (real vCPUs would
// not run it), Diff snapshots, the Uffd backend.
//
// The fake's state file is its own format (magic, big-endian length, the
// configuration as JSON, CRC64-ECMA), not Firecracker's bitcode.

// EnvHostileSnapshot makes the fake behave as a compromised VMM after
// PUT /snapshot/create: it keeps the files it wrote open and overwrites
// their first bytes 200ms later (what a driver that hands the written
// inodes to children must not allow).
const EnvHostileSnapshot = "FCTEST_HOSTILE_SNAPSHOT"

// snapMagic starts the fake's state files.
const snapMagic = "FCTEST-SNAPSHOT\n"

// maxStateSize is Firecracker's bound on a state file (snapshot/mod.rs).
const maxStateSize = 10 << 20

// snapState is what the fake's state file records.
type snapState struct {
	Version  string           `json:"version"`
	ID       string           `json:"id"`
	VCPUs    int              `json:"vcpu_count"`
	MemMiB   int              `json:"mem_size_mib"`
	BootArgs string           `json:"boot_args"`
	Drives   []map[string]any `json:"drives"`
	Net      []map[string]any `json:"network_interfaces"`
	Vsock    map[string]any   `json:"vsock,omitempty"`
}

func encodeState(st snapState) []byte {
	js, _ := json.Marshal(st)
	var b bytes.Buffer
	b.WriteString(snapMagic)
	_ = binary.Write(&b, binary.BigEndian, uint32(len(js)))
	b.Write(js)
	_ = binary.Write(&b, binary.BigEndian, crc64.Checksum(b.Bytes(), crc64.MakeTable(crc64.ECMA)))
	return b.Bytes()
}

func decodeState(b []byte) (snapState, error) {
	var st snapState
	if len(b) > maxStateSize {
		return st, fmt.Errorf("Snapshot size exceeds limit of %d bytes", maxStateSize)
	}
	if len(b) < len(snapMagic)+4+8 || string(b[:len(snapMagic)]) != snapMagic {
		return st, errors.New("Magic value does not match arch")
	}
	n := int(binary.BigEndian.Uint32(b[len(snapMagic):]))
	body := b[len(snapMagic)+4:]
	if n != len(body)-8 {
		return st, errors.New("IO Error: failed to fill whole buffer")
	}
	sum := binary.BigEndian.Uint64(body[n:])
	if crc64.Checksum(b[:len(b)-8], crc64.MakeTable(crc64.ECMA)) != sum {
		return st, errors.New("CRC64 validation failed")
	}
	if err := json.Unmarshal(body[:n], &st); err != nil {
		return st, fmt.Errorf("An error occurred during bitcode serialization: %v", err)
	}
	if st.Version != Version {
		return st, fmt.Errorf("Invalid data version: %s", st.Version)
	}
	return st, nil
}

// createSnapshotLocked is PUT /snapshot/create on a started VM.
func (s *Server) createSnapshotLocked(m map[string]any) (int, any, *fault) {
	if s.state != "Paused" {
		return 0, nil, faultf("Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running")
	}
	if t, _ := m["snapshot_type"].(string); t == "Diff" {
		return 0, nil, faultf("fctest: Diff snapshots are not modelled (they need track_dirty_pages)")
	}
	st := snapState{Version: Version, ID: s.id, BootArgs: s.bootArgs, Vsock: s.bodies["/vsock"]}
	mc := s.bodies["/machine-config"]
	st.VCPUs, st.MemMiB = toInt(mc["vcpu_count"]), toInt(mc["mem_size_mib"])
	for _, k := range s.order {
		switch {
		case strings.HasPrefix(k, "/drives/"):
			st.Drives = append(st.Drives, s.bodies[k])
		case strings.HasPrefix(k, "/network-interfaces/"):
			st.Net = append(st.Net, s.bodies[k])
		}
	}
	statePath, memPath := m["snapshot_path"].(string), m["mem_file_path"].(string)
	sf, err := os.OpenFile(s.HostPath(statePath), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, nil, faultf("Create snapshot error: Cannot perform open on the snapshot backing file: %v", err)
	}
	if _, err := sf.Write(encodeState(st)); err != nil {
		sf.Close()
		return 0, nil, faultf("Create snapshot error: Cannot perform write on the snapshot backing file: %v", err)
	}
	mf, err := os.OpenFile(s.HostPath(memPath), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		sf.Close()
		return 0, nil, faultf("Create snapshot error: Cannot perform open on the memory backing file: %v", err)
	}
	// The guest's RAM: a marker of whose and when, the rest zero (sparse).
	fmt.Fprintf(mf, "fctest guest memory of %s at %s\n", s.id, time.Now().UTC().Format(time.RFC3339Nano))
	if err := mf.Truncate(int64(st.MemMiB) << 20); err != nil {
		sf.Close()
		mf.Close()
		return 0, nil, faultf("Create snapshot error: Cannot perform set_len on the memory backing file: %v", err)
	}
	if os.Getenv(EnvHostileSnapshot) != "" {
		time.AfterFunc(200*time.Millisecond, func() {
			for _, f := range []*os.File{sf, mf} {
				_, _ = f.WriteAt([]byte("OWNED BY THE PARENT"), 0)
				f.Close()
			}
		})
	} else {
		sf.Close()
		mf.Close()
	}
	return 204, nil, nil
}

// loadFault is a failed restore: Firecracker's message chain.
func loadFault(format string, args ...any) *fault {
	return faultf("Load snapshot error: Failed to restore from snapshot: "+format, args...)
}

// loadSnapshotLocked is PUT /snapshot/load on a process not yet started.
func (s *Server) loadSnapshotLocked(m map[string]any) (int, any, *fault) {
	for k := range s.configured {
		if k != "/logger" && k != "/metrics" {
			return 0, nil, faultf("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")
		}
	}
	be, hasBackend := m["mem_backend"].(map[string]any)
	legacy, hasLegacy := m["mem_file_path"].(string)
	if hasBackend == hasLegacy {
		return 0, nil, faultf("An error occurred when deserializing the json body of a request: either `mem_backend` or `mem_file_path` must be specified, not both.")
	}
	memPath := legacy
	if hasBackend {
		if be["backend_type"] != "File" {
			return 0, nil, faultf("fctest: the Uffd memory backend is not modelled")
		}
		memPath = be["backend_path"].(string)
	}
	st, f := s.readStateLocked(m["snapshot_path"].(string))
	if f != nil {
		return 0, nil, f
	}
	// From here a failure leaves the process too dirty to recover.
	if status, out, f := s.restoreLocked(st, m, memPath); f != nil {
		if s.OnExit != nil {
			go s.OnExit()
		}
		return status, out, f
	}
	return http204()
}

func http204() (int, any, *fault) { return 204, nil, nil }

func (s *Server) readStateLocked(path string) (snapState, *fault) {
	f, err := os.Open(s.HostPath(path))
	if err != nil {
		return snapState{}, loadFault("Failed to get snapshot state from file: Failed to open snapshot file: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return snapState{}, loadFault("Failed to get snapshot state from file: Failed to open snapshot file: %v", err)
	}
	st, err := decodeState(b)
	if err != nil {
		return snapState{}, loadFault("Failed to get snapshot state from file: Failed to load snapshot state from file: %v", err)
	}
	return st, nil
}

// restoreLocked applies the overrides and reopens what the state names.
func (s *Server) restoreLocked(st snapState, m map[string]any, memPath string) (int, any, *fault) {
	overrides, _ := m["network_overrides"].([]any)
	for _, o := range overrides {
		o := o.(map[string]any)
		found := false
		for _, n := range st.Net {
			if n["iface_id"] == o["iface_id"] {
				n["host_dev_name"], found = o["host_dev_name"], true
			}
		}
		if !found {
			return 0, nil, loadFault("Failed to get snapshot state from file: Unknown Network Device.")
		}
	}
	if vo, ok := m["vsock_override"].(map[string]any); ok {
		if st.Vsock == nil {
			return 0, nil, loadFault("Failed to get snapshot state from file: Unknown Vsock Device.")
		}
		st.Vsock["uds_path"] = vo["uds_path"]
	}
	mf, err := os.Open(s.HostPath(memPath)) // File::open: read-only
	if err != nil {
		return 0, nil, loadFault("Failed to load guest memory: Error creating guest memory from file: Failed to load guest memory: %v", err)
	}
	fi, err := mf.Stat()
	mf.Close()
	if err != nil || fi.Size() < int64(st.MemMiB)<<20 {
		return 0, nil, loadFault("Failed to load guest memory: Error creating guest memory from file: Failed to restore guest memory: Offset too large")
	}
	for _, d := range st.Drives {
		if f := s.openFilesLocked(d); f != nil {
			return 0, nil, loadFault("Failed to build microVM from snapshot: %s", f.msg)
		}
	}
	for _, n := range st.Net {
		if f := s.openFilesLocked(n); f != nil {
			return 0, nil, loadFault("Failed to build microVM from snapshot: %s", f.msg)
		}
	}
	if st.Vsock != nil {
		if f := s.bindVsockLocked(s.HostPath(st.Vsock["uds_path"].(string))); f != nil {
			return 0, nil, loadFault("Failed to build microVM from snapshot: %s", f.msg)
		}
	}
	// The restored VM is configured as the snapshotted one was.
	s.remember("/machine-config", map[string]any{"vcpu_count": st.VCPUs, "mem_size_mib": st.MemMiB})
	for _, d := range st.Drives {
		s.remember("/drives/"+d["drive_id"].(string), d)
	}
	for _, n := range st.Net {
		s.remember("/network-interfaces/"+n["iface_id"].(string), n)
	}
	if st.Vsock != nil {
		s.remember("/vsock", st.Vsock)
	}
	s.bootArgs = st.BootArgs
	s.state = "Paused"
	if resume, _ := m["resume_vm"].(bool); resume {
		s.state = "Running"
	}
	s.guest = guestUp
	s.bootedAt = time.Now()
	return 204, nil, nil
}

// remember records a pre-boot resource's body, in first-set order.
func (s *Server) remember(path string, body map[string]any) {
	if _, ok := s.bodies[path]; !ok {
		s.order = append(s.order, path)
	}
	s.bodies[path] = body
	s.configured[path] = true
}

func toInt(v any) int {
	f, _ := v.(float64)
	if i, ok := v.(int); ok {
		return i
	}
	return int(f)
}
