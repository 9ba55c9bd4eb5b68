package fctest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// steps runs requests against a fake, each with its expected status and a
// substring of its fault.
type step struct {
	name, method, path, body string
	status                   int
	fault                    string
}

func runSteps(t *testing.T, do func(method, path, body string) (int, string), steps []step) {
	t.Helper()
	for _, s := range steps {
		status, body := do(s.method, s.path, s.body)
		if status != s.status {
			t.Errorf("%s: %s %s = %d %s, want %d", s.name, s.method, s.path, status, body, s.status)
			continue
		}
		if s.fault != "" {
			var f struct {
				FaultMessage string `json:"fault_message"`
			}
			if err := json.Unmarshal([]byte(body), &f); err != nil || !strings.Contains(f.FaultMessage, s.fault) {
				t.Errorf("%s: fault %q, want it to mention %q", s.name, body, s.fault)
			}
		}
	}
}

// snapFiles configures and boots a fake with a drive, a tap-less network
// interface and a vsock, pauses it and snapshots it into dir.
func snapFiles(t *testing.T, dir string) (state, mem, disk string) {
	t.Helper()
	srv, do := serve(t)
	srv.BootDelay = time.Millisecond
	kernel, disk := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "root.ext4")
	for _, f := range []string{kernel, disk} {
		os.WriteFile(f, []byte("x"), 0o644)
	}
	state, mem = filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	create := `{"snapshot_type":"Full","snapshot_path":"` + state + `","mem_file_path":"` + mem + `"}`
	runSteps(t, do, []step{
		{"create before start", "PUT", "/snapshot/create", create, 400, "not supported before starting"},
		{"pause before start", "PATCH", "/vm", `{"state":"Paused"}`, 400, "not supported before starting"},
		{"boot-source", "PUT", "/boot-source", `{"kernel_image_path":"` + kernel + `","boot_args":"reboot=k"}`, 204, ""},
		{"machine-config", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":4}`, 204, ""},
		{"drive", "PUT", "/drives/root", `{"drive_id":"root","is_root_device":true,"path_on_host":"` + disk + `","is_read_only":false}`, 204, ""},
		{"net", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:00:00:00:01"}`, 204, ""},
		{"vsock", "PUT", "/vsock", `{"guest_cid":3,"uds_path":"` + filepath.Join(dir, "v.sock") + `"}`, 204, ""},
		{"load after config", "PUT", "/snapshot/load", `{"snapshot_path":"` + state + `","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"}}`, 400, "not allowed after configuring boot-specific resources"},
		{"start", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 204, ""},
		{"create while running", "PUT", "/snapshot/create", create, 400, "save/restore unavailable while running"},
		{"bad vm state", "PATCH", "/vm", `{"state":"Frozen"}`, 400, "state"},
		{"pause", "PATCH", "/vm", `{"state":"Paused"}`, 204, ""},
		{"bad snapshot type", "PUT", "/snapshot/create", `{"snapshot_type":"Warm","snapshot_path":"` + state + `","mem_file_path":"` + mem + `"}`, 400, "snapshot_type"},
		{"create without mem path", "PUT", "/snapshot/create", `{"snapshot_path":"` + state + `"}`, 400, "mem_file_path"},
		{"create", "PUT", "/snapshot/create", create, 204, ""},
		{"load after start", "PUT", "/snapshot/load", `{"snapshot_path":"` + state + `","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"}}`, 400, "after starting"},
		{"resume", "PATCH", "/vm", `{"state":"Resumed"}`, 204, ""},
	})
	if fi, err := os.Stat(mem); err != nil || fi.Size() != 4<<20 {
		t.Fatalf("memory file: %v, %v; want 4 MiB", fi, err)
	}
	return state, mem, disk
}

func TestSnapshotCreateAndLoad(t *testing.T) {
	dir := t.TempDir()
	state, mem, _ := snapFiles(t, dir)
	srv, do := serve(t)
	uds := filepath.Join(t.TempDir(), "child.sock")
	load := func(extra string) string {
		return `{"snapshot_path":"` + state + `","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"}` + extra + `}`
	}
	runSteps(t, do, []step{
		{"both mem fields", "PUT", "/snapshot/load", `{"snapshot_path":"` + state + `","mem_file_path":"` + mem + `","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"}}`, 400, "mem_backend"},
		{"no mem field", "PUT", "/snapshot/load", `{"snapshot_path":"` + state + `"}`, 400, "mem_backend"},
		{"override bogus field", "PUT", "/snapshot/load", load(`,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1","guest_mac":"x"}]`), 400, "guest_mac"},
		{"missing state", "PUT", "/snapshot/load", `{"snapshot_path":"/nonexistent","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"}}`, 400, "Failed to open snapshot file"},
		{"load", "PUT", "/snapshot/load", load(`,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}],"vsock_override":{"uds_path":"` + uds + `"},"resume_vm":true`), 204, ""},
		{"pre-boot after load", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":4}`, 400, "after starting"},
		{"pause the child", "PATCH", "/vm", `{"state":"Paused"}`, 204, ""},
	})
	if _, err := os.Stat(uds); err != nil {
		t.Errorf("the vsock override was not bound: %v", err)
	}
	status, body := do("GET", "/", "")
	if status != 200 || !strings.Contains(body, `"Paused"`) {
		t.Errorf("GET / = %d %s", status, body)
	}
	if srv.GuestState() != guestUp {
		t.Errorf("restored guest %s, want up", srv.GuestState())
	}
	// The restored VM snapshots again, with the overridden tap.
	state2 := filepath.Join(t.TempDir(), "again.state")
	runSteps(t, do, []step{{"create again", "PUT", "/snapshot/create", `{"snapshot_path":"` + state2 + `","mem_file_path":"` + state2 + `.mem"}`, 204, ""}})
	b, _ := os.ReadFile(state2)
	st, err := decodeState(b)
	if err != nil || len(st.Net) != 1 || st.Net[0]["host_dev_name"] != "tap1" || st.MemMiB != 4 || st.VCPUs != 2 {
		t.Errorf("second snapshot = %+v, %v", st, err)
	}
}

// A load that fails after reading the state leaves the process unusable,
// and a broken state file is refused.
func TestSnapshotLoadRefusals(t *testing.T) {
	dir := t.TempDir()
	state, mem, disk := snapFiles(t, dir)
	good, _ := os.ReadFile(state)
	bad := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		return p
	}
	tests := []struct {
		name, state, mem, extra, fault string
		exits                          bool
	}{
		{"truncated state", bad("trunc", good[:len(good)-3]), mem, "", "failed to fill whole buffer", false},
		{"garbage state", bad("garbage", []byte("not a snapshot at all, not at all")), mem, "", "Magic value", false},
		{"flipped byte", bad("flip", append(append([]byte{}, good[:len(good)-12]...), append([]byte{good[len(good)-12] ^ 1}, good[len(good)-11:]...)...)), mem, "", "CRC64", false},
		{"unknown iface", state, mem, `,"network_overrides":[{"iface_id":"eth9","host_dev_name":"tap1"}]`, "Unknown Network Device", true},
		{"short memory", state, bad("short.mem", []byte("x")), "", "Offset too large", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, do := serve(t)
			exited := make(chan struct{}, 1)
			srv.OnExit = func() { exited <- struct{}{} }
			runSteps(t, do, []step{{tt.name, "PUT", "/snapshot/load",
				`{"snapshot_path":"` + tt.state + `","mem_backend":{"backend_type":"File","backend_path":"` + tt.mem + `"}` + tt.extra + `}`, 400, tt.fault}})
			select {
			case <-exited:
				if !tt.exits {
					t.Error("the process ended")
				}
			case <-time.After(100 * time.Millisecond):
				if tt.exits {
					t.Error("the process goes on after a failed restore; Firecracker exits")
				}
			}
		})
	}
	// The drives are reopened where the state recorded them.
	if err := os.Remove(disk); err != nil {
		t.Fatal(err)
	}
	_, do := serve(t)
	runSteps(t, do, []step{{"drive gone", "PUT", "/snapshot/load",
		`{"snapshot_path":"` + state + `","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"}}`, 400, "path_on_host"}})
}
