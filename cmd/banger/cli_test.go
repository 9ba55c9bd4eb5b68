package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/store"
)

// startDaemon runs a real daemon on a temp socket and returns the config
// file that points the CLI at it.
func startDaemon(t *testing.T) (configPath string, st *store.Store) {
	return startDaemonWith(t, &daemontest.VMs{})
}

func startDaemonWith(t *testing.T, fake *daemontest.VMs) (configPath string, st *store.Store) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SocketPath = filepath.Join(dir, "bangerd.sock")
	cfg.Path = filepath.Join(dir, "config.toml")
	toml := fmt.Sprintf("state_dir = %q\nsocket_path = %q\n", cfg.StateDir, cfg.SocketPath)
	if err := os.WriteFile(cfg.Path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg, daemon.Options{Version: "dev", ShutdownGrace: 3 * time.Second,
		Services: func(s *store.Store, log *slog.Logger) (daemon.Services, error) {
			st = s
			return daemontest.Services(fake, nil)(s, log)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return cfg.Path, st
}

// cli runs the real command tree and returns exit code, stdout, stderr.
func cli(t *testing.T, configPath string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := execute(context.Background(), append([]string{"--config", configPath}, args...),
		strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("stdout is not JSON for %T: %v\n%s", v, err, s)
	}
	return v
}

func TestCLIAgainstDaemon(t *testing.T) {
	cfgPath, st := startDaemon(t)
	ctx := context.Background()
	if err := st.CreateImage(ctx, &api.Image{Name: "deb", Source: "register", Engines: []string{"qemu"}}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := cli(t, cfgPath, "daemon", "status", "--json")
	if code != 0 {
		t.Fatalf("daemon status: %d %s", code, errOut)
	}
	if s := decode[api.DaemonStatus](t, out); s.Images != 1 || s.PID != os.Getpid() {
		t.Fatalf("status = %+v", s)
	}

	code, out, _ = cli(t, cfgPath, "image", "list", "--json")
	if imgs := decode[[]api.Image](t, out); code != 0 || len(imgs) != 1 || imgs[0].Name != "deb" {
		t.Fatalf("image list = %d %+v", code, imgs)
	}
	code, out, _ = cli(t, cfgPath, "image", "show", "deb", "--json")
	if img := decode[api.Image](t, out); code != 0 || img.Name != "deb" {
		t.Fatalf("image show = %d %+v", code, img)
	}

	code, out, errOut = cli(t, cfgPath, "vm", "create", "--name", "box", "--memory", "1GiB", "--vcpus", "2", "--json")
	if code != 0 {
		t.Fatalf("vm create: %d %s", code, errOut)
	}
	if vm := decode[api.VM](t, out); vm.Name != "box" || vm.MemoryMiB != 1024 || vm.VCPUs != 2 {
		t.Fatalf("created %+v", vm)
	}
	if !strings.Contains(errOut, "  ✓ allocate") || !strings.Contains(errOut, "  ✓ boot") {
		t.Fatalf("stage lines missing from stderr:\n%s", errOut)
	}

	code, out, _ = cli(t, cfgPath, "vm", "list")
	if code != 0 || !strings.HasPrefix(out, "NAME ") || !strings.Contains(out, "box ") {
		t.Fatalf("vm list = %d\n%s", code, out)
	}
	code, out, _ = cli(t, cfgPath, "vm", "show", "box", "--json")
	if d := decode[api.VMDetail](t, out); code != 0 || d.VM.Name != "box" {
		t.Fatalf("vm show = %d %+v", code, d)
	}

	code, out, errOut = cli(t, cfgPath, "vm", "show", "nope")
	if code == 0 || out != "" || !strings.Contains(errOut, `"nope"`) || !strings.Contains(errOut, "not found") {
		t.Fatalf("vm show nope = %d stdout %q stderr %q", code, out, errOut)
	}

	code, _, errOut = cli(t, cfgPath, "vm", "edit", "box", "--vcpus", "4")
	if code != 1 || !strings.Contains(errOut, "vm is running") {
		t.Fatalf("vm edit = %d %q", code, errOut)
	}

	code, out, errOut = cli(t, cfgPath, "vm", "delete", "box", "--json")
	if ops := decode[[]api.Operation](t, out); code != 0 || len(ops) != 1 || ops[0].State != api.OpSucceeded {
		t.Fatalf("vm delete = %d %+v %s", code, ops, errOut)
	}

	code, out, _ = cli(t, cfgPath, "version", "--json")
	if v := decode[versionInfo](t, out); code != 0 || v.Daemon != "dev" || v.Client == "" {
		t.Fatalf("version = %d %+v", code, v)
	}
}

func TestCLIBadFlags(t *testing.T) {
	cfgPath, _ := startDaemon(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "create", "--memory", "lots"}, `invalid argument "lots" for "--memory" flag`},
		{[]string{"vm", "create", "--memory", "512"}, "--memory 512 is less than 1MiB"},
		{[]string{"vm", "edit", "box"}, "nothing to change"},
		{[]string{"image", "create", "x"}, "--from-debian"},
		{[]string{"image", "register", "x"}, `required flag(s) "initrd", "kernel", "rootfs" not set`},
	}
	for _, tt := range tests {
		code, _, errOut := cli(t, cfgPath, tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d stderr %q, want %q", tt.args, code, errOut, tt.want)
		}
	}
}

// TestCLIUnknownVerb: an unknown verb under a noun fails (it used to print the
// group's help and exit 0), names the command and lists the verbs; the noun
// alone still prints its help.
func TestCLIUnknownVerb(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"image", "frobnicate", "x"}, []string{`unknown command "frobnicate" for "banger image"`, "banger image has:", "list"}},
		{[]string{"vm", "frobnicate"}, []string{`unknown command "frobnicate" for "banger vm"`, "create", "delete"}},
		{[]string{"vm", "creat"}, []string{`unknown command "creat"`, "did you mean banger vm create?"}},
		{[]string{"daemon", "restart-all"}, []string{`unknown command "restart-all" for "banger daemon"`}},
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate" for "banger"`}},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := execute(context.Background(), tt.args, strings.NewReader(""), &out, &errOut)
		if code == 0 {
			t.Errorf("%v: exit 0, want non-zero (stdout %q)", tt.args, out.String())
		}
		for _, w := range tt.want {
			if !strings.Contains(errOut.String(), w) {
				t.Errorf("%v: stderr %q lacks %q", tt.args, errOut.String(), w)
			}
		}
	}
	var out, errOut bytes.Buffer
	if code := execute(context.Background(), []string{"vm"}, strings.NewReader(""), &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "Available Commands") {
		t.Errorf("banger vm: code %d stdout %q stderr %q, want its help", code, out.String(), errOut.String())
	}
}

