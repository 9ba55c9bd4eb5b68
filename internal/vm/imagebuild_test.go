package vm

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/image"
	"banger/internal/progress"
	"banger/internal/vmm"
)

// A create from an image an older banger recorded (no work-seed, no
// fingerprint) is refused until the start-up data patch (image.HealAll,
// through the real image service) has brought it up to date; after it,
// creates never upgrade anything.
func TestCreateAfterStartupHeal(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	old := api.Image{Name: "old", Kernel: filepath.Join(f.dir, "vmlinuz"), Initrd: filepath.Join(f.dir, "initrd"),
		Rootfs: filepath.Join(f.dir, "old-rootfs.ext4"), Engines: []string{vmm.QEMU}}
	mkext4(t, old.Rootfs, "32M")
	if err := f.st.CreateImage(ctx, &old); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "a", Image: "old", NoStart: true}, progress.Nop{}); !api.IsFailedPrecondition(err) {
		t.Fatalf("create from an image not yet upgraded: %v, want FailedPrecondition", err)
	}
	svc := &image.Service{Store: f.st, ImagesDir: filepath.Join(f.dir, "images")}
	if err := svc.HealAll(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := f.st.GetImage(ctx, "old")
	if err != nil || got.WorkSeed == "" || got.Fingerprint == "" || image.NeedsHeal(got) {
		t.Fatalf("image after the start-up heal: %+v %v", got, err)
	}
	for _, n := range []string{"a", "b"} {
		rec := &progress.Recorder{}
		if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: n, Image: "old", NoStart: true}, rec); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(rec.Names(), image.StageUpgrade) {
			t.Errorf("create %s upgraded the image: %v", n, rec.Names())
		}
	}
	for _, n := range []string{"a", "b"} {
		if err := f.m.Delete(ctx, n, progress.Nop{}); err != nil {
			t.Fatal(err)
		}
	}
	f.assertEmpty(t)
}

// ExportDisks copies a stopped VM's disks and refuses a running one.
func TestExportDisks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v, err := f.m.Create(ctx, api.VMCreateRequest{Name: "e", NoStart: true}, progress.Nop{})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	sys, work := filepath.Join(out, "sys.ext4"), filepath.Join(out, "work.ext4")
	if err := f.m.ExportDisks(ctx, "e", sys, work); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sys, work} {
		if b, err := exec.Command("debugfs", "-R", "cat /hello", p).Output(); err != nil || string(b) != "hi\n" {
			t.Errorf("%s: exported disk lacks /hello: %q %v", p, b, err)
		}
	}
	if err := f.m.GrowSystemDisk(ctx, "e", 96<<20); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(v.Runtime.SystemDisk); err != nil || fi.Size() != 96<<20 {
		t.Errorf("system disk after growing to 96 MiB: %v %v", fi, err)
	}
	v.Runtime.State = api.VMRunning
	f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)
	if err := f.m.GrowSystemDisk(ctx, "e", 128<<20); api.KindOf(err) != api.KindFailedPrecondition {
		t.Errorf("growing a running vm's disk: %v", err)
	}
	err = f.m.ExportDisks(ctx, "e", filepath.Join(out, "s2"), "")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Kind != api.KindFailedPrecondition || ae.FixLine() != "stop it first: banger vm stop e" || ae.Action.Verb != "vm stop" {
		t.Errorf("export of a running vm: %v", err)
	}
	if _, err := exec.Command("test", "-e", filepath.Join(out, "s2")).Output(); err == nil {
		t.Error("a refused export left a file")
	}
	if err := f.m.ExportDisks(ctx, "nope", sys, ""); !api.IsNotFound(err) {
		t.Errorf("export of a missing vm: %v", err)
	}
}

func TestWaitHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var answering atomic.Bool
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !answering.Load() {
			time.Sleep(10 * time.Second) // accepts, but does not answer yet
		}
		http.NotFound(w, r) // any HTTP answer counts
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/global/health"
	ctx := context.Background()
	alive := func() bool { return true }
	time.AfterFunc(6*time.Second, func() { answering.Store(true) })
	start := time.Now()
	if err := waitHTTP(ctx, url, "", "", time.Minute, alive); err != nil {
		t.Fatalf("answering server: %v", err)
	}
	if time.Since(start) < 5*time.Second {
		t.Errorf("ready after %s, before the server answered", time.Since(start))
	}
	srv.Close()
	if err := waitHTTP(ctx, url, "", "", 700*time.Millisecond, alive); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("closed port: %v", err)
	}
	if err := waitHTTP(ctx, url, "", "", time.Minute, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("dead engine: %v", err)
	}
}

// A running VM of an opencode image lists its URLs; other VMs none.
func TestOpencodeURLs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	oc := api.Image{Name: "oc", Rootfs: "/x", Features: []string{"agent", feature.Opencode.Name}, Engines: []string{vmm.QEMU}}
	if err := f.st.CreateImage(ctx, &oc); err != nil {
		t.Fatal(err)
	}
	plain, _ := f.st.GetImage(ctx, "img")
	v := api.VM{Name: "x", ImageID: oc.ID, Runtime: api.VMRuntime{State: api.VMRunning, GuestIP: "10.203.0.5", DNSName: "x.vm"}}
	want := []string{"http://x.vm:4096", "http://10.203.0.5:4096"}
	if got := f.m.urls(ctx, v); !slices.Equal(got, want) {
		t.Errorf("urls = %v, want %v", got, want)
	}
	v.ImageID = plain.ID
	if got := f.m.urls(ctx, v); got != nil {
		t.Errorf("urls of a plain VM = %v", got)
	}
	v.ImageID, v.Runtime.State = oc.ID, api.VMStopped
	if got := f.m.urls(ctx, v); got != nil {
		t.Errorf("urls of a stopped VM = %v", got)
	}
}
