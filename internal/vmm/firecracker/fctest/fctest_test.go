package fctest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSpecIsVerbatim(t *testing.T) {
	sum := sha256.Sum256(specYAML)
	if got := hex.EncodeToString(sum[:]); got != "47cd2801deb84b4fc38b9dcc85fce494b1f93074caf377dfc59cb7d410fb00f9" {
		t.Errorf("firecracker-api.yaml sha256 = %s; it must stay a verbatim copy (see testdata/README.md)", got)
	}
	d, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	// YAML 1.1 loaders read the unquoted Off as false; ours must keep "Off".
	found := false
	for _, v := range d.Components.Schemas["Logger"].Value.Properties["level"].Value.Enum {
		found = found || v == "Off"
	}
	if !found {
		t.Errorf("Logger.level enum lost \"Off\": %v", d.Components.Schemas["Logger"].Value.Properties["level"].Value.Enum)
	}
}

// serve starts a fake on a Unix socket and returns a client for it.
func serve(t *testing.T) (*Server, func(method, path, body string) (int, string)) {
	t.Helper()
	srv, err := NewServer("vm1")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return srv, func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}

func TestStrictValidationAndOrdering(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	disk := filepath.Join(dir, "root.ext4")
	for _, f := range []string{kernel, disk} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv, do := serve(t)
	steps := []struct {
		name, method, path, body string
		status                   int
		fault                    string // substring of fault_message
	}{
		{"unknown path", "PUT", "/nope", `{}`, 400, "Invalid request method and/or path"},
		{"wrong method", "DELETE", "/drives/root", ``, 400, "Invalid request method and/or path"},
		{"start before config", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "without boot-source"},
		{"unknown action", "PUT", "/actions", `{"action_type":"Reboot"}`, 400, "action_type"},
		{"machine-config without mem", "PUT", "/machine-config", `{"vcpu_count":2}`, 400, "mem_size_mib"},
		{"machine-config wrong type", "PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":256}`, 400, "vcpu_count"},
		{"machine-config ok", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256,"smt":false}`, 204, ""},
		{"drive bogus field", "PUT", "/drives/root", `{"drive_id":"root","is_root_device":true,"path_on_host":"` + disk + `","is_read_only":false,"bogus":1}`, 400, "bogus"},
		{"drive id mismatch", "PUT", "/drives/root", `{"drive_id":"work","is_root_device":true,"path_on_host":"` + disk + `","is_read_only":false}`, 400, "does not match"},
		{"drive missing file", "PUT", "/drives/root", `{"drive_id":"root","is_root_device":true,"path_on_host":"/nonexistent.ext4","is_read_only":false}`, 400, "/nonexistent.ext4"},
		{"drive ok", "PUT", "/drives/root", `{"drive_id":"root","is_root_device":true,"path_on_host":"` + disk + `","is_read_only":false}`, 204, ""},
		{"logger Off level", "PUT", "/logger", `{"level":"Off"}`, 204, ""},
		{"logger bad level", "PUT", "/logger", `{"level":"Loud"}`, 400, "level"},
		{"not json", "PUT", "/boot-source", `kernel please`, 400, "deserializing"},
		{"vsock cid too small", "PUT", "/vsock", `{"guest_cid":2,"uds_path":"` + filepath.Join(dir, "v.sock") + `"}`, 400, "guest_cid"},
		{"vsock ok", "PUT", "/vsock", `{"guest_cid":3,"uds_path":"` + filepath.Join(dir, "v.sock") + `"}`, 204, ""},
		{"start without boot-source", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "without boot-source"},
		{"boot-source ok", "PUT", "/boot-source", `{"kernel_image_path":"` + kernel + `","boot_args":"console=ttyS0"}`, 204, ""},
		{"ctrl-alt-del before start", "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, 400, "before starting"},
		{"start", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 204, ""},
		{"start twice", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "after starting"},
		{"pre-boot after start", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, 400, "after starting"},
		{"drive after start", "PUT", "/drives/work", `{"drive_id":"work","is_root_device":false,"path_on_host":"` + disk + `","is_read_only":true}`, 400, "after starting"},
		{"pause", "PATCH", "/vm", `{"state":"Paused"}`, 204, ""},
		{"ctrl-alt-del", "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, 204, ""},
	}
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
	status, body := do("GET", "/", "")
	var info map[string]string
	_ = json.Unmarshal([]byte(body), &info)
	if status != 200 || info["state"] != "Paused" || info["id"] != "vm1" {
		t.Errorf("GET / = %d %s", status, body)
	}
	if _, err := os.Stat(filepath.Join(dir, "v.sock")); err != nil {
		t.Errorf("PUT /vsock did not bind uds_path: %v", err)
	}
	if got := len(srv.Requests()); got != len(steps)+1 {
		t.Errorf("recorded %d requests, want %d", got, len(steps)+1)
	}
}

// Like Firecracker, the fake logs to stdout (the serial console) until a
// logger is set, and to the logger's file after.
func TestLogsGoToStdoutUntilALoggerIsSet(t *testing.T) {
	srv, do := serve(t)
	var stdout strings.Builder
	srv.Stdout = &stdout
	srv.Logf("Running Firecracker v%s", Version)
	do("GET", "/", "")
	logFile := filepath.Join(t.TempDir(), "fc.log")
	os.WriteFile(logFile, nil, 0o600)
	if status, body := do("PUT", "/logger", `{"log_path":"`+logFile+`","level":"Info"}`); status != 204 {
		t.Fatalf("PUT /logger = %d %s", status, body)
	}
	do("GET", "/version", "")
	out := stdout.String()
	if !strings.Contains(out, "Running Firecracker v"+Version) || !strings.Contains(out, `received a Get request on "/"`) {
		t.Errorf("stdout before the logger = %q", out)
	}
	if strings.Contains(out, "/version") {
		t.Errorf("a request after PUT /logger reached stdout: %q", out)
	}
	if b, _ := os.ReadFile(logFile); !strings.Contains(string(b), `request on "/version"`) {
		t.Errorf("log file = %q", b)
	}
}

// bootedFake configures and starts a fake whose guest boots at once.
func bootedFake(t *testing.T, bootArgs string) (*Server, func(method, path, body string) (int, string), chan struct{}) {
	t.Helper()
	srv, do := serve(t)
	srv.BootDelay, srv.ShutdownDelay = time.Millisecond, time.Millisecond
	exited := make(chan struct{}, 1)
	srv.OnExit = func() { exited <- struct{}{} }
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(kernel, []byte("x"), 0o644)
	for _, r := range [][2]string{
		{"/boot-source", `{"kernel_image_path":"` + kernel + `","boot_args":"` + bootArgs + `"}`},
		{"/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`},
		{"/actions", `{"action_type":"InstanceStart"}`},
	} {
		if status, body := do("PUT", r[0], r[1]); status != 204 {
			t.Fatalf("PUT %s = %d %s", r[0], status, body)
		}
	}
	for srv.GuestState() != guestUp {
		time.Sleep(5 * time.Millisecond)
	}
	return srv, do, exited
}

// Ctrl-Alt-Del reboots the guest: with reboot=k the process ends, without
// it the guest only halts (and a halted guest ignores the keys).
func TestCtrlAltDelEndsTheProcessOnlyWithRebootK(t *testing.T) {
	for _, tt := range []struct {
		args      string
		wantState string
		wantExit  bool
	}{
		{"console=ttyS0 reboot=k panic=1", guestRebooting, true},
		{"console=ttyS0 panic=1", guestHalted, false},
	} {
		srv, do, exited := bootedFake(t, tt.args)
		if status, body := do("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`); status != 204 {
			t.Fatalf("SendCtrlAltDel = %d %s", status, body)
		}
		select {
		case <-exited:
			if !tt.wantExit {
				t.Errorf("%q: the process ended", tt.args)
			}
		case <-time.After(300 * time.Millisecond):
			if tt.wantExit {
				t.Errorf("%q: the process kept running", tt.args)
			}
		}
		if got := srv.GuestState(); got != tt.wantState {
			t.Errorf("%q: guest %s, want %s", tt.args, got, tt.wantState)
		}
	}
}

func TestPowerAction(t *testing.T) {
	for argv, want := range map[string]string{
		"systemctl poweroff --no-block": "poweroff", "poweroff": "poweroff", "/usr/bin/systemctl reboot": "reboot",
		"reboot": "reboot", "systemctl halt": "poweroff", "rm -rf /": "", "systemctl": "", "systemctl status ssh": "",
	} {
		if got := powerAction(strings.Fields(argv)); got != want {
			t.Errorf("powerAction(%q) = %q, want %q", argv, got, want)
		}
	}
}
