package hostcap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h): _IO(KVMIO=0xAE, nr).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// Paths read by the probes; tests do not change them, they exist so that the
// pure parsers can be tested on fixed text.
const (
	devKVM      = "/dev/kvm"
	procCPUInfo = "/proc/cpuinfo"
	sysKVMPVM   = "/sys/module/kvm_pvm"
	sysTSCFreq  = "/sys/devices/system/cpu/cpu0/tsc_freq_khz"
)

// Messages shared by the probe and the doctor.
const (
	noKVMDetail = "no /dev/kvm: this host offers no KVM; QEMU software emulation (TCG) will be used"
	pvmDetail   = "/dev/kvm is nested PVM (kvm_pvm): ordinary guest kernels hang under it; QEMU software emulation (TCG) will be used"
	kvmHWFix    = "run banger on a host with hardware virtualisation (bare metal or nested VMX/SVM) to use KVM"
)

// CPUInfo is what banger reads from /proc/cpuinfo (the first processor).
type CPUInfo struct {
	MHz    float64
	HasVMX bool
	HasSVM bool
	// Hypervisor is true when the CPU says it runs under a hypervisor.
	Hypervisor bool
}

// ParseCPUInfo reads the first processor block of /proc/cpuinfo text.
func ParseCPUInfo(r io.Reader) (CPUInfo, error) {
	var ci CPUInfo
	sawMHz, sawFlags := false, false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "cpu MHz":
			if sawMHz {
				continue
			}
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return ci, fmt.Errorf("parsing cpu MHz %q: %w", val, err)
			}
			ci.MHz, sawMHz = f, true
		case "flags":
			if sawFlags {
				continue
			}
			sawFlags = true
			for _, f := range strings.Fields(val) {
				switch f {
				case "vmx":
					ci.HasVMX = true
				case "svm":
					ci.HasSVM = true
				case "hypervisor":
					ci.Hypervisor = true
				}
			}
		}
		if sawMHz && sawFlags {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return ci, fmt.Errorf("reading cpuinfo: %w", err)
	}
	return ci, nil
}

// KHz returns the CPU frequency in integer kHz.
func (ci CPUInfo) KHz() int64 { return int64(math.Round(ci.MHz * 1000)) }

// readCPUInfo parses the host's /proc/cpuinfo.
func readCPUInfo() (CPUInfo, error) { return readCPUInfoFile(procCPUInfo) }

func readCPUInfoFile(path string) (CPUInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return CPUInfo{}, fmt.Errorf("opening cpuinfo: %w", err)
	}
	defer f.Close()
	return ParseCPUInfo(f)
}

// probeTSC prefers the kernel's exact TSC frequency and falls back to the
// "cpu MHz" line.
func probeTSC() (int64, string) {
	if b, err := os.ReadFile(sysTSCFreq); err == nil {
		if k, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && k > 0 {
			return k, sysTSCFreq
		}
	}
	ci, err := readCPUInfo()
	if err != nil || ci.MHz <= 0 {
		return 0, ""
	}
	return ci.KHz(), procCPUInfo + " cpu MHz"
}

// kvmFacts are the raw observations the KVM verdict is made from.
type kvmFacts struct {
	DevErr error // opening /dev/kvm or its ioctls failed
	APIVer int
	// PVMModule: the kvm_pvm module is loaded. It makes /dev/kvm nested PVM
	// only when there is a /dev/kvm; a host can have the module and no device.
	PVMModule bool
	CPU       CPUInfo
	CPUErr    error
}

// kvmHost is where the KVM probe looks: the host's paths in production, a
// fake /dev, /sys and /proc under a temp dir in tests (open is then a fake
// too, since a regular file cannot answer KVM ioctls).
type kvmHost struct {
	DevKVM, PVMMarker, CPUInfo string
	Open                       func(dev string) (apiVersion int, err error)
}

var realKVMHost = kvmHost{DevKVM: devKVM, PVMMarker: sysKVMPVM, CPUInfo: procCPUInfo, Open: openKVM}

// probeKVM opens /dev/kvm, checks the API version, creates (and closes) a VM
// and then judges whether real guests can run.
func probeKVM() KVMCap { return realKVMHost.probe() }

func (h kvmHost) probe() KVMCap {
	var f kvmFacts
	f.APIVer, f.DevErr = h.Open(h.DevKVM)
	_, err := os.Stat(h.PVMMarker)
	f.PVMModule = err == nil
	f.CPU, f.CPUErr = readCPUInfoFile(h.CPUInfo)
	return judgeKVM(f)
}

func openKVM(dev string) (int, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", dev, err)
	}
	defer unix.Close(fd)
	ver, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if ver != kvmAPIVersion {
		return ver, fmt.Errorf("KVM API version %d, want %d", ver, kvmAPIVersion)
	}
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		return ver, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	unix.Close(vm)
	return ver, nil
}

// judgeKVM is the pure verdict over the probe's observations. There are three
// shapes: no /dev/kvm (or one that cannot be opened), /dev/kvm that is nested
// PVM, and /dev/kvm that works; only the last one runs real guests.
func judgeKVM(f kvmFacts) KVMCap {
	k := KVMCap{HWVirt: f.CPU.HasVMX || f.CPU.HasSVM}
	if f.DevErr != nil {
		if errors.Is(f.DevErr, fs.ErrNotExist) {
			k.Detail = noKVMDetail
		} else {
			k.Detail = fmt.Sprintf("KVM is not usable: %v; QEMU software emulation (TCG) will be used", f.DevErr)
		}
		k.Fix = kvmFix(f.DevErr)
		return k
	}
	k.Present = true
	k.NestedPVM = f.PVMModule
	switch {
	case f.PVMModule:
		k.Detail = pvmDetail
		k.Fix = kvmHWFix
	case f.CPUErr == nil && !k.HWVirt:
		k.Detail = "/dev/kvm works but the CPU advertises neither vmx nor svm (a paravirtual KVM?): real guests may hang; QEMU software emulation (TCG) will be used"
		k.Fix = kvmHWFix + `, or set accel = "kvm" in the config if you know KVM works here`
	default:
		k.OK = true
		k.Detail = fmt.Sprintf("/dev/kvm usable (API version %d, %s)", f.APIVer, virtName(f.CPU))
	}
	return k
}

func virtName(ci CPUInfo) string {
	switch {
	case ci.HasVMX:
		return "Intel VT-x"
	case ci.HasSVM:
		return "AMD-V"
	}
	return "no vmx/svm flag"
}

func kvmFix(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "enable virtualisation in the firmware and load the module (modprobe kvm_intel or kvm_amd), or run on a host with hardware virtualisation"
	case errors.Is(err, fs.ErrPermission):
		return "run bangerd as root (or add its user to the kvm group)"
	}
	return kvmHWFix
}