func TestCLIDaemonStop(t *testing.T) {
	cfgPath, _ := startDaemon(t)
	code, _, errOut := cli(t, cfgPath, "daemon", "stop")
	if code != 0 || !strings.Contains(errOut, "bangerd stopped") {
		t.Fatalf("daemon stop = %d %q", code, errOut)
	}
	code, _, errOut = cli(t, cfgPath, "daemon", "stop")
	if code != 0 || !strings.Contains(errOut, "not running") {
		t.Fatalf("second daemon stop = %d %q", code, errOut)
	}
	code, out, _ := cli(t, cfgPath, "version")
	if code != 0 || !strings.Contains(out, "bangerd not running") {
		t.Fatalf("version = %d %q", code, out)
	}
}

// A daemon error's fix action reaches the CLI as the command to run.
func TestCLIPrintsFixAction(t *testing.T) {
	cfgPath, _ := startDaemon(t)
	code, _, errOut := cli(t, cfgPath, "vm", "show", "nope")
	if code != 1 || !strings.Contains(errOut, `vm "nope" not found`) || !strings.Contains(errOut, "  fix: banger vm list\n") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
}

func TestWorkspaceAndLifetimeBadInput(t *testing.T) {
	cfgPath, _ := startDaemon(t)
	plain := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "create", "--workspace", plain}, "not in a git repository"},
		{[]string{"vm", "run", "--workspace", plain, "--", "true"}, "not in a git repository"},
		{[]string{"vm", "diff", "x", "--repo", plain}, "not in a git repository"},
		{[]string{"vm", "create", "--ttl", "soon"}, "invalid duration"},
		{[]string{"vm", "create", "--idle-stop", "-5m"}, "invalid duration"},
		{[]string{"vm", "lifetime", "nope", "--ttl", "1h"}, "not found"},
	} {
		code, _, stderr := cli(t, cfgPath, tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("banger %v: exit %d, stderr %q; want %q", tc.args, code, stderr, tc.want)
		}
	}
}
