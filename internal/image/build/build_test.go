package build_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/build"
	"banger/internal/image/imagetest"
	"banger/internal/progress"
	"banger/internal/store"
)

// fakeGuests stands in for vm.Manager: Create records the builder, Exec
// answers every command with an exit code (and output) chosen per argv,
// ExportDisks copies prepared ext4 images. Real builder VMs boot in
// test/live.
type fakeGuests struct {
	mu        sync.Mutex
	createErr error
	startErr  error
	grown     map[string]int64 // system disk sizes asked for
	running   map[string]bool
	deleted   []string
	stopped   []string
	sys, work string                   // files ExportDisks copies
	exit      func(argv []string) int  // exit code per command (nil: 0)
	hang      func(argv []string) bool // commands that never finish
	stdins    map[string]int           // guest path → bytes received by a put
	ran       [][]string               // argv of every exec
	exportErr error
}

func newFakeGuests(sys, work string) *fakeGuests {
	return &fakeGuests{running: map[string]bool{}, sys: sys, work: work, stdins: map[string]int{}, grown: map[string]int64{}}
}

func (f *fakeGuests) Create(_ context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
	done := rep.Stage("allocate")
	done(f.createErr)
	if f.createErr != nil {
		return api.VM{}, f.createErr
	}
	f.mu.Lock()
	f.running[req.Name] = !req.NoStart
	f.mu.Unlock()
	return api.VM{Name: req.Name}, nil
}

func (f *fakeGuests) GrowSystemDisk(_ context.Context, name string, size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grown[name] = size
	return nil
}

func (f *fakeGuests) Start(_ context.Context, name string, rep progress.Reporter) (api.VM, error) {
	done := rep.Stage("agent ready")
	done(f.startErr)
	if f.startErr != nil {
		return api.VM{}, f.startErr
	}
	f.mu.Lock()
	f.running[name] = true
	f.mu.Unlock()
	return api.VM{Name: name}, nil
}

func (f *fakeGuests) Stop(_ context.Context, name string, _ progress.Reporter) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[name] = false
	f.stopped = append(f.stopped, name)
	return api.VM{Name: name}, nil
}

func (f *fakeGuests) Delete(_ context.Context, name string, _ progress.Reporter) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, name)
	f.deleted = append(f.deleted, name)
	return nil
}

func (f *fakeGuests) ExportDisks(ctx context.Context, name, sysDst, workDst string) error {
	f.mu.Lock()
	running := f.running[name]
	f.mu.Unlock()
	if running {
		return api.FailedPrecondition("vm %q is running", name).WithFix("stop it first").WithAction("vm stop", name)
	}
	if f.exportErr != nil {
		return f.exportErr
	}
	if err := cp(f.sys, sysDst); err != nil {
		return err
	}
	if workDst != "" {
		return cp(f.work, workDst)
	}
	return nil
}

func cp(src, dst string) error {
	out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		return errors.New(string(out))
	}
	return nil
}

// Exec serves one exec stream: it reads the request line and the stdin
// frames, then answers with one stdout line and the exit code.
func (f *fakeGuests) Exec(ctx context.Context, name string) (net.Conn, error) {
	host, guest := net.Pipe()
	go func() {
		defer guest.Close()
		br := bufio.NewReader(guest)
		line, err := br.ReadBytes('\n')
		if err != nil {
			return
		}
		var req struct {
			Exec api.ExecRequest `json:"exec"`
		}
		json.Unmarshal(line, &req)
		argv := req.Exec.Argv
		f.mu.Lock()
		f.ran = append(f.ran, argv)
		f.mu.Unlock()
		n := 0
		for {
			var hdr [5]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return
			}
			p := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
			io.ReadFull(br, p)
			if hdr[0] == 1 {
				n += len(p)
			}
			if hdr[0] == 2 {
				break
			}
		}
		if len(argv) >= 5 && strings.Contains(argv[2], "banger-part") {
			f.mu.Lock()
			f.stdins[argv[4]] = n
			f.mu.Unlock()
		}
		if f.hang != nil && f.hang(argv) {
			io.Copy(io.Discard, br) // until the host gives up
			return
		}
		code := 0
		if f.exit != nil {
			code = f.exit(argv)
		}
		frame := func(t byte, p []byte) {
			b := []byte{t, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(b[1:], uint32(len(p)))
			guest.Write(append(b, p...))
		}
		frame(5, []byte("output of "+strings.Join(argv, " ")+"\n"))
		frame(7, binary.BigEndian.AppendUint32(nil, uint32(int32(code))))
		io.Copy(io.Discard, br)
	}()
	return host, nil
}

