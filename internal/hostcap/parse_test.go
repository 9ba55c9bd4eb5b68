package hostcap

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestParseFirecrackerVersion(t *testing.T) {
	tests := []struct {
		out     string
		want    Version
		wantErr bool
	}{
		{out: "Firecracker v1.8.0\n", want: Version{1, 8, 0}},
		{out: "Firecracker v1.10.1\n\nSupported snapshot data format versions: v1.0.0\n", want: Version{1, 10, 1}},
		{out: "Jailer v1.7.0\n", want: Version{1, 7, 0}},
		{out: "Firecracker v2.0\n", want: Version{2, 0, 0}},
		{out: "firecracker 1.9.1", want: Version{1, 9, 1}},
		{out: "Segmentation fault", wantErr: true},
		{out: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseFirecrackerVersion(tt.out)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseFirecrackerVersion(%q) err = %v, wantErr %v", tt.out, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseFirecrackerVersion(%q) = %v, want %v", tt.out, got, tt.want)
		}
	}
}

func TestParseQEMUVersion(t *testing.T) {
	tests := []struct {
		out     string
		want    Version
		wantErr bool
	}{
		{out: "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022", want: Version{7, 2, 22}},
		{out: "qemu-img version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)\n", want: Version{8, 2, 2}},
		{out: "QEMU emulator version 9.0\n", want: Version{9, 0, 0}},
		{out: "no idea", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseQEMUVersion(tt.out)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseQEMUVersion(%q) err = %v, wantErr %v", tt.out, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseQEMUVersion(%q) = %v, want %v", tt.out, got, tt.want)
		}
	}
}

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b Version
		want bool
	}{
		{Version{1, 7, 9}, MinFirecracker, true},
		{Version{1, 8, 0}, MinFirecracker, false},
		{Version{1, 10, 0}, MinFirecracker, false},
		{Version{0, 99, 0}, MinFirecracker, true},
		{Version{2, 0, 0}, MinFirecracker, false},
		{Version{1, 8, 1}, Version{1, 8, 2}, true},
	}
	for _, tt := range tests {
		if got := tt.a.Less(tt.b); got != tt.want {
			t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

const cpuinfoAMDPVM = `processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7H12 64-Core Processor
cpu MHz		: 2596.150
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor lahf_lm cmp_legacy

processor	: 1
cpu MHz		: 1200.000
flags		: fpu svm
`

const cpuinfoIntel = `processor	: 0
cpu MHz		: 3400.0005
flags		: fpu vme vmx ept

`

func TestParseCPUInfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    CPUInfo
		wantKHz int64
		wantErr bool
	}{
		{name: "amd-pvm", in: cpuinfoAMDPVM, want: CPUInfo{MHz: 2596.150, Hypervisor: true}, wantKHz: 2596150},
		{name: "intel", in: cpuinfoIntel, want: CPUInfo{MHz: 3400.0005, HasVMX: true}, wantKHz: 3400001},
		{name: "amd-svm", in: "cpu MHz : 1000\nflags : svm lm\n", want: CPUInfo{MHz: 1000, HasSVM: true}, wantKHz: 1000000},
		{name: "no mhz (arm)", in: "processor : 0\nFeatures : fp asimd\n", want: CPUInfo{}, wantKHz: 0},
		{name: "bad mhz", in: "cpu MHz : fast\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCPUInfo(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.KHz() != tt.wantKHz {
				t.Errorf("KHz() = %d, want %d", got.KHz(), tt.wantKHz)
			}
		})
	}
}

