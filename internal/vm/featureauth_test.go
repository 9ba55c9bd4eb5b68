package vm

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/progress"
	"banger/internal/vmm"
)

// Each VM gets its own random password, made once, kept 0600, and usable
// in a URL and a systemd environment file.
func TestFeatureSecret(t *testing.T) {
	a := api.VM{Runtime: api.VMRuntime{VMDir: t.TempDir()}}
	b := api.VM{Runtime: api.VMRuntime{VMDir: t.TempDir()}}
	s1, err := featureSecret(a, feature.Opencode)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := featureSecret(a, feature.Opencode)
	other, _ := featureSecret(b, feature.Opencode)
	if s1 != again || s1 == other {
		t.Errorf("secrets: %q then %q, other VM %q", s1, again, other)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(s1); err != nil || len(raw) != secretBytes {
		t.Errorf("secret %q is not %d base64url bytes: %v", s1, secretBytes, err)
	}
	fi, err := os.Stat(filepath.Join(a.Runtime.VMDir, "opencode.secret"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file: %v %v", fi, err)
	}
	// An unreadable directory is an error, not an empty password.
	if _, err := featureSecret(api.VM{Runtime: api.VMRuntime{VMDir: "/nonexistent/dir"}}, feature.Opencode); err == nil {
		t.Error("featureSecret in a missing directory succeeded")
	}
}

// authScript, run by a real sh against a stub systemctl: a unit that reads
// the file is started; an old unit gets a runtime drop-in and a restart.
func TestAuthScript(t *testing.T) {
	for _, c := range []struct {
		name, unit, wantOut string
		wantCalls           []string
		dropin              bool
	}{
		{"baked unit", "[Service]\nEnvironmentFile=ENVFILE\nExecStart=/x\n", "", []string{"cat opencode.service", "start opencode.service"}, false},
		{"old image", "[Service]\nExecStart=/x\n", "healed", []string{"cat opencode.service", "daemon-reload", "restart opencode.service"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			envFile := filepath.Join(dir, "run", "banger", "opencode.env")
			unitDir := filepath.Join(dir, "units")
			bin := filepath.Join(dir, "bin")
			_ = os.MkdirAll(bin, 0o755)
			unitText := strings.ReplaceAll(c.unit, "ENVFILE", envFile)
			stub := "#!/bin/sh\necho \"$*\" >>" + filepath.Join(dir, "calls") + "\n[ \"$1\" = cat ] && printf '%s' '" + unitText + "'\nexit 0\n"
			if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
			a := *feature.Opencode.Auth
			a.EnvFile = envFile
			cmd := exec.Command("sh", "-c", authScript(a, unitDir))
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
			cmd.Stdin = strings.NewReader("OPENCODE_SERVER_PASSWORD=s3cret\n")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if strings.TrimSpace(string(out)) != c.wantOut {
				t.Errorf("output %q, want %q", out, c.wantOut)
			}
			data, err := os.ReadFile(envFile)
			fi, _ := os.Stat(envFile)
			if err != nil || string(data) != "OPENCODE_SERVER_PASSWORD=s3cret\n" || fi.Mode().Perm() != 0o600 {
				t.Errorf("env file %q (%v), mode %v", data, err, fi.Mode())
			}
			calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
			if got := strings.Split(strings.TrimSpace(string(calls)), "\n"); strings.Join(got, "|") != strings.Join(c.wantCalls, "|") {
				t.Errorf("systemctl calls %q, want %q", got, c.wantCalls)
			}
			dropin, err := os.ReadFile(filepath.Join(unitDir, "opencode.service.d", "banger-auth.conf"))
			if c.dropin && (err != nil || string(dropin) != "[Service]\nEnvironmentFile="+envFile+"\n") {
				t.Errorf("drop-in %q, %v", dropin, err)
			}
			if !c.dropin && err == nil {
				t.Errorf("a drop-in for a unit that reads the file: %q", dropin)
			}
		})
	}
}

// The readiness probe authenticates with the VM's password, and
// VMDetail.Access hands it over only once the guest has it, with a
// warning otherwise.
func TestProbeAuthAndAccess(t *testing.T) {
	var gotUser, gotPass string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotUser, gotPass, _ = r.BasicAuth()
	}))
	defer srv.Close()
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	auth := *feature.Opencode.Auth
	sec := feature.Descriptor{Name: "sec", Port: port, Path: "/h", Stage: "sec ready", MinWait: 10 * time.Second, Auth: &auth}
	saved := features
	features = feature.NewRegistry(sec)
	t.Cleanup(func() { features = saved })

	f := newFixture(t)
	ctx := context.Background()
	img := api.Image{Name: "sec-img", Rootfs: "/x", Features: []string{feature.Agent, "sec"}, Engines: []string{vmm.QEMU}}
	if err := f.st.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	v := api.VM{Name: "x", ImageID: img.ID, Runtime: api.VMRuntime{State: api.VMRunning, GuestIP: "127.0.0.1", VMDir: t.TempDir()}}
	if err := f.m.waitFeatures(ctx, v, "", func() bool { return true }, &progress.Recorder{}); err != nil {
		t.Fatal(err)
	}
	secret, _ := featureSecret(v, sec)
	if gotUser != "opencode" || gotPass != secret || secret == "" {
		t.Errorf("probe sent %q:%q, want opencode:%q", gotUser, gotPass, secret)
	}

	rec := filepath.Join(v.Runtime.VMDir, featureAuthName)
	for _, c := range []struct{ status, wantURL, warn string }{
		{"", "http://127.0.0.1:" + portStr, "has not given it one"},
		{`{"sec":"exit 1: no systemctl"}`, "http://127.0.0.1:" + portStr, "exit 1: no systemctl"},
		{`{"sec":"protected"}`, "http://opencode:" + secret + "@127.0.0.1:" + portStr, ""},
		{`{"sec":"healed"}`, "http://opencode:" + secret + "@127.0.0.1:" + portStr, ""},
	} {
		_ = os.Remove(rec)
		if c.status != "" {
			_ = os.WriteFile(rec, []byte(c.status), 0o600)
		}
		acc := f.m.access(ctx, v)
		if len(acc) != 1 || acc[0].URL != c.wantURL || (c.warn == "") != (acc[0].Warning == "") ||
			!strings.Contains(acc[0].Warning, c.warn) || (c.warn == "") != (acc[0].Password == secret) {
			t.Errorf("status %s: access %+v", c.status, acc)
		}
	}
	v.Runtime.State = api.VMStopped
	if acc := f.m.access(ctx, v); acc != nil {
		t.Errorf("a stopped VM's access: %+v", acc)
	}
}