// buildFixture is a store with a parent image and a catalogue whose
// Builds is a Builder booting the fake guests.
type buildFixture struct {
	svc    *image.Service
	st     *store.Store
	g      *fakeGuests
	parent api.Image
	dir    string
}

func newBuildFixture(t *testing.T) *buildFixture {
	t.Helper()
	req := imagetest.RegisterFiles(t)
	dir := t.TempDir()
	ctx := context.Background()
	st := imagetest.Store(t)
	imagesDir := filepath.Join(dir, "images")
	svc := &image.Service{Store: st, ImagesDir: imagesDir, StagingDir: filepath.Join(dir, "staging")}
	req.Name = "base"
	parent, err := svc.Register(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The VM's disks: a system disk with a first boot's identity and a
	// newer kernel in /boot, and a work disk with a marker.
	kernel, _ := os.ReadFile(req.Kernel)
	sys := imagetest.MkfsTree(t, "200M", map[string]string{
		"etc/ssh/ssh_host_ed25519_key": "secret", "etc/ssh/ssh_host_ed25519_key.pub": "pub",
		"etc/ssh/sshd_config": "keep", "etc/machine-id": "0123456789abcdef\n", "etc/hostname": "builder\n",
		"boot/vmlinuz-6.1.0-test-amd64": string(kernel), "boot/vmlinuz-6.3.0-9-cloud-amd64": string(kernel),
		"boot/initrd.img-6.3.0-9-cloud-amd64": "\x1f\x8b\x08initrd-new", "etc/built": "yes\n",
	})
	work := imagetest.MkfsTree(t, "300M", map[string]string{"marker": "from-work\n"})
	g := newFakeGuests(sys, work)
	svc.Builds = &build.Builder{Images: svc, Guests: g}
	return &buildFixture{svc: svc, st: st, g: g, parent: parent, dir: dir}
}

func (f *buildFixture) assertClean(t *testing.T, images ...string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(f.dir, "staging"))
	if len(ents) != 0 {
		t.Errorf("staging files left: %v", ents)
	}
	imgs, _ := f.st.ListImages(context.Background())
	var names []string
	for _, i := range imgs {
		names = append(names, i.Name)
	}
	if want := append([]string{"base"}, images...); !slices.Equal(names, want) {
		t.Errorf("images = %v, want %v", names, want)
	}
	f.g.mu.Lock()
	defer f.g.mu.Unlock()
	for n := range f.g.running {
		t.Errorf("builder vm %s left behind", n)
	}
}

func scriptFile(t *testing.T, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.sh")
	os.WriteFile(p, []byte("#!/bin/sh\necho hi\n"), mode)
	os.Chmod(p, mode)
	return p
}

