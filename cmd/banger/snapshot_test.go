package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
	"banger/internal/store"
)

func seedRunningVM(t *testing.T, st *store.Store, name string) {
	t.Helper()
	ctx := context.Background()
	img, err := st.GetImage(ctx, "deb")
	if err != nil {
		img = api.Image{Name: "deb", Source: "register", Engines: []string{"qemu"}}
		if err := st.CreateImage(ctx, &img); err != nil {
			t.Fatal(err)
		}
	}
	vm := api.VM{Name: name, ImageID: img.ID, ImageName: img.Name, VCPUs: 2, MemoryMiB: 1024}
	vm.Runtime.State, vm.Runtime.Engine = api.VMRunning, "qemu"
	if err := st.CreateVM(ctx, &vm, store.Alloc{Subnet: config.Default().Subnet}); err != nil {
		t.Fatal(err)
	}
}

func TestCLISnapshotsAndForks(t *testing.T) {
	cfgPath, st := startDaemon(t)
	seedRunningVM(t, st, "web")

	code, out, errOut := cli(t, cfgPath, "snapshot", "create", "web", "ready")
	if code != 0 || out != "ready\n" || !strings.Contains(errOut, "snapshotting web") ||
		!strings.Contains(errOut, "  ✓ pause") || !strings.Contains(errOut, "banger vm fork ready") {
		t.Fatalf("snapshot create = %d %q %q", code, out, errOut)
	}
	code, out, _ = cli(t, cfgPath, "snapshot", "list")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "CHILDREN") ||
		!strings.Contains(out, "ready") || !strings.Contains(out, "2 vCPU 1.0GiB") {
		t.Fatalf("snapshot list = %d\n%s", code, out)
	}

	code, out, errOut = cli(t, cfgPath, "vm", "fork", "ready", "--count", "3", "--name", "kid", "--ttl", "1h")
	if code != 0 || !strings.Contains(out, "kid-1") || !strings.Contains(out, "kid-3") || !strings.Contains(out, "IP") ||
		!strings.Contains(errOut, "✓ kid-2: restore") {
		t.Fatalf("vm fork = %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = cli(t, cfgPath, "vm", "fork", "ready", "--name", "solo", "--json")
	if r := decode[api.VMForkResult](t, out); code != 0 || len(r.VMs) != 1 || r.VMs[0].Name != "solo" || r.Snapshot != "ready" {
		t.Fatalf("vm fork --json = %d %+v", code, r)
	}
	code, out, _ = cli(t, cfgPath, "snapshot", "show", "ready", "--json")
	if s := decode[api.Snapshot](t, out); code != 0 || len(s.Children) != 4 {
		t.Fatalf("snapshot show --json = %d %+v", code, s)
	}
	code, out, _ = cli(t, cfgPath, "snapshot", "show", "ready")
	if code != 0 || !strings.Contains(out, "children:") || !strings.Contains(out, "kid-2") || !strings.Contains(out, "memory:") {
		t.Fatalf("snapshot show = %d\n%s", code, out)
	}
	code, _, errOut = cli(t, cfgPath, "snapshot", "delete", "ready")
	if code != 1 || !strings.Contains(errOut, "live VMs") || !strings.Contains(errOut, "fix: banger vm delete") {
		t.Fatalf("snapshot delete with children = %d %q", code, errOut)
	}
	code, _, _ = cli(t, cfgPath, "vm", "delete", "kid-1", "kid-2", "kid-3", "solo")
	if code != 0 {
		t.Fatalf("vm delete children = %d", code)
	}
	code, out, _ = cli(t, cfgPath, "snapshot", "delete", "ready", "--json")
	if code != 0 || !strings.Contains(out, `"deleted": "ready"`) {
		t.Fatalf("snapshot delete = %d %q", code, out)
	}
	code, out, _ = cli(t, cfgPath, "snapshot", "list", "--json")
	if l := decode[[]api.Snapshot](t, out); code != 0 || len(l) != 0 {
		t.Fatalf("snapshot list after delete = %d %+v", code, l)
	}
}

func TestCLIWarmImage(t *testing.T) {
	cfgPath, st := startDaemon(t)
	seedRunningVM(t, st, "web")
	code, out, errOut := cli(t, cfgPath, "image", "warm", "deb", "--engine", "qemu")
	if code != 0 || out != "warm-deb\n" || !strings.Contains(errOut, "✓ boot") || !strings.Contains(errOut, "image deb is warm") {
		t.Fatalf("image warm = %d %q %q", code, out, errOut)
	}
	code, out, _ = cli(t, cfgPath, "image", "list")
	if code != 0 || !strings.Contains(out, "WARM") || !strings.Contains(out, "qemu") {
		t.Fatalf("image list = %d\n%s", code, out)
	}
	code, out, _ = cli(t, cfgPath, "image", "show", "deb")
	if code != 0 || !strings.Contains(out, "warm:") || !strings.Contains(out, "warm-deb (qemu") {
		t.Fatalf("image show = %d\n%s", code, out)
	}
	code, out, _ = cli(t, cfgPath, "image", "show", "deb", "--json")
	if img := decode[api.Image](t, out); code != 0 || img.Warm == nil || !img.Warm.Usable {
		t.Fatalf("image show --json = %d %+v", code, img.Warm)
	}
	code, _, errOut = cli(t, cfgPath, "image", "warm", "deb", "--engine", "vmware")
	if code != 1 || !strings.Contains(errOut, `unknown engine "vmware"`) {
		t.Fatalf("image warm --engine vmware = %d %q", code, errOut)
	}
	code, _, errOut = cli(t, cfgPath, "image", "unwarm", "deb")
	if code != 0 || !strings.Contains(errOut, "no longer warm") {
		t.Fatalf("image unwarm = %d %q", code, errOut)
	}
	code, out, _ = cli(t, cfgPath, "image", "show", "deb")
	if code != 0 || !strings.Contains(out, "warm:") || !strings.Contains(out, "no (banger image warm") {
		t.Fatalf("image show after unwarm = %d\n%s", code, out)
	}
	code, _, errOut = cli(t, cfgPath, "image", "unwarm", "deb")
	if code != 1 || !strings.Contains(errOut, "fix: banger image warm deb") {
		t.Fatalf("image unwarm twice = %d %q", code, errOut)
	}
}

// Bad input is refused with the fix before any request: the daemon has
// begun no operation afterwards.
func TestCLISnapshotBadInput(t *testing.T) {
	cfgPath, st := startDaemon(t)
	seedRunningVM(t, st, "web")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"vm", "fork"}, []string{"takes 1 argument(s), got 0", "fix: banger vm fork VM|SNAPSHOT"}},
		{[]string{"vm", "fork", "web", "--count", "0"}, []string{"--count 0 is not from 1 to 64", "fix: fork 1 to 64"}},
		{[]string{"vm", "fork", "web", "--count", "65"}, []string{"--count 65 is not from 1 to 64"}},
		{[]string{"vm", "fork", "web", "--ttl", "soon"}, []string{"invalid duration"}},
		{[]string{"snapshot", "create"}, []string{"takes a VM and an optional snapshot name", "fix: banger snapshot create VM [NAME]"}},
		{[]string{"snapshot", "create", "a", "b", "c"}, []string{"got 3 arguments"}},
		{[]string{"snapshot", "show"}, []string{"fix: banger snapshot show NAME"}},
		{[]string{"snapshot", "delete"}, []string{"fix: banger snapshot delete NAME"}},
		{[]string{"image", "warm"}, []string{"fix: banger image warm IMAGE"}},
		{[]string{"image", "unwarm"}, []string{"fix: banger image unwarm IMAGE"}},
		{[]string{"vm", "create", "--from", "s", "--image", "deb"}, []string{"--from s and --image cannot go together", "fix: leave out --image"}},
		{[]string{"vm", "create", "--from", "s", "--cold"}, []string{"--from s and --cold"}},
		{[]string{"vm", "create", "--from", "s", "--vcpus", "4"}, []string{"--from s and --vcpus"}},
		{[]string{"snapshot", "frobnicate"}, []string{`unknown command "frobnicate" for "banger snapshot"`, "create", "list"}},
	} {
		code, out, errOut := cli(t, cfgPath, tc.args...)
		if code == 0 || out != "" {
			t.Errorf("banger %v: exit %d stdout %q, want a failure", tc.args, code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("banger %v: stderr %q lacks %q", tc.args, errOut, w)
			}
		}
	}
	code, out, _ := cli(t, cfgPath, "vm", "list", "--json")
	if vms := decode[[]api.VM](t, out); code != 0 || len(vms) != 1 {
		t.Fatalf("bad input made VMs: %+v", vms)
	}
	var ops bytes.Buffer
	if code := execute(context.Background(), []string{"--config", cfgPath, "snapshot", "list", "--json"}, strings.NewReader(""), &ops, &bytes.Buffer{}); code != 0 || strings.TrimSpace(ops.String()) != "[]" {
		t.Fatalf("bad input made snapshots: %s", ops.String())
	}
}

