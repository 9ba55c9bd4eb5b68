package dist

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/golden"
)

// TestDeb builds the package with `make deb`, inspects it with dpkg-deb,
// runs lintian on it, then installs, reinstalls, removes and purges it in a
// throwaway dpkg root.
func TestDeb(t *testing.T) {
	needTool(t, "dpkg-deb", "apt-get install dpkg")
	needAmd64(t)
	bin := binaries(t)
	out := t.TempDir()
	start := time.Now()
	runMake(t, nil, "-o", "build", "deb", "BIN="+bin, "DEB_DIR="+out)
	t.Logf("make deb (binaries already built): %s", time.Since(start).Round(100*time.Millisecond))

	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("DEB_DIR holds %d entries, want just the .deb: %v", len(entries), entries)
	}
	m := regexp.MustCompile(`^banger_(.+)_amd64\.deb$`).FindStringSubmatch(entries[0].Name())
	if m == nil {
		t.Fatalf("package named %s, want banger_<version>_amd64.deb", entries[0].Name())
	}
	version := m[1]
	if out, err := exec.Command("dpkg", "--validate-version", version).CombinedOutput(); err != nil {
		t.Errorf("version %s is not a valid Debian version: %s", version, out)
	}
	deb := filepath.Join(out, entries[0].Name())

	checkInfo(t, deb, version)
	checkContents(t, deb)
	t.Run("lintian", func(t *testing.T) { lintian(t, deb) })
	t.Run("install-purge", func(t *testing.T) { installPurge(t, deb) })
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkInfo: control fields, Depends, maintainer scripts and the conffile.
func checkInfo(t *testing.T, deb, version string) {
	t.Helper()
	info := dpkgDeb(t, "--info", deb)
	t.Logf("dpkg-deb --info:\n%s", info)
	for _, want := range []string{"Package: banger", "Version: " + version, "Architecture: amd64",
		"Section: admin", "Maintainer: "} {
		if !strings.Contains(info, "\n "+want) {
			t.Errorf("control has no %q", want)
		}
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		if !regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+\*\s+` + script + `\s+#!/bin/sh$`).MatchString(info) {
			t.Errorf("no executable %s maintainer script", script)
		}
	}

	depends := map[string]bool{}
	for _, d := range strings.Split(dpkgDeb(t, "--field", deb, "Depends"), ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(d), " ")
		depends[name] = true
	}
	for _, p := range append(aptPackages(t), "adduser", "libc6") {
		if p == "util-linux" {
			// Essential: always installed, and policy says not to depend on it.
			continue
		}
		if !depends[p] {
			t.Errorf("Depends lacks %s (have %v)", p, depends)
		}
	}
	if depends["util-linux"] {
		t.Error("Depends has util-linux, which is Essential (lintian: depends-on-essential-package-without-using-version)")
	}

	if got := strings.TrimSpace(dpkgDeb(t, "--info", deb, "conffiles")); got != "/etc/banger/config.toml" {
		t.Errorf("conffiles = %q, want /etc/banger/config.toml", got)
	}
}

// checkContents: the files, their modes and owners.
func checkContents(t *testing.T, deb string) {
	t.Helper()
	contents := dpkgDeb(t, "--contents", deb)
	t.Logf("dpkg-deb --contents:\n%s", contents)
	got := map[string]string{} // path → "mode owner"
	for _, l := range strings.Split(contents, "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 {
			got[f[5]] = f[0] + " " + f[1]
		}
	}
	for path, want := range map[string]string{
		"./usr/bin/banger":                     "-rwxr-xr-x root/root",
		"./usr/bin/bangerd":                    "-rwxr-xr-x root/root",
		"./usr/bin/banger-agent":               "-rwxr-xr-x root/root",
		"./lib/systemd/system/bangerd.service": "-rw-r--r-- root/root",
		"./etc/banger/config.toml":             "-rw-r--r-- root/root",
		"./usr/share/doc/banger/copyright":     "-rw-r--r-- root/root",
		"./usr/share/doc/banger/changelog.gz":  "-rw-r--r-- root/root",
	} {
		if got[path] != want {
			t.Errorf("%s: %q, want %q", path, got[path], want)
		}
	}
}

// lintian runs lintian, installing it first if it can; error tags fail the
// test, warnings are only logged.
func lintian(t *testing.T, deb string) {
	if _, err := exec.LookPath("lintian"); err != nil {
		if _, err := exec.LookPath("apt-get"); err == nil && os.Geteuid() == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=60", "lintian")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			t.Logf("apt-get install lintian: %v\n%s", err, out)
		}
		if _, err := exec.LookPath("lintian"); err != nil {
			t.Skip("no lintian and it could not be installed (apt-get install lintian): the package is checked without it")
		}
	}
	out, err := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
	t.Logf("lintian: %v\n%s", err, out)
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian error: %s", l)
		}
	}
}