func TestBuildCapturesAndRegisters(t *testing.T) {
	f := newBuildFixture(t)
	conf := scriptFile(t, 0o600)
	rec := &progress.Recorder{}
	img, err := f.svc.Build(context.Background(), api.ImageBuildRequest{Name: "child", From: "base",
		Script: scriptFile(t, 0o755), Copy: []api.ImageCopy{{Src: conf, Dst: "/etc/app.conf"}},
		With: []string{"opencode"}, Env: []string{"http_proxy=http://p:1"}, Size: 600 << 20}, rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"agent ready", image.StageCopy, build.StageScript, build.StageShutdown,
		build.StageCapture, image.StageWorkSeed, build.StageBootSet, image.StageFingerprint} {
		if !slices.Contains(rec.Names(), s) {
			t.Errorf("stage %q missing: %v", s, rec.Names())
		}
	}
	if !slices.ContainsFunc(rec.Lines, func(l string) bool { return strings.Contains(l, "output of /tmp/banger-build/script") }) {
		t.Errorf("the script's output was not streamed: %v", rec.Lines)
	}
	if img.Parent != "base" || img.Source != "build" || img.Fingerprint == f.parent.Fingerprint ||
		!slices.Contains(img.Features, "opencode") {
		t.Errorf("image = %+v", img)
	}
	if img.RootfsSize != 600<<20 {
		t.Errorf("--size 600MiB: rootfs is %d bytes", img.RootfsSize)
	}
	if img.KernelVersion != "6.3.0-9-cloud-amd64" || img.Vmlinux == "" {
		t.Errorf("the newer kernel in /boot was not taken: %q vmlinux %q", img.KernelVersion, img.Vmlinux)
	}
	if f.g.stdins["/etc/app.conf"] != len("#!/bin/sh\necho hi\n") || f.g.stdins["/tmp/banger-build/opencode.sh"] == 0 {
		t.Errorf("copied files: %v", f.g.stdins)
	}
	if _, ok := imagetest.DebugfsCat(t, img.Rootfs, "/etc/ssh/ssh_host_ed25519_key"); ok {
		t.Error("the builder's ssh host key is in the image")
	}
	if id, ok := imagetest.DebugfsCat(t, img.Rootfs, "/etc/machine-id"); !ok || id != "" {
		t.Errorf("machine-id = %q (present %v), want empty", id, ok)
	}
	if s, _ := imagetest.DebugfsCat(t, img.Rootfs, "/etc/ssh/sshd_config"); s != "keep" {
		t.Errorf("sshd_config lost: %q", s)
	}
	if m, _ := imagetest.DebugfsCat(t, img.WorkSeed, "/marker"); m != "from-work\n" {
		t.Errorf("work-seed lacks the builder's /root: %q", m)
	}
	if img.WorkSeedSize >= 300<<20 {
		t.Errorf("work-seed not shrunk: %d bytes", img.WorkSeedSize)
	}
	f.assertClean(t, "child")
	if len(f.g.deleted) != 1 {
		t.Errorf("builder deletes = %v, want one", f.g.deleted)
	}
	if got := f.g.grown[f.g.deleted[0]]; got != f.parent.RootfsSize+4<<30 {
		t.Errorf("builder system disk grown to %d, want the parent's + 4 GiB", got)
	}
	if !slices.ContainsFunc(f.g.ran, func(a []string) bool { return slices.Equal(a, []string{"resize2fs", "/dev/vda"}) }) {
		t.Errorf("the builder's root filesystem was not grown: %v", f.g.ran)
	}
	// The guest is cleaned and synced, then ended by the VM manager's stop
	// (which knows the engine's shutdown action), never by itself.
	clean := slices.IndexFunc(f.g.ran, func(a []string) bool { return strings.Contains(strings.Join(a, " "), "apt-get clean") })
	if clean < 0 || !strings.Contains(strings.Join(f.g.ran[clean], " "), "sync") {
		t.Errorf("the builder was not cleaned and synced: %v", f.g.ran)
	}
	for _, a := range f.g.ran {
		if cmd := strings.Join(a, " "); strings.Contains(cmd, "poweroff") || strings.Contains(cmd, "reboot") {
			t.Errorf("the build ended the guest itself (%q) instead of through Stop", cmd)
		}
	}
	if !slices.Equal(f.g.stopped, f.g.deleted) {
		t.Errorf("builder stops = %v, want the builder stopped once before its capture", f.g.stopped)
	}
}

func TestBuildFailuresLeaveNothing(t *testing.T) {
	cases := []struct {
		name  string
		setup func(*buildFixture, *api.ImageBuildRequest)
		kind  api.Kind
		want  string
	}{
		{"script fails", func(f *buildFixture, _ *api.ImageBuildRequest) {
			f.g.exit = func(argv []string) int {
				if argv[0] == "/tmp/banger-build/script" {
					return 3
				}
				return 0
			}
		}, api.KindFailedPrecondition, "exited with code 3"},
		{"builder never ready", func(f *buildFixture, _ *api.ImageBuildRequest) {
			f.g.startErr = api.Unavailable("the guest agent did not answer")
		}, api.KindUnavailable, "did not answer"},
		{"no room for the builder", func(f *buildFixture, _ *api.ImageBuildRequest) {
			f.g.createErr = api.Unavailable("no free address")
		}, api.KindUnavailable, "no free address"},
		{"timeout", func(f *buildFixture, r *api.ImageBuildRequest) {
			f.g.hang = func(argv []string) bool { return argv[0] == "/tmp/banger-build/script" }
			r.TimeoutSeconds = 1
		}, api.KindUnavailable, "timed out"},
		{"disk full", func(f *buildFixture, _ *api.ImageBuildRequest) {
			f.g.exportErr = errors.New("cp: error writing 'rootfs.ext4': No space left on device")
		}, api.KindInternal, "No space left"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newBuildFixture(t)
			req := api.ImageBuildRequest{Name: "child", From: "base", Script: scriptFile(t, 0o755)}
			c.setup(f, &req)
			_, err := f.svc.Build(context.Background(), req, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || api.KindOf(err) != c.kind {
				t.Fatalf("err = %v (kind %s), want kind %s mentioning %q", err, api.KindOf(err), c.kind, c.want)
			}
			f.assertClean(t)
		})
	}
}

