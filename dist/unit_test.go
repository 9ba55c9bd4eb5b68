package dist

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/golden"
)

// unitFile is a parsed systemd unit: section → key → values in order.
type unitFile map[string]map[string][]string

// unitKeys is every key bangerd.service may use, by section. A key outside
// it is an error, so a typo (which systemd would only warn about and ignore,
// KillMod=process for instance) fails the test. Add keys here as the unit
// grows.
var unitKeys = map[string]map[string]bool{
	"Unit":    {"Description": true, "Documentation": true, "After": true, "Wants": true, "Requires": true},
	"Service": {"Type": true, "ExecStart": true, "KillMode": true, "TimeoutStopSec": true, "Restart": true, "RestartSec": true, "Environment": true},
	"Install": {"WantedBy": true},
}

// parseUnit is a small strict parser for the subset of unit syntax the unit
// uses: no continuation lines, no keys outside a section, no unknown
// sections or keys, no repeated section.
func parseUnit(text string) (unitFile, error) {
	u := unitFile{}
	section := ""
	for i, raw := range strings.Split(text, "\n") {
		n, line := i+1, strings.TrimSpace(raw)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasSuffix(line, `\`):
			return nil, fmt.Errorf("line %d: continuation lines are not supported", n)
		case strings.HasPrefix(line, "["):
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", n, line)
			}
			section = line[1 : len(line)-1]
			if unitKeys[section] == nil {
				return nil, fmt.Errorf("line %d: unknown section [%s]", n, section)
			}
			if u[section] != nil {
				return nil, fmt.Errorf("line %d: section [%s] repeated", n, section)
			}
			u[section] = map[string][]string{}
		default:
			if section == "" {
				return nil, fmt.Errorf("line %d: %q is outside any section", n, line)
			}
			k, v, ok := strings.Cut(line, "=")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if !ok || k == "" {
				return nil, fmt.Errorf("line %d: %q is not key=value", n, line)
			}
			if !unitKeys[section][k] {
				return nil, fmt.Errorf("line %d: unknown key %s in [%s]", n, k, section)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u, nil
}

// one returns the single value of section.key, failing when it is absent
// or repeated.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("[%s] %s: want exactly one value, have %q", section, key, vs)
	}
	return vs[0]
}

func loadUnit(t *testing.T) (unitFile, string) {
	t.Helper()
	text := golden.ReadFile(t, "bangerd.service")
	u, err := parseUnit(text)
	if err != nil {
		t.Fatalf("bangerd.service: %v", err)
	}
	return u, text
}

func TestParseUnitRejects(t *testing.T) {
	for name, text := range map[string]string{
		"typo key":        "[Service]\nKillMod=process\n",
		"outside section": "KillMode=process\n",
		"unknown section": "[Servce]\nKillMode=process\n",
		"repeated":        "[Service]\n[Service]\n",
		"continuation":    "[Service]\nExecStart=/x \\\n  --y\n",
		"no value":        "[Service]\nKillMode\n",
	} {
		if _, err := parseUnit(text); err == nil {
			t.Errorf("%s: parsed %q without an error", name, text)
		}
	}
}

// TestUnitFile: the unit keeps VMs alive across stop and restart
// (KillMode=process, nothing run at stop), runs @PREFIX@/bin/bangerd (which
// make install and deb.sh replace), restarts on failure and is enabled for
// multi-user.target.
func TestUnitFile(t *testing.T) {
	u, text := loadUnit(t)

	if got := u.one(t, "Service", "KillMode"); got != "process" {
		t.Errorf("KillMode=%s, want process: any other mode kills the VMMs in bangerd's cgroup on stop", got)
	}
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "KillMode=") && (i == 0 || !strings.HasPrefix(lines[i-1], "#")) {
			t.Error("KillMode= has no comment above it saying why")
		}
	}
	for _, k := range []string{"ExecStop", "ExecStopPost", "ExecReload"} {
		if strings.Contains(text, "\n"+k+"=") {
			t.Errorf("unit has %s=: nothing may run at stop that could touch VMs", k)
		}
	}
	start := strings.Fields(u.one(t, "Service", "ExecStart"))
	if len(start) == 0 || start[0] != "@PREFIX@/bin/bangerd" {
		t.Fatalf("ExecStart=%q, want @PREFIX@/bin/bangerd ...", start)
	}
	if strings.Join(start[1:], " ") != "--foreground" {
		t.Errorf("ExecStart args %q, want --foreground (the log goes to the journal too)", start[1:])
	}
	for _, c := range []struct{ section, key, want string }{
		{"Service", "Type", "simple"},
		{"Service", "Restart", "on-failure"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := u.one(t, c.section, c.key); got != c.want {
			t.Errorf("[%s] %s=%s, want %s", c.section, c.key, got, c.want)
		}
	}
	if u.one(t, "Unit", "Description") == "" {
		t.Error("no Description")
	}
	stop, err := time.ParseDuration(u.one(t, "Service", "TimeoutStopSec"))
	if err != nil || stop < 15*time.Second {
		t.Errorf("TimeoutStopSec=%s: want a duration of at least 15s (bangerd's shutdown grace is 10s)", u.one(t, "Service", "TimeoutStopSec"))
	}
}

// TestUnitVerify has systemd itself check the unit, as installed with a
// prefix whose bin/bangerd exists, when systemd-analyze is here (it works
// without systemd running).
func TestUnitVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze (apt-get install systemd): TestUnitFile checked the unit alone")
	}
	prefix := t.TempDir()
	if err := os.MkdirAll(filepath.Join(prefix, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(prefix, "bin", "bangerd"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "bangerd.service")
	text := strings.ReplaceAll(golden.ReadFile(t, "bangerd.service"), "@PREFIX@", prefix)
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	t.Logf("systemd-analyze verify: %v\n%s", err, out)
	// Warnings about other units on this host are not this unit's business.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "bangerd") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	if err != nil && !strings.Contains(string(out), "bangerd") {
		t.Logf("systemd-analyze failed on something else (above); not this unit")
	}
}

// TestKillModeUnderSystemd proves the point of KillMode on a real systemd:
// a transient unit with the unit's KillMode starts a child in its own
// session (as bangerd starts a VMM), the unit is stopped, and the child must
// still run. The same with KillMode=control-group kills it, which shows the
// test can fail.
func TestKillModeUnderSystemd(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		t.Skip("systemd is not running here (no /run/systemd/system): TestUnitFile checks KillMode=process in the unit instead")
	}
	needRoot(t, "systemd-run starts system units")
	needTool(t, "systemd-run", "apt-get install systemd")
	u, _ := loadUnit(t)
	mode := u.one(t, "Service", "KillMode")
	for _, c := range []struct {
		mode     string
		survives bool
	}{{mode, true}, {"control-group", false}} {
		t.Run(c.mode, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "child.pid")
			name := fmt.Sprintf("banger-killmode-test-%d-%s.service", os.Getpid(), c.mode)
			script := "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! >" + pidFile + "; exec sleep 300"
			out, err := exec.Command("systemd-run", "--unit="+name, "--property=KillMode="+c.mode,
				"--quiet", "/bin/sh", "-c", script).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-run: %v\n%s", err, out)
			}
			t.Cleanup(func() {
				exec.Command("systemctl", "stop", name).Run()
				exec.Command("systemctl", "reset-failed", name).Run()
			})
			pid := waitPid(t, pidFile)
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			if out, err := exec.Command("systemctl", "stop", name).CombinedOutput(); err != nil {
				t.Fatalf("systemctl stop: %v\n%s", err, out)
			}
			alive := sleepAlive(pid)
			if c.survives && !alive {
				t.Errorf("KillMode=%s: the setsid child %d died with the unit", c.mode, pid)
			}
			if !c.survives && alive {
				t.Errorf("KillMode=%s: the setsid child %d outlived the unit; the test proves nothing", c.mode, pid)
			}
		})
	}
}

func waitPid(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var pid int
		if b, err := os.ReadFile(path); err == nil {
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				return pid
			}
		}
	}
	t.Fatalf("the unit never wrote %s", path)
	return 0
}

// sleepAlive reports whether pid runs `sleep 300` (not a zombie, not reused),
// allowing systemd a moment to finish killing.
func sleepAlive(pid int) bool {
	time.Sleep(500 * time.Millisecond)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "sleep\x00300")
}
