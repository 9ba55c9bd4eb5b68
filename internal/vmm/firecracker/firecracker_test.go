package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/golden"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker/fctest"
)

// fakeEnv makes this test binary run as the fake firecracker executable.
const fakeEnv = "BANGER_FAKE_FIRECRACKER"

// fakeJailerEnv makes this test binary run as the fake jailer.
const fakeJailerEnv = "BANGER_FAKE_JAILER"

func TestMain(m *testing.M) {
	if os.Getenv(fakeJailerEnv) != "" {
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, fakeJailerEnv+"=") {
				env = append(env, kv)
			}
		}
		os.Exit(fctest.JailerMain(os.Args[1:], append(env, fakeEnv+"=1")))
	}
	if os.Getenv(fakeEnv) != "" {
		os.Exit(fctest.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeSpec makes the files a guest needs (contents do not matter to the
// fake) and a spec naming them.
func fakeSpec(t *testing.T) vmm.Spec {
	dir := t.TempDir()
	spec := vmm.Spec{
		Name: "fc1", VMDir: dir, VCPUs: 2, MemoryMiB: 512, UID: testUID, GID: testUID,
		Vmlinux: filepath.Join(dir, "vmlinux"), Initrd: filepath.Join(dir, "initrd.img"),
		Cmdline: "root=/dev/vda rw ip=172.30.0.2::172.30.0.1:255.255.255.0::eth0:off",
		Disks: []vmm.Disk{
			{ID: "root", Path: filepath.Join(dir, "root.ext4"), Format: "raw"},
			{ID: "work", Path: filepath.Join(dir, "work.ext4"), Format: "raw"},
		},
		Tap: "bgtap1", MAC: "06:00:ac:1e:00:03", VsockCID: 3,
		APISocket:   filepath.Join(dir, "fc.sock"),
		AgentSocket: filepath.Join(dir, "agent.sock"),
		SerialLog:   filepath.Join(dir, "serial.log"),
		EngineLog:   filepath.Join(dir, "firecracker.log"),
		MetricsPath: filepath.Join(dir, "metrics.json"),
	}
	for _, f := range []string{spec.Vmlinux, spec.Initrd, spec.Disks[0].Path, spec.Disks[1].Path} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return spec
}

// fakeEngine returns an engine whose binary is this test binary acting as
// the fake, and the file the fake logs its requests to.
func fakeEngine(t *testing.T) (*Engine, string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	reqLog := filepath.Join(t.TempDir(), "requests.jsonl")
	t.Setenv(fakeEnv, "1")
	t.Setenv(fctest.EnvRequestLog, reqLog)
	return New(Config{Binary: exe, Version: "fake", Unjailed: true}), reqLog
}

func TestStartStateStop(t *testing.T) {
	e, reqLog := fakeEngine(t)
	spec := fakeSpec(t)
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Kill(context.Background(), h) })

	if h.APISocket != spec.APISocket || h.AgentSocket != spec.AgentSocket || h.AgentTransport != vmm.TransportVsockHybrid || h.VsockCID != 3 {
		t.Errorf("handles = %+v", h)
	}
	if !e.Alive(h) {
		t.Fatal("Alive = false after Start")
	}
	if sid, err := unix.Getsid(h.PID); err != nil || sid != h.PID {
		t.Errorf("getsid = %d, %v: not in its own session", sid, err)
	}
	if st, err := e.State(context.Background(), h); err != nil || st != vmm.StateRunning {
		t.Errorf("State = %q, %v", st, err)
	}
	if _, err := os.Stat(spec.AgentSocket); err != nil {
		t.Errorf("vsock socket not bound: %v", err)
	}
	waitSerial(t, spec.SerialLog, "Linux version")
	t0 := time.Now()
	if err := e.Stop(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("Stop took %v for a guest that powers off", d)
	}
	checkGone(t, e, h)
	if serial := golden.ReadFile(t, spec.SerialLog); !strings.HasPrefix(serial, "[    0.000000] Linux version") || !strings.Contains(serial, "reboot: Restarting system") {
		t.Errorf("serial log (firecracker stdout) = %q, want only the guest's lines, ending in its reboot", serial)
	}
	if log := golden.ReadFile(t, spec.EngineLog); !strings.Contains(log, "API server listening") {
		t.Errorf("engine log (firecracker stderr) = %q", log)
	}
	apiLog := golden.ReadFile(t, apiLogPath(spec))
	if !strings.Contains(apiLog, "Running Firecracker v") || !strings.Contains(apiLog, `request on "/actions"`) {
		t.Errorf("firecracker's own log = %q, want its banner and the requests", apiLog)
	}
	golden.Check(t, "testdata/start-stop.golden", requestLog(t, reqLog, spec.VMDir))
}

func TestStopKillsGuestThatIgnoresCtrlAltDel(t *testing.T) {
	e, _ := fakeEngine(t)
	t.Setenv(fctest.EnvIgnoreCtrlAltDel, "1")
	h, err := e.Start(context.Background(), fakeSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Kill(context.Background(), h) })
	t0 := time.Now()
	if err := e.Stop(context.Background(), h, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("Stop returned after %v, before its timeout", d)
	}
	checkGone(t, e, h)
	if err := e.Stop(context.Background(), h, time.Second); err != nil {
		t.Errorf("Stop on a stopped VM: %v", err)
	}
	if err := e.Kill(context.Background(), h); err != nil {
		t.Errorf("Kill on a stopped VM: %v", err)
	}
}

