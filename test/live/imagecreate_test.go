package live

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// image create --from-debian through the real CLI and daemon (issue 3): the
// daemon reaches the Debian mirror through the test's uplink proxy
// (http_proxy in its environment, which debootstrap, apt and the mirror
// check honour); the image's record is complete; a VM of it boots, runs a
// command through the agent and answers SSH with banger's key. Bad input
// fails with a fix and leaves nothing in staging.
func TestIntegrationLiveImageCreateFromDebian(t *testing.T) {
	t.Parallel()
	testStart := time.Now()
	e := newEnv(t)
	proxy := e.uplink(t)
	// newEnv's image register started the daemon without the proxy: stop
	// it so the next CLI call starts one that inherits http_proxy.
	e.must("daemon", "stop")
	e.extraEnv = []string{"http_proxy=" + proxy, "HTTP_PROXY=" + proxy}

	start := time.Now()
	r := e.banger("image", "create", "base", "--from-debian", "--mirror", "http://deb.debian.org/debian")
	if r.code != 0 {
		t.Fatalf("image create: exit %d\nstdout:\n%s\nstderr:\n%s\nbuild log:\n%s", r.code, r.stdout, r.stderr,
			e.buildLogTail())
	}
	t.Logf("image create took %s; stages:\n%s", time.Since(start).Round(time.Millisecond), stageLines(r.stderr))
	for _, stage := range []string{"debootstrap", "kernel", "vmlinux", "bake", "rootfs", "work-seed", "fingerprint"} {
		if !strings.Contains(stageLines(r.stderr), stage) {
			t.Errorf("stage %q missing from the progress on stderr:\n%s", stage, r.stderr)
		}
	}

	var img api.Image
	e.mustJSON(&img, "image", "show", "base")
	checkCreatedImage(t, img)

	e.checkCreateRefusals(t)

	start = time.Now()
	name := "deb-" + randHex(2)
	r = e.banger("vm", "create", "--name", name, "--image", "base")
	if r.code != 0 {
		t.Fatalf("vm create of the created image: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("vm create on the created image took %s:\n%s", time.Since(start).Round(time.Millisecond), stageLines(r.stderr))
	if out := strings.TrimSpace(e.must("vm", "exec", name, "--", "cat", "/etc/hostname")); out != name {
		t.Errorf("vm exec -- cat /etc/hostname printed %q, want the VM's name %q", out, name)
	}
	r = e.banger("vm", "ssh", name, "--", "uname", "-r")
	if r.code != 0 || strings.TrimSpace(r.stdout) != img.KernelVersion {
		t.Errorf("vm ssh -- uname -r: exit %d, printed %q, want the image's kernel %q\n%s", r.code, r.stdout,
			img.KernelVersion, r.stderr)
	}
	e.must("vm", "delete", name)
	e.assertNoBuildLeftovers(t, []string{"base", "test"})
	e.assertNoLeaks()
	t.Logf("whole test: %s", time.Since(testStart).Round(time.Millisecond))
}

// checkCreatedImage asserts every field of a freshly created Debian image.
func checkCreatedImage(t *testing.T, img api.Image) {
	t.Helper()
	if img.Name != "base" || img.ID == "" || img.Fingerprint == "" || img.Parent != "" || !img.Managed ||
		img.Source != "debian:bookworm" || img.KernelVersion == "" || img.CreatedAt.IsZero() ||
		time.Since(img.CreatedAt) > time.Hour {
		t.Errorf("image record: name %q id %q fingerprint %q parent %q managed %v source %q kernel %q created %v",
			img.Name, img.ID, img.Fingerprint, img.Parent, img.Managed, img.Source, img.KernelVersion, img.CreatedAt)
	}
	if !slices.Contains(img.Engines, "qemu") || !slices.Contains(img.Engines, "firecracker") {
		t.Errorf("engines = %v, want qemu and firecracker", img.Engines)
	}
	files := []struct {
		what, path string
		size       int64
	}{
		{"kernel", img.Kernel, img.KernelSize}, {"vmlinux", img.Vmlinux, img.VmlinuxSize},
		{"initrd", img.Initrd, img.InitrdSize}, {"rootfs", img.Rootfs, img.RootfsSize},
		{"work_seed", img.WorkSeed, img.WorkSeedSize},
	}
	for _, f := range files {
		if f.path == "" || f.size <= 0 {
			t.Errorf("%s: path %q size %d, want both set", f.what, f.path, f.size)
			continue
		}
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("%s: %v", f.what, err)
			continue
		}
		if fi.Size() != f.size {
			t.Errorf("%s %s is %d bytes, the record says %d", f.what, f.path, fi.Size(), f.size)
		}
		if filepath.Dir(f.path) != img.Dir {
			t.Errorf("%s %s is outside the image dir %s", f.what, f.path, img.Dir)
		}
	}
}

// checkCreateRefusals runs image creates that must fail up front with a fix.
func (e *env) checkCreateRefusals(t *testing.T) {
	t.Helper()
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"image", "create", "base", "--from-debian"},
			[]string{"already exists", "fix:", "banger image delete base"}},
		{[]string{"image", "create", "x", "--from-debian", "nosuchsuite"},
			[]string{`unknown suite "nosuchsuite"`, "bookworm", "fix:"}},
	}
	for _, c := range cases {
		r := e.banger(c.args...)
		for _, w := range c.want {
			if r.code == 0 || !strings.Contains(r.stderr, w) {
				t.Errorf("banger %s: exit %d, want a failure mentioning %q:\n%s", strings.Join(c.args, " "), r.code, w, r.stderr)
			}
		}
	}
	e.assertNoBuildLeftovers(t, []string{"base", "test"})
	if ents, _ := os.ReadDir(filepath.Join(e.stateDir, "staging")); len(ents) != 0 {
		t.Errorf("staging files left behind in the state dir: %v", ents)
	}
}

// buildLogTail returns the end of the daemon's log, for a failed create.
func (e *env) buildLogTail() string {
	data, _ := os.ReadFile(filepath.Join(e.stateDir, "bangerd.log"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}
