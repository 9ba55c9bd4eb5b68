package live

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/store"
	"banger/internal/testimage"
)

// image build: a script installs a Debian package (through the test's
// uplink proxy) and a copied file lands in the guest; a new VM of the built
// image has both. Bad input and a failing script leave nothing behind.
func TestIntegrationLiveImageBuild(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxy := e.uplink(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "provision.sh")
	writeFile(t, script, 0o755, fmt.Sprintf(`#!/bin/sh
set -eu
echo 'Acquire::http::Proxy "%s";' >/etc/apt/apt.conf.d/90banger-test-proxy
trap 'rm -f /etc/apt/apt.conf.d/90banger-test-proxy' EXIT
apt-get update -q
apt-get install -y -q --no-install-recommends jq
echo "provisioned: $(jq --version)"
`, proxy))
	conf := filepath.Join(dir, "app.conf")
	writeFile(t, conf, 0o600, "copied-by-banger\n")

	e.checkBuildRefusals(t, dir)

	start := time.Now()
	r := e.banger("image", "build", "jqimg", "--from", "test", "--script", script, "--copy", conf+":/etc/app.conf")
	if r.code != 0 {
		t.Fatalf("image build: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("image build took %s; stages:\n%s", time.Since(start).Round(time.Millisecond), stageLines(r.stderr))
	if strings.TrimSpace(r.stdout) != "jqimg" {
		t.Errorf("image build printed %q on stdout, want the image name", r.stdout)
	}
	for _, want := range []string{"agent ready", "copy", "script", "shutdown", "capture", "work-seed", "boot set",
		"fingerprint", "provisioned: jq-"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("%q missing from the build's progress/output:\n%s", want, r.stderr)
		}
	}
	var img, parent api.Image
	e.mustJSON(&img, "image", "show", "jqimg")
	e.mustJSON(&parent, "image", "show", "test")
	if img.Parent != "test" || img.Source != "build" || img.Fingerprint == "" || img.Fingerprint == parent.Fingerprint {
		t.Errorf("built image: parent %q source %q fingerprint %q (parent's %q)", img.Parent, img.Source,
			img.Fingerprint, parent.Fingerprint)
	}
	if img.RootfsSize != parent.RootfsSize {
		t.Errorf("built rootfs is %d bytes, want the parent's %d (the builder's extra room shrunk away)", img.RootfsSize, parent.RootfsSize)
	}
	if img.KernelVersion != parent.KernelVersion || !slices.Contains(img.Engines, "qemu") || img.WorkSeed == "" {
		t.Errorf("built image boot set: kernel %q engines %v seed %q", img.KernelVersion, img.Engines, img.WorkSeed)
	}
	e.assertNoBuildLeftovers(t, []string{"jqimg", "test"})

	start = time.Now()
	r = e.banger("vm", "run", "--image", "jqimg", "--", "sh", "-c",
		"jq --version && cat /etc/app.conf && test ! -e /etc/apt/apt.conf.d/90banger-test-proxy")
	if r.code != 0 || !strings.Contains(r.stdout, "jq-") || !strings.Contains(r.stdout, "copied-by-banger") {
		t.Fatalf("a VM of the built image lacks jq or the copied file: exit %d\nstdout:\n%s\nstderr:\n%s",
			r.code, r.stdout, r.stderr)
	}
	t.Logf("vm run on the built image: %s", time.Since(start).Round(time.Millisecond))

	// A failing script aborts: no builder VM, no image, no staging files.
	bad := filepath.Join(dir, "fail.sh")
	writeFile(t, bad, 0o755, "#!/bin/sh\necho about to fail\nexit 3\n")
	r = e.banger("image", "build", "broken", "--from", "test", "--script", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "exited with code 3") || !strings.Contains(r.stderr, "about to fail") {
		t.Errorf("a failing script: exit %d, want an error naming code 3 with its output:\n%s", r.code, r.stderr)
	}
	e.assertNoBuildLeftovers(t, []string{"jqimg", "test"})
}

// checkBuildRefusals runs image builds that must fail before booting
// anything, each with a clear message.
func (e *env) checkBuildRefusals(t *testing.T, dir string) {
	t.Helper()
	noexec := filepath.Join(dir, "noexec.sh")
	writeFile(t, noexec, 0o644, "#!/bin/sh\ntrue\n")
	ok := filepath.Join(dir, "ok.sh")
	writeFile(t, ok, 0o755, "#!/bin/sh\ntrue\n")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"image", "build", "x1", "--from", "test", "--script", filepath.Join(dir, "missing.sh")}, "no such file"},
		{[]string{"image", "build", "x2", "--from", "test", "--script", noexec}, "chmod +x"},
		{[]string{"image", "build", "x3", "--from", "test", "--copy", filepath.Join(dir, "nope") + ":/etc/nope"}, "no such file"},
		{[]string{"image", "build", "x4", "--from", "nosuch", "--script", ok}, "not found"},
		{[]string{"image", "build", "test", "--from", "test", "--script", ok}, "already exists"},
		{[]string{"image", "build", "x5", "--from", "test"}, "nothing to build"},
	}
	for _, c := range cases {
		r := e.banger(c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("banger %s: exit %d, want a failure mentioning %q:\n%s", strings.Join(c.args, " "), r.code, c.want, r.stderr)
		}
	}
	e.assertNoBuildLeftovers(t, []string{"test"})
}

