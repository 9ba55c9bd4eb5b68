package attack

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/sandbox"
)

// evilPackage is an npm package whose install script does what third-party
// code run as root on the host could: write to /usr/local and /etc, read
// /etc/shadow and root's files, and report who it runs as.
const evilPackage = `mkdir -p /scratch/pkg && cd /scratch/pkg &&
cat > package.json <<'JSON'
{"name": "evil", "version": "1.0.0", "scripts": {"postinstall": "sh /scratch/pkg/post.sh"}}
JSON
cat > post.sh <<'SH'
exec >/scratch/report 2>&1
echo "uid_map: $(cat /proc/self/uid_map)"
grep CapEff /proc/self/status
touch /usr/local/pwned && echo WROTE-USR-LOCAL
touch /etc/pwned && echo WROTE-ETC
cat /etc/shadow >/dev/null && echo READ-SHADOW
ls /root >/dev/null && echo READ-ROOT
echo "procs: $(ls /proc | grep -c '^[0-9]')"
SH
npm pack --silent >/dev/null`

// TestAttackNPMInstallScript: a package's install script, run the way
// image create runs npm (internal/image/debian npm.go: the sandbox, a
// tree's /usr, /etc and /var read-only — here the host's own, the worst
// case — only /scratch writable), gets neither root nor capabilities, and
// cannot write the tree or read root's secrets.
func TestAttackNPMInstallScript(t *testing.T) {
	needRootTools(t, "bwrap", "npm", "unshare", "setpriv")
	sb, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sandbox.NewScratch(sb)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	env := []string{"HOME=/scratch", "npm_config_cache=/scratch/cache", "PATH=/usr/bin:/bin"}
	run := func(args ...string) string {
		out, err := sb.Run(context.Background(), sc, sandbox.Cmd{Root: "/", Args: args, Env: env, Timeout: 2 * time.Minute})
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("sh", "-c", evilPackage)
	run("npm", "install", "-g", "--prefix", "/scratch/out", "--offline", "--no-fund", "--no-audit", "/scratch/pkg/evil-1.0.0.tgz")
	dst := filepath.Join(t.TempDir(), "report")
	if err := sc.CopyOut("report", dst, 0o644, 1<<20); err != nil {
		t.Fatalf("the install script left no report: %v", err)
	}
	b, _ := os.ReadFile(dst)
	report := string(b)
	t.Logf("install script report:\n%s", report)
	for _, bad := range []string{"WROTE-USR-LOCAL", "WROTE-ETC", "READ-SHADOW", "READ-ROOT"} {
		if strings.Contains(report, bad) {
			t.Errorf("the install script could: %s", bad)
		}
	}
	if !strings.Contains(report, "2147000000") || !strings.Contains(report, "CapEff:\t0000000000000000") {
		t.Errorf("the install script did not run as the sandbox uid without capabilities")
	}
	for _, p := range []string{"/usr/local/pwned", "/etc/pwned"} {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("%s was written on the host", p)
		}
	}
	if out, err := exec.Command("sh", "-c", "ls /proc | grep -c '^[0-9]'").Output(); err == nil && strings.Contains(report, "procs: "+strings.TrimSpace(string(out))) {
		t.Errorf("the install script saw the host's processes")
	}
}
