package qemu

import (
	"strconv"
	"strings"

	"banger/internal/api"
	"banger/internal/vmm"
)

// consoleArgs are appended to every guest's kernel command line: serial
// console, no reboot loop (reboot=t triple-faults, -no-reboot turns that
// into a QEMU exit), and exit on panic (panic=-1 reboots at once → exit).
const consoleArgs = "console=ttyS0 panic=-1 reboot=t"

// Args builds QEMU's argument list for spec. It is pure: it reads no files
// and starts nothing, so it can be checked against golden files.
func (e *Engine) Args(spec vmm.Spec) ([]string, error) {
	if err := e.checkConfig(); err != nil {
		return nil, err
	}
	if err := checkSpecFields(spec); err != nil {
		return nil, err
	}
	args := []string{
		"-name", esc(spec.Name) + ",process=banger-" + esc(spec.Name),
		"-M", "microvm",
	}
	cmdline := strings.TrimSpace(spec.Cmdline + " " + consoleArgs)
	switch e.cfg.Accel {
	case "kvm":
		args = append(args, "-accel", "kvm", "-cpu", "host")
	case "tcg":
		args = append(args, "-accel", "tcg,tb-size="+strconv.Itoa(e.tbSize()), "-cpu", "max")
		// microvm has no HPET: without these the guest's PIT-based TSC
		// calibration can fail under TCG and the boot hangs.
		cmdline += " tsc_early_khz=" + strconv.Itoa(e.cfg.TSCkHz) + " tsc=reliable"
	}
	args = append(args,
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-smp", strconv.Itoa(spec.VCPUs),
		"-nodefaults", "-no-user-config", "-nographic",
		"-chardev", "file,id=serial0,path="+esc(spec.SerialLog)+",append=on",
		"-serial", "chardev:serial0",
		"-kernel", spec.Kernel,
	)
	if spec.Initrd != "" {
		args = append(args, "-initrd", spec.Initrd)
	}
	args = append(args, "-append", cmdline, "-no-reboot")
	for _, d := range spec.Disks {
		args = append(args, driveArgs(d)...)
	}
	if spec.Tap != "" {
		args = append(args,
			"-netdev", "tap,id=n0,ifname="+esc(spec.Tap)+",script=no,downscript=no",
			"-device", "virtio-net-device,netdev=n0,mac="+spec.MAC)
	}
	if e.cfg.VhostVsock {
		args = append(args, "-device", "vhost-vsock-device,guest-cid="+strconv.FormatUint(uint64(spec.VsockCID), 10))
	} else if spec.AgentSocket != "" {
		args = append(args,
			"-device", "virtio-serial-device",
			"-chardev", "socket,id=agent,path="+esc(spec.AgentSocket)+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name=org.banger.agent")
	}
	args = append(args, "-qmp", "unix:"+esc(spec.APISocket)+",server=on,wait=off")
	if spec.VMDir != "" {
		args = append(args, "-pidfile", pidfile(spec))
	}
	return args, nil
}

// driveArgs gives one disk as a virtio-blk device. serial= lets the guest
// find it as /dev/disk/by-id/virtio-<id> whatever its vdX letter.
func driveArgs(d vmm.Disk) []string {
	drive := "id=" + d.ID + ",file=" + esc(d.Path) + ",format=" + d.Format +
		",if=none,cache=writeback,aio=threads,discard=unmap"
	if d.ReadOnly {
		drive += ",readonly=on"
	}
	return []string{"-drive", drive, "-device", "virtio-blk-device,drive=" + d.ID + ",serial=" + d.ID}
}

// esc doubles commas, QEMU's escape inside an option value.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func (e *Engine) tbSize() int {
	if e.cfg.TBSizeMiB > 0 {
		return e.cfg.TBSizeMiB
	}
	return 128
}

func (e *Engine) checkConfig() error {
	switch e.cfg.Accel {
	case "kvm":
	case "tcg":
		if e.cfg.TSCkHz <= 0 {
			return api.Invalid("qemu engine: accel tcg needs the host TSC frequency (TSCkHz)").
				WithFix("pass the host's TSC kHz (cpu MHz × 1000 from /proc/cpuinfo) in qemu.Config")
		}
	default:
		return api.Invalid("qemu engine: accel %q is not kvm or tcg", e.cfg.Accel)
	}
	return nil
}

// checkSpecFields validates what Args needs, without touching files.
func checkSpecFields(spec vmm.Spec) error {
	if err := spec.CheckBasics(); err != nil {
		return err
	}
	switch {
	case spec.Kernel == "":
		return api.Invalid("vm %s: no kernel (bzImage) given", spec.Name)
	case spec.APISocket == "" || strings.Contains(spec.APISocket, ","):
		return api.Invalid("vm %s: QMP socket path %q must be non-empty without commas", spec.Name, spec.APISocket)
	case spec.SerialLog == "":
		return api.Invalid("vm %s: no serial log path given", spec.Name)
	case spec.Tap != "" && spec.MAC == "":
		return api.Invalid("vm %s: tap %s given without a guest MAC", spec.Name, spec.Tap)
	}
	seen := map[string]bool{}
	for i, d := range spec.Disks {
		switch {
		case d.ID == "" || strings.ContainsAny(d.ID, ",= "):
			return api.Invalid("vm %s: disk %d: id %q must be non-empty without ',', '=' or spaces", spec.Name, i, d.ID)
		case seen[d.ID]:
			return api.Invalid("vm %s: disk id %q used twice", spec.Name, d.ID)
		case d.Path == "":
			return api.Invalid("vm %s: disk %s: empty path", spec.Name, d.ID)
		case d.Format != "raw" && d.Format != "qcow2":
			return api.Invalid("vm %s: disk %s: format %q is not raw or qcow2", spec.Name, d.ID, d.Format)
		}
		seen[d.ID] = true
	}
	return nil
}

func pidfile(spec vmm.Spec) string { return spec.VMDir + "/qemu.pid" }
