package qemu

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/golden"
	"banger/internal/vmm"
)

func baseSpec() vmm.Spec {
	return vmm.Spec{
		Name: "dev1", VMDir: "/var/lib/banger/vms/dev1", VCPUs: 2, MemoryMiB: 512, UID: 1900000007, GID: 1900000007,
		Kernel: "/var/lib/banger/images/deb/vmlinuz", Initrd: "/var/lib/banger/images/deb/initrd.img",
		Cmdline: "root=/dev/vda rw net.ifnames=0 ip=172.30.0.2::172.30.0.1:255.255.255.0::eth0:off hostname=dev1",
		Disks:   []vmm.Disk{{ID: "root", Path: "/var/lib/banger/vms/dev1/root.ext4", Format: "raw"}},
		Tap:     "bgtap0", MAC: "06:00:ac:1e:00:02", VsockCID: 7,
		APISocket:   "/var/lib/banger/vms/dev1/qmp.sock",
		AgentSocket: "/var/lib/banger/vms/dev1/agent.sock",
		SerialLog:   "/var/lib/banger/vms/dev1/serial.log",
		EngineLog:   "/var/lib/banger/vms/dev1/qemu.log",
	}
}

func TestArgsGolden(t *testing.T) {
	tcg := Config{Accel: "tcg", TSCkHz: 2199998}
	tests := []struct {
		name string
		cfg  Config
		edit func(*vmm.Spec)
	}{
		{"tcg-serial-agent", tcg, func(*vmm.Spec) {}},
		{"kvm-vhost-vsock", Config{Accel: "kvm", VhostVsock: true}, func(*vmm.Spec) {}},
		{"qcow2-root", Config{Accel: "tcg", TSCkHz: 3000000, TBSizeMiB: 64}, func(s *vmm.Spec) {
			s.Disks[0] = vmm.Disk{ID: "root", Path: "/var/lib/banger/vms/dev1/root.qcow2", Format: "qcow2"}
		}},
		{"memory-file", tcg, func(s *vmm.Spec) { s.MemoryFile = "/run/banger/mem/dev1.ram" }},
		{"two-disks", tcg, func(s *vmm.Spec) {
			s.Disks[0].ReadOnly = true
			s.Disks = append(s.Disks, vmm.Disk{ID: "work", Path: "/var/lib/banger/vms/dev1/work,1.ext4", Format: "raw"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec()
			tt.edit(&spec)
			args, err := New(tt.cfg).Args(spec)
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".golden"), strings.Join(args, "\n")+"\n")
		})
	}
}

// TestRestoreArgsGolden: a Restore's plan is Start's plus the RAM backend
// and -S -incoming defer, with the state and the template as fds.
func TestRestoreArgsGolden(t *testing.T) {
	e := New(Config{Accel: "tcg", TSCkHz: 2199998})
	tests := []struct {
		name string
		in   incoming
		mem  string
	}{
		{"restore-template", incoming{state: "/snap/state", template: "/snap/memory"}, "/run/banger/mem/dev1.ram"},
		{"restore-stream-memory-file", incoming{state: "/snap/state"}, "/run/banger/mem/dev1.ram"},
		{"restore-stream-anon", incoming{state: "/snap/state"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec()
			spec.MemoryFile = tt.mem
			args, files, err := e.plan(spec, nil, &tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var fds []string
			for i, f := range files {
				fds = append(fds, fmt.Sprintf("fd %d: %s %s", 3+i, f.kind, f.path))
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".golden"),
				strings.Join(args, "\n")+"\n--- files\n"+strings.Join(fds, "\n")+"\n")
		})
	}
}

func TestArgsInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		edit func(*vmm.Spec)
		want string
	}{
		{"tcg without tsc", Config{Accel: "tcg"}, func(*vmm.Spec) {}, "TSC"},
		{"bad accel", Config{Accel: "hvf"}, func(*vmm.Spec) {}, `accel "hvf"`},
		{"zero vcpus", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.VCPUs = 0 }, "vcpus"},
		{"zero memory", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.MemoryMiB = 0 }, "memory"},
		{"no kernel", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.Kernel = "" }, "kernel"},
		{"bad format", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.Disks[0].Format = "vmdk" }, `"vmdk"`},
		{"dup disk", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.Disks = append(s.Disks, s.Disks[0]) }, "twice"},
		{"tap without mac", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.MAC = "" }, "MAC"},
		{"relative memory file", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.MemoryFile = "mem.ram" }, "absolute"},
		{"comma in qmp path", Config{Accel: "kvm"}, func(s *vmm.Spec) { s.APISocket = "/a,b/qmp.sock" }, "commas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec()
			tt.edit(&spec)
			_, err := New(tt.cfg).Args(spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !api.IsInvalid(err) {
				t.Fatalf("Args = %v, want an Invalid error containing %q", err, tt.want)
			}
		})
	}
}

func TestMapStatus(t *testing.T) {
	for in, want := range map[string]vmm.State{
		"running": vmm.StateRunning, "paused": vmm.StatePaused, "inmigrate": vmm.StatePaused,
		"shutdown": vmm.StateStopped, "guest-panicked": vmm.StateStopped, "bogus": vmm.StateUnknown,
	} {
		if got := mapStatus(in); got != want {
			t.Errorf("mapStatus(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInfo(t *testing.T) {
	info := New(Config{Binary: "/nonexistent/qemu", Accel: "tcg", TSCkHz: 1}).Info()
	if info.Available || !strings.Contains(info.Reason, "qemu-system-x86") || info.AgentTransport != vmm.TransportSerial || !info.Qcow2 || info.NeedsVmlinux {
		t.Errorf("Info with a missing binary = %+v", info)
	}
	if info := New(Config{Accel: "kvm", VhostVsock: true}).Info(); info.AgentTransport != vmm.TransportVsock || info.Name != vmm.QEMU {
		t.Errorf("Info with vhost-vsock = %+v", info)
	}
}