func TestBuildCancelled(t *testing.T) {
	f := newBuildFixture(t)
	f.g.hang = func(argv []string) bool { return argv[0] == "/tmp/banger-build/script" }
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := f.svc.Build(ctx, api.ImageBuildRequest{Name: "child", From: "base", Script: scriptFile(t, 0o755)}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want cancelled", err)
	}
	f.assertClean(t)
}

func TestBuildBadInput(t *testing.T) {
	f := newBuildFixture(t)
	ok, noexec := scriptFile(t, 0o755), scriptFile(t, 0o644)
	cases := []struct {
		name string
		req  api.ImageBuildRequest
		kind api.Kind
	}{
		{"bad name", api.ImageBuildRequest{Name: "Bad_Name", From: "base", Script: ok}, api.KindInvalid},
		{"name clash", api.ImageBuildRequest{Name: "base", From: "base", Script: ok}, api.KindAlreadyExists},
		{"no parent", api.ImageBuildRequest{Name: "c", Script: ok}, api.KindInvalid},
		{"unknown parent", api.ImageBuildRequest{Name: "c", From: "nope", Script: ok}, api.KindNotFound},
		{"nothing to do", api.ImageBuildRequest{Name: "c", From: "base"}, api.KindInvalid},
		{"script missing", api.ImageBuildRequest{Name: "c", From: "base", Script: "/nonexistent/s.sh"}, api.KindInvalid},
		{"script not executable", api.ImageBuildRequest{Name: "c", From: "base", Script: noexec}, api.KindInvalid},
		{"script relative", api.ImageBuildRequest{Name: "c", From: "base", Script: "s.sh"}, api.KindInvalid},
		{"script is a dir", api.ImageBuildRequest{Name: "c", From: "base", Script: t.TempDir()}, api.KindInvalid},
		{"copy source missing", api.ImageBuildRequest{Name: "c", From: "base",
			Copy: []api.ImageCopy{{Src: "/nonexistent/f", Dst: "/etc/f"}}}, api.KindInvalid},
		{"copy dst relative", api.ImageBuildRequest{Name: "c", From: "base",
			Copy: []api.ImageCopy{{Src: ok, Dst: "etc/f"}}}, api.KindInvalid},
		{"unknown feature", api.ImageBuildRequest{Name: "c", From: "base", With: []string{"emacs"}}, api.KindInvalid},
		{"bad env", api.ImageBuildRequest{Name: "c", From: "base", Script: ok, Env: []string{"NOEQUALS"}}, api.KindInvalid},
		{"tiny size", api.ImageBuildRequest{Name: "c", From: "base", Script: ok, Size: 1 << 20}, api.KindInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.svc.Build(context.Background(), c.req, nil)
			if api.KindOf(err) != c.kind {
				t.Fatalf("err = %v (kind %s), want %s", err, api.KindOf(err), c.kind)
			}
			var ae *api.Error
			if errors.As(err, &ae) && ae.FixLine() == "" {
				t.Errorf("no fix in %v", err)
			}
		})
	}
	if len(f.g.ran) != 0 {
		t.Errorf("bad input reached the guest: %v", f.g.ran)
	}
	f.assertClean(t)
}

// promoteVM records a stopped VM of the parent image in the store.
func (f *buildFixture) promoteVM(t *testing.T, name string) {
	t.Helper()
	v := api.VM{Name: name, ImageID: f.parent.ID, ImageName: f.parent.Name, VCPUs: 1, MemoryMiB: 256,
		DiskBytes: 1 << 30, Runtime: api.VMRuntime{State: api.VMStopped}}
	if err := f.st.CreateVM(context.Background(), &v, store.Alloc{Subnet: netip.MustParsePrefix("10.203.0.0/24")}); err != nil {
		t.Fatal(err)
	}
}

