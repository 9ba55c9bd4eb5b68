package feature

import (
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Every shipped feature is complete, and its script installs its marker
// and serves on its port. (image create runs the same script in its chroot
// that image build runs in the builder VM.)
func TestShippedDescriptors(t *testing.T) {
	for _, d := range All() {
		if d.Name == "" || d.Name == Agent || len(d.Script) == 0 || d.Marker == "" || d.Port == 0 ||
			!strings.HasPrefix(d.Path, "/") || d.Stage == "" || d.ScriptFix == "" {
			t.Errorf("incomplete descriptor %+v", d)
		}
		s := string(d.Script)
		for _, want := range []string{d.Marker, "--port " + strconv.Itoa(d.Port), HostCAEnv} {
			if !strings.Contains(s, want) {
				t.Errorf("%s's script lacks %q", d.Name, want)
			}
		}
		cmd := exec.Command("sh", "-n")
		cmd.Stdin = strings.NewReader(s)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sh -n %s's script: %v\n%s", d.Name, err, out)
		}
	}
	if d, ok := Get("opencode"); !ok || d.Stage != "opencode ready" || d.Port != 4096 ||
		!strings.Contains(string(d.Script), "opencode serve --hostname 0.0.0.0 --port 4096") ||
		!strings.Contains(string(d.Script), "systemctl enable opencode.service") {
		t.Errorf("opencode = %+v, %v", d, ok)
	}
}

// opencode's unit reads the per-VM password from the file the daemon
// writes and does not start without it.
func TestOpencodeAuth(t *testing.T) {
	a := Opencode.Auth
	if a == nil || a.User != "opencode" || a.PasswordEnv != "OPENCODE_SERVER_PASSWORD" ||
		!strings.HasPrefix(a.EnvFile, "/run/") || a.Unit != "opencode.service" {
		t.Fatalf("opencode's Auth = %+v", a)
	}
	s := string(Opencode.Script)
	for _, want := range []string{"\nEnvironmentFile=" + a.EnvFile + "\n", "\nConditionPathExists=" + a.EnvFile + "\n",
		"cat >/etc/systemd/system/" + a.Unit} {
		if !strings.Contains(s, want) {
			t.Errorf("opencode.sh lacks %q", want)
		}
	}
	if got := Opencode.CredentialURL("10.0.0.2", "p_w-d"); got != "http://opencode:p_w-d@10.0.0.2:4096" {
		t.Errorf("CredentialURL = %q", got)
	}
	if got := Opencode.CredentialURL("10.0.0.2", ""); got != "http://10.0.0.2:4096" {
		t.Errorf("CredentialURL without a password = %q", got)
	}
	if got := (Descriptor{Port: 80}).CredentialURL("h", "x"); got != "http://h:80" {
		t.Errorf("CredentialURL of a feature without Auth = %q", got)
	}
}

func TestRegistry(t *testing.T) {
	a, b := Descriptor{Name: "a", Port: 1}, Descriptor{Name: "b", Port: 2}
	r := NewRegistry(a, b)
	if d, ok := r.Get("b"); !ok || d.Port != 2 {
		t.Errorf("Get(b) = %+v, %v", d, ok)
	}
	if _, ok := r.Get(Agent); ok {
		t.Error("the agent has a descriptor")
	}
	if got := r.Of([]string{Agent, "b", "a", "zz"}); len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Errorf("Of = %+v", got)
	}
	if r.Names("|") != "a|b" || !slices.EqualFunc(r.All(), []Descriptor{a, b}, func(x, y Descriptor) bool { return x.Name == y.Name }) {
		t.Errorf("Names/All = %q %v", r.Names("|"), r.All())
	}
}

func TestURL(t *testing.T) {
	d := Descriptor{Port: 4096, Path: "/global/health"}
	for host, want := range map[string]string{"x.vm": "http://x.vm:4096", "10.0.0.2": "http://10.0.0.2:4096",
		"fd00::2": "http://[fd00::2]:4096"} {
		if got := d.URL(host); got != want {
			t.Errorf("URL(%s) = %s, want %s", host, got, want)
		}
	}
	if got := d.ProbeURL("x.vm"); got != "http://x.vm:4096/global/health" {
		t.Errorf("ProbeURL = %s", got)
	}
}
