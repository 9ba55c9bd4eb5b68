package agent

import (
	"strings"
	"testing"
)

func TestGuestFiles(t *testing.T) {
	files := map[string]GuestFile{}
	for _, f := range GuestFiles() {
		files[f.Path] = f
		if f.Mode != 0o644 || len(f.Data) == 0 {
			t.Errorf("%s: mode %v, %d bytes", f.Path, f.Mode, len(f.Data))
		}
	}
	unit, ok := files["/usr/lib/systemd/system/banger-agent.service"]
	if !ok {
		t.Fatal("no systemd unit")
	}
	for _, want := range []string{"ExecStart=" + AgentPath + "\n", "Restart=always\n"} {
		if !strings.Contains(string(unit.Data), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if strings.Contains(string(unit.Data), "[Install]") {
		t.Error("unit has an [Install] section; udev starts it")
	}
	rules, ok := files["/usr/lib/udev/rules.d/99-banger-agent.rules"]
	if !ok {
		t.Fatal("no udev rule")
	}
	for _, want := range []string{
		`SUBSYSTEM=="virtio-ports", ATTR{name}=="org.banger.agent", TAG+="systemd", ENV{SYSTEMD_WANTS}+="banger-agent.service"`,
		`KERNEL=="vsock", TAG+="systemd", ENV{SYSTEMD_WANTS}+="banger-agent.service"`,
	} {
		if !strings.Contains(string(rules.Data), want) {
			t.Errorf("rules lack %q", want)
		}
	}
	// Callers may modify what they get.
	GuestFiles()[0].Data[0] = 'X'
	if GuestFiles()[0].Data[0] == 'X' {
		t.Error("GuestFiles shares its data between calls")
	}
}