func TestJudgeKVM(t *testing.T) {
	vmx := CPUInfo{HasVMX: true}
	tests := []struct {
		name        string
		facts       kvmFacts
		wantOK      bool
		wantPresent bool
		detail      string
		fix         string
	}{
		{name: "hardware", facts: kvmFacts{APIVer: 12, CPU: vmx}, wantOK: true, wantPresent: true, detail: "Intel VT-x"},
		{name: "nested pvm", facts: kvmFacts{APIVer: 12, PVMModule: true, CPU: CPUInfo{Hypervisor: true}},
			wantPresent: true, detail: pvmDetail, fix: kvmHWFix},
		{name: "pvm even with vmx flag", facts: kvmFacts{APIVer: 12, PVMModule: true, CPU: vmx},
			wantPresent: true, detail: "nested PVM"},
		{name: "no vmx/svm", facts: kvmFacts{APIVer: 12, CPU: CPUInfo{Hypervisor: true}},
			wantPresent: true, detail: "neither vmx nor svm", fix: "hardware virtualisation"},
		{name: "no device", facts: kvmFacts{DevErr: fs.ErrNotExist, CPU: vmx}, detail: "no /dev/kvm", fix: "modprobe kvm_intel"},
		{name: "no device, kvm_pvm loaded", facts: kvmFacts{DevErr: fs.ErrNotExist, PVMModule: true, CPU: CPUInfo{Hypervisor: true}},
			detail: "no /dev/kvm", fix: "modprobe"},
		{name: "no permission", facts: kvmFacts{DevErr: fs.ErrPermission, CPU: vmx}, detail: "not usable", fix: "root"},
		{name: "create vm fails", facts: kvmFacts{DevErr: errors.New("KVM_CREATE_VM: EBUSY"), CPU: vmx}, detail: "KVM_CREATE_VM", fix: kvmHWFix},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := judgeKVM(tt.facts)
			if k.NestedPVM != (tt.wantPresent && tt.facts.PVMModule) {
				t.Errorf("NestedPVM=%v, want it only with a device and the kvm_pvm module", k.NestedPVM)
			}
			if k.OK != tt.wantOK || k.Present != tt.wantPresent {
				t.Errorf("OK=%v Present=%v, want %v %v (%s)", k.OK, k.Present, tt.wantOK, tt.wantPresent, k.Detail)
			}
			if !strings.Contains(k.Detail, tt.detail) {
				t.Errorf("detail %q does not contain %q", k.Detail, tt.detail)
			}
			if !strings.Contains(k.Fix, tt.fix) {
				t.Errorf("fix %q does not contain %q", k.Fix, tt.fix)
			}
			if !k.OK && k.Fix == "" {
				t.Errorf("unusable KVM without a fix")
			}
		})
	}
}

func TestJudgeFree(t *testing.T) {
	tests := []struct {
		free    uint64
		ok, low bool
	}{
		{free: 100 << 30, ok: true},
		{free: 10 << 30, ok: true},
		{free: 9 << 30, ok: true, low: true},
		{free: 2 << 30, ok: true, low: true},
		{free: 1 << 30, low: true},
		{free: 0, low: true},
	}
	for _, tt := range tests {
		f := judgeFree("/x", tt.free)
		if f.OK != tt.ok || f.Low != tt.low {
			t.Errorf("judgeFree(%s) OK=%v Low=%v, want %v %v", HumanBytes(tt.free), f.OK, f.Low, tt.ok, tt.low)
		}
		if (f.Low || !f.OK) && f.Fix == "" {
			t.Errorf("judgeFree(%s): no fix", HumanBytes(tt.free))
		}
	}
}

func TestHumanBytes(t *testing.T) {
	tests := map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 10 << 30: "10.0 GiB", 1536 << 20: "1.5 GiB"}
	for in, want := range tests {
		if got := HumanBytes(in); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestHasDMTarget(t *testing.T) {
	out := "snapshot-merge   v1.5.0\nsnapshot         v1.16.0\nstriped          v1.6.0\n"
	if !hasDMTarget(out, "snapshot") {
		t.Error("snapshot not found")
	}
	if hasDMTarget("snapshot-merge v1.5.0\n", "snapshot") {
		t.Error("snapshot-merge taken for snapshot")
	}
}