// assertNoBuildLeftovers checks that only the wanted images exist and no
// VM or staging file is left.
func (e *env) assertNoBuildLeftovers(t *testing.T, images []string) {
	t.Helper()
	var imgs []api.Image
	e.mustJSON(&imgs, "image", "list")
	var got []string
	for _, i := range imgs {
		got = append(got, i.Name)
	}
	slices.Sort(got)
	slices.Sort(images)
	if !slices.Equal(got, images) {
		t.Errorf("images = %v, want %v", got, images)
	}
	var vms []api.VM
	e.mustJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Errorf("VMs left behind: %+v", vms)
	}
	ents, _ := os.ReadDir(filepath.Join(e.stateDir, "pool", "staging"))
	if len(ents) != 0 {
		t.Errorf("staging files left behind: %v", ents)
	}
	ents, _ = os.ReadDir(filepath.Join(e.stateDir, "pool", "images"))
	if len(ents) != len(images) {
		t.Errorf("image dirs %v, want %d", ents, len(images))
	}
}

// image promote of a VM whose image was recorded by an older banger (no
// work-seed, vmlinux, fingerprint, engines or features): the daemon's next
// start upgrades the image (the data patch), and the promoted image's VMs
// see the file the VM wrote to /root.
func TestIntegrationLivePromote(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.makeImageOld(t, "test")

	r := e.banger("vm", "create", "--name", "p1")
	if r.code != 0 {
		t.Fatalf("vm create on an old image: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "image upgrade") {
		t.Errorf("the create upgraded the image (the daemon's start should have):\n%s", r.stderr)
	}
	var healed api.Image
	e.mustJSON(&healed, "image", "show", "test")
	if healed.WorkSeed == "" || healed.Vmlinux == "" || healed.Fingerprint == "" || !slices.Contains(healed.Engines, "qemu") ||
		!slices.Contains(healed.Features, "agent") {
		t.Fatalf("image after the upgrade: %+v", healed)
	}
	// The agent can answer before the work disk is mounted on /root.
	e.must("vm", "exec", "p1", "--", "sh", "-c", "for i in $(seq 90); do mountpoint -q /root && break; sleep 1; done; "+
		"mountpoint -q /root && echo promoted-work > /root/marker && echo promoted-sys > /etc/marker && sync")

	r = e.banger("image", "promote", "p1", "nope")
	if r.code == 0 || !strings.Contains(r.stderr, "stop it first: banger vm stop p1") {
		t.Errorf("promote of a running VM: exit %d, want the fix 'stop it first: banger vm stop p1':\n%s", r.code, r.stderr)
	}
	e.must("vm", "stop", "p1")
	start := time.Now()
	r = e.banger("image", "promote", "p1", "promo", "--with-work-disk")
	if r.code != 0 {
		t.Fatalf("image promote: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("image promote took %s:\n%s", time.Since(start).Round(time.Millisecond), stageLines(r.stderr))
	var promo api.Image
	e.mustJSON(&promo, "image", "show", "promo")
	if promo.Parent != "test" || promo.Source != "promote" || promo.Fingerprint == healed.Fingerprint {
		t.Errorf("promoted image: %+v", promo)
	}
	if out := e.must("image", "list"); !strings.Contains(out, "PARENT") || !strings.Contains(out, "promo") {
		t.Errorf("image list lacks the PARENT column or the new image:\n%s", out)
	}
	if out := e.must("image", "list", "--tree"); !strings.Contains(out, "└─ promo") {
		t.Errorf("image list --tree does not show promo under test:\n%s", out)
	}
	r = e.banger("vm", "run", "--image", "promo", "--", "sh", "-c",
		"for i in $(seq 90); do mountpoint -q /root && break; sleep 1; done; cat /root/marker /etc/marker")
	if r.code != 0 || !strings.Contains(r.stdout, "promoted-work") || !strings.Contains(r.stdout, "promoted-sys") {
		t.Fatalf("a VM of the promoted image: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	e.must("vm", "delete", "p1")
	r = e.banger("image", "delete", "test")
	if r.code == 0 || !strings.Contains(r.stderr, "promo") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("deleting a parent: exit %d, want a refusal naming promo and --force:\n%s", r.code, r.stderr)
	}
}

// makeImageOld strips an image's record down to what an early banger
// stored (and removes the files it lacked), with the daemon stopped.
func (e *env) makeImageOld(t *testing.T, name string) {
	t.Helper()
	e.must("daemon", "stop")
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(e.stateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	img, err := st.GetImage(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{img.WorkSeed, img.Vmlinux} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	img.WorkSeed, img.WorkSeedSize, img.Vmlinux, img.VmlinuxSize = "", 0, "", 0
	img.Fingerprint, img.Engines, img.Features = "", nil, nil
	if err := st.UpdateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	// A database an older banger wrote has not run the data patch either.
	if err := st.ForgetPatch(ctx, image.PatchHealImages); err != nil {
		t.Fatal(err)
	}
}

// A VM of an opencode image is ready only once :4096 answers; then an HTTP
// GET to it with the VM's credential works, vm show / vm opencode print its
// URL, and nobody without the credential gets an answer but 401.
func TestIntegrationLiveOpencode(t *testing.T) {
	oc := testimage.GetOpencode(t)
	t.Parallel()
	e := newEnv(t)
	e.must("image", "register", "oc", "--kernel", oc.Kernel, "--initrd", oc.Initrd,
		"--rootfs", oc.Rootfs, "--work-seed", oc.WorkSeed, "--vmlinux", oc.Vmlinux)
	var img api.Image
	e.mustJSON(&img, "image", "show", "oc")
	if !slices.Contains(img.Features, "opencode") {
		t.Fatalf("registering an opencode rootfs did not detect the feature: %v", img.Features)
	}
	// vm run needs the agent only: it must not wait for opencode (issue 10:
	// it used to spend ~30 s of a 46 s run waiting for :4096).
	start := time.Now()
	r := e.banger("vm", "run", "--image", "oc", "--memory", "1GiB", "--", "true")
	if r.code != 0 {
		t.Fatalf("vm run on the opencode image: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("vm run -- true on the opencode image took %s:\n%s", time.Since(start).Round(time.Millisecond), stageLines(r.stderr))
	if strings.Contains(r.stderr, "opencode ready") {
		t.Errorf("vm run waited for opencode:\n%s", r.stderr)
	}
	start = time.Now()
	r = e.banger("vm", "create", "--name", "oc1", "--image", "oc", "--memory", "1GiB")
	if r.code != 0 {
		t.Fatalf("vm create: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("vm create with opencode took %s:\n%s", time.Since(start).Round(time.Millisecond), stageLines(r.stderr))
	if !strings.Contains(r.stderr, "opencode ready") {
		t.Errorf("no opencode ready stage:\n%s", r.stderr)
	}
	var d api.VMDetail
	e.mustJSON(&d, "vm", "show", "oc1")
	ipURL := "http://" + d.VM.Runtime.GuestIP + ":4096"
	if !slices.Contains(d.URLs, "http://oc1.vm:4096") || !slices.Contains(d.URLs, ipURL) {
		t.Errorf("vm show URLs = %v, want http://oc1.vm:4096 and %s", d.URLs, ipURL)
	}
	if out := e.must("vm", "opencode", "oc1", "--no-open"); !strings.Contains(out, ipURL) {
		t.Errorf("vm opencode printed %q, want %s", out, ipURL)
	}
	// The health route: "/" proxies opencode's web app from the internet
	// and project routes first set up the project (npm installs); the test
	// guest has no internet.
	start = time.Now()
	if len(d.Access) != 1 || d.Access[0].Password == "" || d.Access[0].Warning != "" {
		t.Fatalf("vm show access = %+v, want opencode with its password", d.Access)
	}
	out, err := exec.Command("ip", "netns", "exec", e.ns, "curl", "-sS", "-m", "30",
		"-u", "opencode:"+d.Access[0].Password, ipURL+"/global/health").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"healthy":true`) {
		diag := e.banger("vm", "exec", "oc1", "--", "sh", "-c",
			"systemctl status opencode --no-pager; journalctl -u opencode --no-pager -n 60; ss -tlnp")
		t.Fatalf("GET %s/global/health: %v %s\nguest diagnostics:\n%s%s", ipURL, err, out, diag.stdout, diag.stderr)
	}
	t.Logf("GET %s/global/health → %s in %s", ipURL, out, time.Since(start).Round(time.Millisecond))
	opencodeAuthAttack(t, e, ipURL)
	r = e.banger("vm", "opencode", "nosuchvm")
	if r.code == 0 {
		t.Errorf("vm opencode of a missing VM succeeded")
	}
}

func writeFile(t *testing.T, path string, mode os.FileMode, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// stageLines keeps the finished-stage lines of a command's progress.
func stageLines(stderr string) string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "  ✓") || strings.HasPrefix(l, "  ✗") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// opencodeAuthAttack is issue 13's attack on opencode: a local user who is
// neither root nor in banger's group (uid/gid 65534, no supplementary
// groups) reaches the guest's :4096 (the host routes to every VM) and
// tries to drive the agent. Every route must answer 401 without the VM's
// credential; the URL `vm opencode` prints (which carries it) works.
func opencodeAuthAttack(t *testing.T, e *env, ipURL string) {
	t.Helper()
	asNobody := func(args ...string) string {
		full := append([]string{"netns", "exec", e.ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
			"curl", "-sS", "-m", "30", "-o", "/dev/null", "-w", "%{http_code}"}, args...)
		out, err := exec.Command("ip", full...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl as uid 65534 %v: %v %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, route := range []string{"/global/health", "/config", "/session", "/file?path=/etc/shadow"} {
		code := asNobody(ipURL + route)
		if code != "401" {
			t.Errorf("uid 65534 without the credential: GET %s%s → %s, want 401", ipURL, route, code)
		}
		t.Logf("uid 65534 without the credential: GET %s → %s", route, code)
	}
	if code := asNobody("-u", "opencode:wrong", ipURL+"/config"); code != "401" {
		t.Errorf("uid 65534 with a wrong password: GET %s/config → %s, want 401", ipURL, code)
	}
	out := strings.TrimSpace(e.must("vm", "opencode", "oc1", "--no-open"))
	lines := strings.Split(out, "\n")
	withCred := lines[len(lines)-1]
	if !strings.Contains(withCred, "opencode:") || !strings.Contains(withCred, "@") {
		t.Fatalf("vm opencode printed %q, want a URL with the credential", out)
	}
	o, err := exec.Command("ip", "netns", "exec", e.ns, "curl", "-sS", "-m", "30", withCred+"/global/health").CombinedOutput()
	if err != nil || !strings.Contains(string(o), `"healthy":true`) {
		t.Errorf("GET with vm opencode's URL: %v %s", err, o)
	}
	t.Logf("GET /global/health with vm opencode's URL → %s", o)
}

// An opencode image baked before feature credentials (its unit reads no
// password file) is healed at boot: a runtime drop-in gives the unit the
// VM's password and the unit restarts, so the attack fails there too and
// readiness still works. BANGER_TEST_OLD_OPENCODE names such an image's
// cache directory (e.g. /var/cache/banger-test/images/opencode-<fp> built
// by an older tree); without it the test is skipped.
func TestIntegrationLiveOpencodeOldImage(t *testing.T) {
	dir := os.Getenv("BANGER_TEST_OLD_OPENCODE")
	if dir == "" {
		t.Skip("BANGER_TEST_OLD_OPENCODE (an opencode test image built before feature credentials) is not set")
	}
	var old api.Image
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &old); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.must("image", "register", "oc", "--kernel", old.Kernel, "--initrd", old.Initrd,
		"--rootfs", old.Rootfs, "--work-seed", old.WorkSeed, "--vmlinux", old.Vmlinux)
	unit := e.banger("vm", "run", "--image", "oc", "--memory", "1GiB", "--", "cat", "/etc/systemd/system/opencode.service")
	if unit.code != 0 || strings.Contains(unit.stdout, "EnvironmentFile") {
		t.Fatalf("not an image from before feature credentials (exit %d):\n%s%s", unit.code, unit.stdout, unit.stderr)
	}
	r := e.banger("vm", "create", "--name", "oc1", "--image", "oc", "--memory", "1GiB")
	if r.code != 0 {
		t.Fatalf("vm create: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("vm create on the old opencode image:\n%s", stageLines(r.stderr))
	var d api.VMDetail
	e.mustJSON(&d, "vm", "show", "oc1")
	if len(d.Access) != 1 || d.Access[0].Password == "" || d.Access[0].Warning != "" {
		t.Fatalf("vm show access = %+v, want opencode healed, with its password", d.Access)
	}
	opencodeAuthAttack(t, e, "http://"+d.VM.Runtime.GuestIP+":4096")
}