// vm create --from and --cold reach the daemon in the request.
func TestCLICreateFromAndCold(t *testing.T) {
	var got []api.VMCreateRequest
	fake := &daemontest.VMs{CreateFunc: func(_ context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
		got = append(got, req)
		rep.Stage("restore")(nil)
		return api.VM{Name: req.Name}, nil
	}}
	cfgPath, _ := startDaemonWith(t, fake)
	if code, _, errOut := cli(t, cfgPath, "vm", "create", "--from", "snap", "--name", "b"); code != 0 {
		t.Fatalf("vm create --from: %d %s", code, errOut)
	}
	if code, _, errOut := cli(t, cfgPath, "vm", "create", "--cold", "--name", "c"); code != 0 {
		t.Fatalf("vm create --cold: %d %s", code, errOut)
	}
	if len(got) != 2 || got[0].From != "snap" || got[0].Cold || !got[1].Cold || got[1].From != "" {
		t.Fatalf("requests = %+v", got)
	}
}

func TestSnapshotTable(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	snapshotTableAt(&b, []api.Snapshot{
		{Name: "web-snap", Kind: "vm", VMName: "web", ImageName: "deb", Engine: "qemu", VCPUs: 2, MemoryMiB: 1024,
			SizeBytes: 300 << 20, Children: []string{"a", "b"}, CreatedAt: now.Add(-3 * time.Hour)},
		{Name: "deb-warm", Kind: "warm", ImageName: "deb", Engine: "qemu", VCPUs: 1, MemoryMiB: 512, CreatedAt: now.Add(-90 * time.Second)},
	}, now)
	want := "NAME      KIND  VM   IMAGE  ENGINE  SHAPE            SIZE      CHILDREN  AGE\n" +
		"web-snap  vm    web  deb    qemu    2 vCPU 1.0GiB    300.0MiB  2         3h\n" +
		"deb-warm  warm  -    deb    qemu    1 vCPU 512.0MiB  0B        0         1m\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}