func TestStartSurfacesFaultAndCleansUp(t *testing.T) {
	e, reqLog := fakeEngine(t)
	spec := fakeSpec(t)
	spec.Disks[1].ID = "wo/rk" // no such API path
	_, err := e.Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "firecracker PUT /drives/wo/rk: 400") || !strings.Contains(err.Error(), "Invalid request method and/or path") {
		t.Fatalf("Start = %v, want the fault naming PUT /drives/wo/rk", err)
	}
	t.Logf("Start error: %v", err)
	if !api.IsUnavailable(err) {
		t.Errorf("kind = %s", api.KindOf(err))
	}
	checkNoProcess(t, spec.APISocket)
	for _, p := range []string{spec.APISocket, spec.AgentSocket} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if got := requestLog(t, reqLog, spec.VMDir); !strings.Contains(got, `PUT /drives/wo/rk 400`) {
		t.Errorf("request log:\n%s", got)
	}
}

func TestStartProcessExitsEarly(t *testing.T) {
	e, _ := fakeEngine(t)
	spec := fakeSpec(t)
	spec.APISocket = filepath.Join(spec.VMDir, "missing-dir", "fc.sock")
	_, err := e.Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "firecracker exited (exit status 1)") || !strings.Contains(err.Error(), "Failed to open the API socket") {
		t.Fatalf("Start = %v, want the exit and the tail of the engine log", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*vmm.Spec)
		want string
	}{
		{"no vmlinux", func(s *vmm.Spec) { s.Vmlinux = "" }, "vmlinux"},
		{"missing vmlinux", func(s *vmm.Spec) { s.Vmlinux = "/nonexistent/vmlinux" }, "kernel /nonexistent/vmlinux"},
		{"missing disk", func(s *vmm.Spec) { s.Disks[1].Path = "/nonexistent/w.ext4" }, "disk work /nonexistent/w.ext4"},
		{"qcow2", func(s *vmm.Spec) { s.Disks[0].Format = "qcow2" }, "raw disks only"},
		{"no tap", func(s *vmm.Spec) { s.Tap = "" }, "tap"},
		{"zero memory", func(s *vmm.Spec) { s.MemoryMiB = 0 }, "memory"},
		{"low cid", func(s *vmm.Spec) { s.VsockCID = 2 }, "cid"},
		{"no disks", func(s *vmm.Spec) { s.Disks = nil }, "root disk"},
		{"too many vcpus", func(s *vmm.Spec) { s.VCPUs = 33 }, "at most 32 vcpus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := fakeSpec(t)
			tt.edit(&spec)
			_, err := New(Config{Binary: "/nonexistent/firecracker"}).Start(context.Background(), spec)
			if err == nil || !api.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start = %v, want Invalid mentioning %q", err, tt.want)
			}
			if tt.name == "too many vcpus" && api.AsError(err).Fix == "" {
				t.Errorf("no fix: %v", err)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	info := New(Config{Binary: "/nonexistent/firecracker"}).Info()
	if info.Available || !strings.Contains(info.Reason, "firecracker") || !info.NeedsVmlinux || info.Qcow2 || info.AgentTransport != vmm.TransportVsockHybrid ||
		info.MaxVCPUs != 32 || info.GuestShutdown != vmm.ShutdownReboot {
		t.Errorf("Info = %+v", info)
	}
}

func TestJailPlanGolden(t *testing.T) {
	spec := fakeSpec(t)
	spec.VMDir = "/var/lib/banger/vms/fc1"
	for i := range spec.Disks {
		spec.Disks[i].Path = filepath.Join(spec.VMDir, filepath.Base(spec.Disks[i].Path))
	}
	spec.Vmlinux, spec.Initrd = "/var/lib/banger/images/deb/vmlinux", "/var/lib/banger/images/deb/initrd.img"
	e := New(Config{Binary: "/usr/local/bin/firecracker", JailerBinary: "/usr/local/bin/jailer", ChrootBase: "/var/lib/banger/jail"})
	p := e.planJail(spec)
	b, _ := json.MarshalIndent(p, "", "  ")
	golden.Check(t, "testdata/jail-plan.golden", string(b)+"\n")
	b, _ = json.MarshalIndent(configRequests(spec, p.Paths), "", "  ")
	golden.Check(t, "testdata/jail-requests.golden", string(b)+"\n")
	if l := e.planLaunch(spec); l.binary != "/usr/local/bin/jailer" || l.marker != "\x00--id\x00fc1\x00" {
		t.Errorf("launch = %+v", l)
	}
}

func TestJailPrepare(t *testing.T) {
	spec := fakeSpec(t)
	base := t.TempDir()
	e := New(Config{Binary: "/usr/local/bin/firecracker", JailerBinary: "jailer", ChrootBase: base})
	p := e.planJail(spec)
	if err := p.prepare(os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	for _, l := range p.Links {
		var a, b unix.Stat_t
		if unix.Stat(l.Src, &a) != nil || unix.Stat(l.Dst, &b) != nil || a.Ino != b.Ino {
			t.Errorf("%s is not a hard link of %s", l.Dst, l.Src)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "firecracker", "fc1", "root", "firecracker.log")); err != nil {
		t.Errorf("logger file not created in the jail: %v", err)
	}
	cleanup(vmm.Handles{Extra: map[string]string{"jail_dir": p.JailDir}})
	if _, err := os.Stat(p.JailDir); err == nil {
		t.Error("jail dir left after cleanup")
	}
	if _, err := os.Stat(spec.Disks[0].Path); err != nil {
		t.Errorf("cleanup removed the VM's own disk: %v", err)
	}
}

func checkGone(t *testing.T, e *Engine, h vmm.Handles) {
	t.Helper()
	if e.Alive(h) {
		t.Errorf("pid %d alive after Stop", h.PID)
	}
	if st, err := e.State(context.Background(), h); err != nil || st != vmm.StateStopped {
		t.Errorf("State after Stop = %q, %v", st, err)
	}
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left after Stop", p)
		}
	}
}

// checkNoProcess fails when any process's cmdline names sock.
func checkNoProcess(t *testing.T, sock string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		if b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline")); err == nil && strings.Contains(string(b), sock) {
			if s, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); !strings.Contains(string(s), ") Z") {
				t.Errorf("process %s (%q) still runs", d.Name(), b)
			}
		}
	}
}

// requestLog renders the fake's request log one request a line, with the
// VM dir replaced by $VMDIR.
func requestLog(t *testing.T, path, vmDir string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r fctest.Request
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		sb.WriteString(r.Method + " " + r.Path + " " + itoa(r.Status) + " " + string(r.Body) + "\n")
	}
	return strings.ReplaceAll(sb.String(), vmDir, "$VMDIR")
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
