package main

import (
	"context"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/daemon/daemontest"
)

// `vm opencode` prints the plain URLs, then the one with the VM's
// credential (what it opens); --json carries user and password; a server
// without a password is a warning on stderr; vm show names no password.
func TestCLIVMOpencodeCredential(t *testing.T) {
	access := api.FeatureAccess{Feature: "opencode", URL: "http://opencode:pw@10.0.0.2:4096", User: "opencode", Password: "pw"}
	fake := &daemontest.VMs{DetailFunc: func(d api.VMDetail) api.VMDetail {
		d.Alive = true
		d.URLs = []string{"http://oc.vm:4096", "http://10.0.0.2:4096"}
		d.Access = []api.FeatureAccess{access}
		return d
	}}
	cfgPath, st := startDaemonWith(t, fake)
	if err := st.CreateImage(context.Background(), &api.Image{Name: "deb", Source: "register", Engines: []string{"qemu"}}); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := cli(t, cfgPath, "vm", "create", "--name", "oc", "--image", "deb"); code != 0 {
		t.Fatalf("vm create: %d %s", code, errOut)
	}
	code, out, errOut := cli(t, cfgPath, "vm", "opencode", "oc", "--no-open")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 3 ||
		lines[1] != "http://10.0.0.2:4096" || lines[2] != access.URL || errOut != "" {
		t.Errorf("vm opencode: %d %q %q", code, out, errOut)
	}
	code, out, _ = cli(t, cfgPath, "vm", "opencode", "oc", "--json")
	if got := decode[struct {
		URLs []string `json:"urls"`
		api.FeatureAccess
	}](t, out); code != 0 || got.Password != "pw" || got.User != "opencode" || got.URL != access.URL || len(got.URLs) != 2 {
		t.Errorf("vm opencode --json: %d %+v", code, got)
	}
	code, out, _ = cli(t, cfgPath, "vm", "show", "oc")
	if code != 0 || strings.Contains(out, "pw@") || !strings.Contains(out, "opencode password") {
		t.Errorf("vm show: %d %s", code, out)
	}

	access = api.FeatureAccess{Feature: "opencode", URL: "http://10.0.0.2:4096", Warning: "opencode answers without a password (exit 1)"}
	code, out, errOut = cli(t, cfgPath, "vm", "opencode", "oc", "--no-open")
	if code != 0 || strings.Contains(out, "@") || !strings.Contains(errOut, "warning: opencode answers without a password") {
		t.Errorf("vm opencode, no password: %d %q %q", code, out, errOut)
	}
	code, out, _ = cli(t, cfgPath, "vm", "show", "oc")
	if code != 0 || !strings.Contains(out, "NONE: opencode answers without a password") {
		t.Errorf("vm show, no password: %d %s", code, out)
	}
}