func TestPromote(t *testing.T) {
	f := newBuildFixture(t)
	f.promoteVM(t, "dev")
	ctx := context.Background()
	rec := &progress.Recorder{}
	img, err := f.svc.Promote(ctx, api.ImagePromoteRequest{VM: "dev", Name: "golden", WithWorkDisk: true}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if img.Parent != "base" || img.Source != "promote" || img.Fingerprint == "" || img.Fingerprint == f.parent.Fingerprint {
		t.Errorf("image = %+v", img)
	}
	if m, _ := imagetest.DebugfsCat(t, img.WorkSeed, "/marker"); m != "from-work\n" {
		t.Errorf("--with-work-disk: work-seed lacks the VM's /root: %q", m)
	}
	if s, _ := imagetest.DebugfsCat(t, img.Rootfs, "/etc/built"); s != "yes\n" {
		t.Errorf("rootfs lacks the VM's system files: %q", s)
	}
	if _, ok := imagetest.DebugfsCat(t, img.Rootfs, "/etc/hostname"); ok {
		t.Error("the VM's hostname is in the image")
	}
	// Without the work disk the parent's seed is used.
	plain, err := f.svc.Promote(ctx, api.ImagePromoteRequest{VM: "dev", Name: "plain"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := imagetest.DebugfsCat(t, plain.WorkSeed, "/marker"); ok {
		t.Error("promote without --with-work-disk took the VM's work disk")
	}
	if _, ok := imagetest.DebugfsCat(t, plain.WorkSeed, "/.bashrc"); !ok {
		t.Error("promote without --with-work-disk lacks the parent's seed")
	}
	// Refusals.
	f.g.running["dev"] = true
	v, _ := f.st.GetVM(ctx, "dev")
	v.Runtime.State = api.VMRunning
	f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)
	_, err = f.svc.Promote(ctx, api.ImagePromoteRequest{VM: "dev", Name: "again"}, nil)
	var ae *api.Error
	if api.KindOf(err) != api.KindFailedPrecondition || !errors.As(err, &ae) || ae.FixLine() != "stop it first: banger vm stop dev" {
		t.Errorf("promote of a running VM: %v", err)
	}
	for _, req := range []api.ImagePromoteRequest{{VM: "dev", Name: "golden"}, {VM: "nope", Name: "x"}, {VM: "dev", Name: "Bad_Name"}} {
		if _, err := f.svc.Promote(ctx, req, nil); err == nil {
			t.Errorf("promote %+v succeeded", req)
		}
	}
	delete(f.g.running, "dev") // a user VM, not a builder
	f.assertClean(t, "golden", "plain")
	// The parent cannot go while its children exist (unless forced).
	if err := f.st.DeleteVM(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	err = f.svc.Delete(ctx, "base", false)
	if api.KindOf(err) != api.KindFailedPrecondition || !strings.Contains(err.Error(), "golden, plain") {
		t.Errorf("deleting a parent: %v", err)
	}
}

// The CLI and the web UI send the files' contents: the builder puts them in
// the guest without opening any host path, with their modes (a script is
// always executable), and the recipe hashes the contents.
func TestBuildUploadedFiles(t *testing.T) {
	f := newBuildFixture(t)
	conf := []byte("key = value\n")
	img, err := f.svc.Build(context.Background(), api.ImageBuildRequest{Name: "child", From: "base",
		ScriptFile: &api.FileUpload{Name: "./setup.sh", Mode: 0o700, Data: []byte("#!/bin/sh\necho hi\n")},
		Copy:       []api.ImageCopy{{File: &api.FileUpload{Name: "app.conf", Mode: 0o600, Data: conf}, Dst: "/etc/app.conf"}}},
		&progress.Recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if f.g.stdins["/etc/app.conf"] != len(conf) || f.g.stdins["/tmp/banger-build/script"] != len("#!/bin/sh\necho hi\n") {
		t.Errorf("uploaded files not put in the builder: %v", f.g.stdins)
	}
	if !slices.ContainsFunc(f.g.ran, func(a []string) bool { return len(a) == 1 && a[0] == "/tmp/banger-build/script" }) {
		t.Errorf("the uploaded script did not run: %v", f.g.ran)
	}
	if img.Name != "child" {
		t.Errorf("image = %+v", img)
	}
	f.assertClean(t, "child")
}

func TestBuildUploadRefusesBadRequests(t *testing.T) {
	f := newBuildFixture(t)
	file := &api.FileUpload{Name: "x", Data: []byte("x")}
	for name, req := range map[string]api.ImageBuildRequest{
		"script path and file": {Name: "c", From: "base", Script: scriptFile(t, 0o755), ScriptFile: file},
		"empty script":         {Name: "c", From: "base", ScriptFile: &api.FileUpload{Name: "s"}},
		"src and file":         {Name: "c", From: "base", Copy: []api.ImageCopy{{Src: scriptFile(t, 0o644), File: file, Dst: "/x"}}},
		"relative dst":         {Name: "c", From: "base", Copy: []api.ImageCopy{{File: file, Dst: "x"}}},
	} {
		if _, err := f.svc.Build(context.Background(), req, nil); !api.IsInvalid(err) {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
}