// installPurge installs the package into a throwaway root (a bare dpkg
// database, /etc/group and /etc/gshadow) with its maintainer scripts run
// outside a chroot with DPKG_ROOT set, reinstalls it (the upgrade path),
// removes it, then purges it, checking at each step what is there and that
// the host's /etc/group, systemd links and dpkg log are untouched.
func installPurge(t *testing.T, deb string) {
	needRoot(t, "dpkg sets owners and modes")
	needTool(t, "dpkg", "apt-get install dpkg")
	needTool(t, "groupadd", "apt-get install passwd")
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{
		"var/lib/dpkg/status": "", "var/lib/dpkg/available": "",
		"etc/group": "root:x:0:\n", "etc/gshadow": "root:*::\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host := hostState(t)
	dpkg := func(args ...string) {
		t.Helper()
		cmd := exec.Command("dpkg", append([]string{"--root=" + root, "--log=" + filepath.Join(root, "var/log/dpkg.log"),
			"--force-depends", "--force-script-chrootless"}, args...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("dpkg %s:\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatalf("dpkg %s: %v", strings.Join(args, " "), err)
		}
	}
	status := func() string {
		out, _ := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"),
			"-W", "-f=${Status}", "banger").CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	rootFile := func(p string) string { return filepath.Join(root, p) }

	dpkg("--install", deb)
	if s := status(); s != "install ok installed" {
		t.Fatalf("status after install: %q", s)
	}
	for _, p := range []string{"usr/bin/banger", "usr/bin/bangerd", "usr/bin/banger-agent"} {
		if fi, err := os.Stat(rootFile(p)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", p, fi, err)
		}
	}
	u, err := parseUnit(golden.ReadFile(t, rootFile("lib/systemd/system/bangerd.service")))
	if err != nil {
		t.Fatal(err)
	}
	if got := u.one(t, "Service", "ExecStart"); got != "/usr/bin/bangerd --foreground" {
		t.Errorf("packaged ExecStart=%s", got)
	}
	if golden.ReadFile(t, rootFile("etc/banger/config.toml")) != golden.ReadFile(t, filepath.Join(repoRoot(t), "config/config.sample.toml")) {
		t.Error("/etc/banger/config.toml is not the sample config")
	}
	// postinst ran: the group and the enable link, inside the root only.
	checkGroup(t, root)
	link := "etc/systemd/system/multi-user.target.wants/bangerd.service"
	if target, err := os.Readlink(rootFile(link)); err != nil || target != "/lib/systemd/system/bangerd.service" {
		t.Errorf("postinst did not enable the unit: %s -> %q (%v)", link, target, err)
	}

	dpkg("--install", deb) // the upgrade path: prerm upgrade, postinst configure <old>
	checkGroup(t, root)

	// remove keeps the (edited) conffile; purge then removes it and the state dir.
	if err := os.WriteFile(rootFile("etc/banger/config.toml"), []byte("log_level = \"debug\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg("--remove", "banger")
	if s := status(); s != "deinstall ok config-files" {
		t.Errorf("status after remove: %q", s)
	}
	if _, err := os.Stat(rootFile("etc/banger/config.toml")); err != nil {
		t.Errorf("remove deleted the conffile: %v", err)
	}
	if _, err := os.Stat(rootFile("usr/bin/bangerd")); err == nil {
		t.Error("remove left /usr/bin/bangerd")
	}
	if err := os.MkdirAll(rootFile("var/lib/banger/vms/x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rootFile("var/lib/banger/banger.db"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg("--purge", "banger")
	if s := status(); strings.Contains(s, "installed") || strings.Contains(s, "config-files") {
		t.Errorf("status after purge: %q", s)
	}
	checkPurged(t, root)
	// The group stays, as Debian leaves system groups (postrm says so).
	checkGroup(t, root)

	if got := hostState(t); got != host {
		t.Errorf("the host changed:\nbefore %s\nafter  %s", host, got)
	}
}

// checkGroup: exactly one banger group in the root's /etc/group, a system gid.
func checkGroup(t *testing.T, root string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(golden.ReadFile(t, filepath.Join(root, "etc/group")), "\n") {
		if strings.HasPrefix(l, "banger:") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("banger lines in the root's /etc/group: %q, want one", lines)
	}
	if !regexp.MustCompile(`^banger:x:[1-9][0-9]{0,2}:$`).MatchString(lines[0]) {
		t.Errorf("group %q is not a system group (gid under 1000)", lines[0])
	}
}

// checkPurged: nothing of banger's is left but the group and empty
// directories (such as etc/systemd/system, made by deb-systemd-helper).
func checkPurged(t *testing.T, root string) {
	t.Helper()
	kept := map[string]bool{"etc/group": true, "etc/group-": true, "etc/gshadow": true, "etc/gshadow-": true,
		"var/log/dpkg.log": true}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "var/lib/dpkg" {
			return filepath.SkipDir // dpkg's own database
		}
		if strings.Contains(rel, "banger") {
			t.Errorf("left after purge: %s", rel)
		}
		if !fi.IsDir() && !kept[rel] {
			t.Errorf("file left after purge: %s", rel)
		}
		return nil
	})
	for _, f := range []string{"info/banger.list", "info/banger.postrm", "info/banger.conffiles"} {
		if _, err := os.Stat(filepath.Join(root, "var/lib/dpkg", f)); err == nil {
			t.Errorf("dpkg database still has %s", f)
		}
	}
}

// hostState summarises what of banger's the maintainer scripts could put on
// the host: a banger group, the enable link, banger in the dpkg database and
// in its log. (Other people's apt runs may change those files meanwhile, so
// only banger's traces are compared.)
func hostState(t *testing.T) string {
	t.Helper()
	count := func(path, re string) int {
		b, _ := os.ReadFile(path)
		return len(regexp.MustCompile(re).FindAll(b, -1))
	}
	_, link := os.Lstat("/etc/systemd/system/multi-user.target.wants/bangerd.service")
	return fmt.Sprintf("group lines %d, dpkg status entries %d, dpkg.log lines %d, enable link %v",
		count("/etc/group", `(?m)^banger:`), count("/var/lib/dpkg/status", `(?m)^Package: banger$`),
		count("/var/log/dpkg.log", `(?m) banger:amd64 `), link == nil)
}

// TestDebBadInput: `make deb` when the packager's module can be neither
// found in the module cache nor downloaded (GOPROXY=off, an empty
// GOMODCACHE), and when the binaries are missing, fails with a message
// naming the problem and the fix, and leaves no .deb (nor a partial one).
func TestDebBadInput(t *testing.T) {
	needAmd64(t)
	bin := binaries(t)
	nfpm := regexp.MustCompile(`(?m)^\s*github.com/goreleaser/nfpm/v2 (v\S+)`).FindStringSubmatch(golden.ReadFile(t, "tools/go.mod"))
	if nfpm == nil {
		t.Fatal("tools/go.mod does not require github.com/goreleaser/nfpm/v2")
	}
	for _, c := range []struct {
		name string
		env  []string
		bin  string
		want []string
	}{{
		name: "packager not downloadable",
		env:  []string{"GOPROXY=off", "GOMODCACHE=" + t.TempDir(), "GOFLAGS=-mod=mod", "HOME=" + t.TempDir()},
		bin:  bin,
		want: []string{"cannot build the packager, nfpm " + nfpm[1], "github.com/goreleaser/nfpm/v2",
			"GOPROXY=off", "fix:", "go -C dist/tools mod download"},
	}, {
		name: "no binaries",
		bin:  t.TempDir(),
		want: []string{"banger is missing: run make build"},
	}} {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			cmd := makeCmd(t, c.env, "-o", "build", "deb", "BIN="+c.bin, "DEB_DIR="+out)
			msg, err := cmd.CombinedOutput()
			t.Logf("make deb: %v\n%s", err, msg)
			if err == nil {
				t.Fatal("make deb succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(string(msg), w) {
					t.Errorf("message lacks %q", w)
				}
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("DEB_DIR is not empty after the failure: %v", left)
			}
		})
	}
}

// TestDebInterrupted: `make deb` stopped while nfpm writes the package
// leaves neither the partial file nor a .deb.
func TestDebInterrupted(t *testing.T) {
	needAmd64(t)
	bin := binaries(t)
	out := t.TempDir()
	cmd := makeCmd(t, nil, "-o", "build", "deb", "BIN="+bin, "DEB_DIR="+out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	seen := false
	for deadline := time.Now().Add(30 * time.Second); !seen && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		matches, _ := filepath.Glob(filepath.Join(out, ".banger_*.deb.partial"))
		seen = len(matches) > 0
		select {
		case err := <-done:
			t.Fatalf("make deb ended (%v) before the partial file was seen:\n%s", err, msg.String())
		default:
		}
	}
	if !seen {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("no partial file in %s within 30s:\n%s", out, msg.String())
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	if err := <-done; err == nil {
		t.Fatalf("make deb succeeded despite SIGTERM:\n%s", msg.String())
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Errorf("DEB_DIR is not empty after the interruption: %v", left)
	}
}
