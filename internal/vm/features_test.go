package vm

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/progress"
	"banger/internal/vmm"
)

// A second feature is one descriptor: a test-only one goes through --wait
// validation, the readiness stage and the URLs without any code here
// knowing its name.
func TestFeatureDescriptorIsAllItTakes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	echo := feature.Descriptor{Name: "echo", Port: port, Path: "/ready", Stage: "echo ready", MinWait: 10 * time.Second}
	saved := features
	features = feature.NewRegistry(feature.Opencode, echo)
	t.Cleanup(func() { features = saved })

	f := newFixture(t)
	ctx := context.Background()
	img := api.Image{Name: "echo-img", Rootfs: "/x", Features: []string{feature.Agent, "echo"}, Engines: []string{vmm.QEMU}}
	if err := f.st.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	plain, _ := f.st.GetImage(ctx, "img")
	for _, c := range []struct {
		wait string
		img  api.Image
		ok   bool
	}{{"", img, true}, {api.WaitAgent, img, true}, {"echo", img, true}, {"echo", plain, false},
		{"opencode", img, false}, {"sshd", img, false}} {
		if err := checkWait(c.wait, c.img); (err == nil) != c.ok || (err != nil && api.KindOf(err) != api.KindInvalid) {
			t.Errorf("checkWait(%q, %s) = %v", c.wait, c.img.Name, err)
		}
	}

	v := api.VM{Name: "x", ImageID: img.ID, Runtime: api.VMRuntime{State: api.VMRunning, GuestIP: "127.0.0.1", DNSName: "x.vm"}}
	alive := func() bool { return true }
	rec := &progress.Recorder{}
	if err := f.m.waitFeatures(ctx, v, "", alive, rec); err != nil {
		t.Fatal(err)
	}
	if got := rec.Names(); !slices.Equal(got, []string{"echo ready"}) || rec.Stages[0].Detail != "http://127.0.0.1:"+portStr {
		t.Errorf("stages = %v %+v", got, rec.Stages)
	}
	rec = &progress.Recorder{}
	if err := f.m.waitFeatures(ctx, v, "opencode", alive, rec); err != nil || len(rec.Names()) != 0 {
		t.Errorf("--wait opencode on an echo image: %v %v", rec.Names(), err)
	}
	want := []string{"http://x.vm:" + portStr, "http://127.0.0.1:" + portStr}
	if got := f.m.urls(ctx, v); !slices.Equal(got, want) {
		t.Errorf("urls = %v, want %v", got, want)
	}
	srv.Close()
	dead := func() bool { return false }
	if err := f.m.waitFeatures(ctx, v, "echo", dead, &progress.Recorder{}); err == nil {
		t.Error("a feature that never answers was ready")
	}
}
