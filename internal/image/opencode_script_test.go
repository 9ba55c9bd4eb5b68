package image

import (
	"os/exec"
	"strings"
	"testing"
)

// The shipped build script installs exactly what the chroot stage of
// `image create --with opencode` installs: the same launcher and unit.
func TestOpencodeScriptMatchesTheChrootStage(t *testing.T) {
	s := string(OpencodeScript)
	for name, want := range map[string]string{"launcher": opencodeLauncher, "unit": opencodeUnit} {
		if !strings.Contains(s, want) {
			t.Errorf("buildscripts/opencode.sh lacks the chroot stage's %s:\n%s", name, want)
		}
	}
	for _, want := range []string{"opencode serve --hostname 0.0.0.0 --port 4096", opencodeUnitPath, "systemctl enable opencode.service"} {
		if !strings.Contains(s, want) {
			t.Errorf("buildscripts/opencode.sh lacks %q", want)
		}
	}
	cmd := exec.Command("sh", "-n")
	cmd.Stdin = strings.NewReader(s)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sh -n buildscripts/opencode.sh: %v\n%s", err, out)
	}
}

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		less bool
	}{
		{"6.1.0-28-cloud-amd64", "6.1.0-30-cloud-amd64", true},
		{"6.1.0-9-cloud-amd64", "6.1.0-28-cloud-amd64", true},
		{"6.12.1-cloud-amd64", "6.2.0-cloud-amd64", false},
		{"6.1.0-28-cloud-amd64", "6.1.0-28-cloud-amd64", false},
	}
	for _, c := range cases {
		if got := compareVersions(c.a, c.b) < 0; got != c.less {
			t.Errorf("compareVersions(%q, %q) < 0 = %v, want %v", c.a, c.b, got, c.less)
		}
	}
}
