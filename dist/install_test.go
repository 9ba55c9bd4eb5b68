package dist

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/golden"
)

// TestMakeInstall runs `make install` and `make uninstall` into a temporary
// DESTDIR with two prefixes: the files land where they should, the unit runs
// $(PREFIX)/bin/bangerd, an existing config is left alone, and uninstall
// removes all but the config.
func TestMakeInstall(t *testing.T) {
	bin := binaries(t)
	sample := golden.ReadFile(t, filepath.Join(repoRoot(t), "config", "config.sample.toml"))
	for _, prefix := range []string{"/usr", "/opt/banger"} {
		t.Run(strings.ReplaceAll(prefix, "/", "_"), func(t *testing.T) {
			dest := t.TempDir()
			vars := []string{"-o", "build", "BIN=" + bin, "DESTDIR=" + dest, "PREFIX=" + prefix}
			runMake(t, nil, append([]string{"install"}, vars...)...)

			for _, b := range []string{"banger", "bangerd", "banger-agent"} {
				p := filepath.Join(dest, prefix, "bin", b)
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatalf("%s not installed: %v", b, err)
				}
				if fi.Mode().Perm() != 0o755 {
					t.Errorf("%s mode %v, want 0755", p, fi.Mode().Perm())
				}
			}
			unitPath := filepath.Join(dest, "etc/systemd/system/bangerd.service")
			unit := golden.ReadFile(t, unitPath)
			u, err := parseUnit(unit)
			if err != nil {
				t.Fatalf("installed unit: %v", err)
			}
			if got, want := u.one(t, "Service", "ExecStart"), prefix+"/bin/bangerd --foreground"; got != want {
				t.Errorf("ExecStart=%s, want %s", got, want)
			}
			if strings.Contains(unit, "@PREFIX@") {
				t.Error("installed unit still has @PREFIX@")
			}
			if got := u.one(t, "Service", "KillMode"); got != "process" {
				t.Errorf("installed unit KillMode=%s", got)
			}
			if fi, _ := os.Stat(unitPath); fi.Mode().Perm() != 0o644 {
				t.Errorf("unit mode %v, want 0644", fi.Mode().Perm())
			}
			config := filepath.Join(dest, "etc/banger/config.toml")
			if golden.ReadFile(t, config) != sample {
				t.Error("/etc/banger/config.toml is not config/config.sample.toml")
			}

			// A second install keeps the admin's config.
			mine := "# mine\nlog_level = \"debug\"\n"
			if err := os.WriteFile(config, []byte(mine), 0o644); err != nil {
				t.Fatal(err)
			}
			runMake(t, nil, append([]string{"install"}, vars...)...)
			if golden.ReadFile(t, config) != mine {
				t.Error("make install overwrote an existing /etc/banger/config.toml")
			}

			runMake(t, nil, append([]string{"uninstall"}, vars...)...)
			var left []string
			filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() {
					left = append(left, strings.TrimPrefix(p, dest))
				}
				return nil
			})
			if len(left) != 1 || left[0] != "/etc/banger/config.toml" {
				t.Errorf("after uninstall, files left: %q; want only /etc/banger/config.toml", left)
			}
		})
	}
}
