package qemu

import (
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/api"
	"banger/internal/vmm"
)

// consoleArgs are appended to every guest's kernel command line: serial
// console, no reboot loop (reboot=t triple-faults, -no-reboot turns that
// into a QEMU exit), and exit on panic (panic=-1 reboots at once → exit).
const consoleArgs = "console=ttyS0 panic=-1 reboot=t"

// sandbox is QEMU's seccomp filter: no obsolete syscalls, no setuid or
// setgid, no fork/exec, no scheduler or affinity changes.
const sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// Kinds of files QEMU is handed open.
const (
	passListen = "listen" // a Unix socket the daemon binds at path
	passRead   = "read"   // a file opened read-only (kernel, initrd, read-only disk)
	passWrite  = "write"  // a disk opened read-write
	passAppend = "append" // a log opened for appending
	passTap    = "tap"    // the tap named path, attached through /dev/net/tun
	passVhost  = "vhost"  // /dev/vhost-vsock
	// Restore and memory files, opened by the caller of plan (see launch).
	passMemory   = "memory"   // Spec.MemoryFile, created for this guest
	passTemplate = "template" // a dup of a snapshot's sealed memory
	passState    = "state"    // a snapshot's device state (migration stream)
)

// Guest RAM kinds (Handles.Extra["ram"]).
const (
	ramAnon     = "anon"     // anonymous memory (-m alone)
	ramFile     = "file"     // Spec.MemoryFile, mapped shared: Save copies it out
	ramTemplate = "template" // a snapshot's sealed memory, mapped private (copy-on-write)
)

// ramID names the RAM block in every kind, the name QEMU gives anonymous
// microvm RAM: a migration stream names its blocks, so a snapshot of a
// guest of one kind restores into a guest of any other.
const ramID = "microvm.ram"

// incoming is what plan adds for a Restore: the guest waits (-S) for its
// state on an inherited fd (-incoming defer, then QMP migrate-incoming).
type incoming struct {
	state    string // the snapshot's state file
	template string // the snapshot's memory file; "" when RAM is in the stream
}

// passed is one file QEMU gets open as fd 3+i (its index in the plan):
// QEMU runs as the VM's own unprivileged uid and opens no host path itself.
type passed struct {
	kind string
	path string
}

// Args builds QEMU's argument list for spec. It is pure: it reads no files
// and starts nothing, so it can be checked against golden files.
func (e *Engine) Args(spec vmm.Spec) ([]string, error) {
	args, _, err := e.plan(spec, nil, nil)
	return args, err
}

// ramKind is the kind of RAM a guest of spec gets (restoring from in when
// not nil).
func ramKind(spec vmm.Spec, in *incoming) string {
	switch {
	case in != nil && in.template != "":
		return ramTemplate
	case spec.MemoryFile != "":
		return ramFile
	}
	return ramAnon
}

// plan builds the argument list and the files QEMU is handed, in fd order.
// isBlock says whether a disk path is a block device (nil: none is); in,
// when not nil, makes it a Restore's plan.
func (e *Engine) plan(spec vmm.Spec, isBlock func(string) bool, in *incoming) ([]string, []passed, error) {
	if err := e.checkConfig(); err != nil {
		return nil, nil, err
	}
	if err := checkSpecFields(spec); err != nil {
		return nil, nil, err
	}
	var files []passed
	fd := func(kind, path string) string {
		files = append(files, passed{kind, path})
		return strconv.Itoa(2 + len(files))
	}
	qmp := fd(passListen, spec.APISocket)
	machine := "microvm"
	kind := ramKind(spec, in)
	if kind != ramAnon {
		machine += ",memory-backend=" + ramID
	}
	args := []string{
		"-name", esc(spec.Name) + ",process=banger-" + esc(spec.Name),
		"-M", machine,
		"-sandbox", sandbox,
		"-chardev", "socket,id=qmp,fd=" + qmp + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
	}
	cmdline := strings.TrimSpace(spec.Cmdline + " " + consoleArgs)
	switch e.cfg.Accel {
	case "kvm":
		args = append(args, "-accel", "kvm", "-cpu", "host")
	case "tcg":
		args = append(args, "-accel", "tcg,tb-size="+strconv.Itoa(e.tbSize(in != nil)), "-cpu", "max")
		// microvm has no HPET: without these the guest's PIT-based TSC
		// calibration can fail under TCG and the boot hangs.
		cmdline += " tsc_early_khz=" + strconv.Itoa(e.cfg.TSCkHz) + " tsc=reliable"
	}
	serial := fd(passAppend, spec.SerialLog)
	args = append(args,
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-smp", strconv.Itoa(spec.VCPUs),
	)
	switch kind {
	case ramFile:
		args = append(args, "-object", memoryBackend(spec, fd(passMemory, spec.MemoryFile), "on"))
	case ramTemplate:
		args = append(args, "-object", memoryBackend(spec, fd(passTemplate, in.template), "off"))
	}
	args = append(args,
		"-nodefaults", "-no-user-config", "-nographic",
		// QEMU closes an -add-fd's own fd once it is in its set (before
		// chardevs are made): only files reached through /dev/fdset go so.
		"-add-fd", "fd="+serial+",set=1,"+serialOpaque(spec),
		"-chardev", "file,id=serial0,path=/dev/fdset/1,append=on",
		"-serial", "chardev:serial0",
		// -kernel and -initrd are read with fopen, not through fd sets:
		// the open fd's /proc link, which needs no path the uid can walk.
		"-kernel", "/proc/self/fd/"+fd(passRead, spec.Kernel),
	)
	if spec.Initrd != "" {
		args = append(args, "-initrd", "/proc/self/fd/"+fd(passRead, spec.Initrd))
	}
	args = append(args, "-append", cmdline, "-no-reboot")
	for i, d := range spec.Disks {
		kind := passWrite
		if d.ReadOnly {
			kind = passRead
		}
		set := strconv.Itoa(2 + i)
		args = append(args, "-add-fd", "fd="+fd(kind, d.Path)+",set="+set+",opaque=disk-"+d.ID+":"+esc(d.Path))
		if kind == passWrite {
			// QEMU opens a writable image read-only first (then reopens it
			// read-write): a set hands out the fd whose access mode matches.
			args = append(args, "-add-fd", "fd="+fd(passRead, d.Path)+",set="+set+",opaque=disk-"+d.ID+"-ro")
		}
		args = append(args, driveArgs(d, "/dev/fdset/"+set, isBlock != nil && isBlock(d.Path))...)
	}
	if spec.Tap != "" {
		args = append(args,
			"-netdev", "tap,id=n0,fd="+fd(passTap, spec.Tap),
			"-device", "virtio-net-device,netdev=n0,mac="+spec.MAC)
	}
	if e.cfg.VhostVsock {
		args = append(args, "-device", "vhost-vsock-device,guest-cid="+strconv.FormatUint(uint64(spec.VsockCID), 10)+
			",vhostfd="+fd(passVhost, "/dev/vhost-vsock"))
	} else if spec.AgentSocket != "" {
		args = append(args,
			"-device", "virtio-serial-device",
			"-chardev", "socket,id=agent,fd="+fd(passListen, spec.AgentSocket)+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name=org.banger.agent")
	}
	if in != nil {
		args = append(args, "-S", "-incoming", "defer")
		fd(passState, in.state) // handed to migrate-incoming as fd:N
	}
	return args, files, nil
}

// memoryBackend is guest RAM as the file open at fd: shared (share=on, the
// guest writes the file) or private (share=off, copy-on-write over it).
// QEMU 7.2 opens mem-path read-write whatever share says (file_ram_open:
// O_RDWR unless readonly=on, and readonly=on maps it read-only), so a
// template must be protected by seals, not by its mode.
func memoryBackend(spec vmm.Spec, fd, share string) string {
	return "memory-backend-file,id=" + ramID + ",size=" + strconv.Itoa(spec.MemoryMiB) + "M,mem-path=/proc/self/fd/" + fd +
		",share=" + share + ",x-use-canonical-path-for-ramblock-id=off"
}

// fdOf is the fd number QEMU gets the first file of kind as, or -1.
func fdOf(files []passed, kind string) int {
	for i, p := range files {
		if p.kind == kind {
			return 3 + i
		}
	}
	return -1
}

// serialOpaque names the serial log in QEMU's command line: with the fds
// passed, it is the path that tells this VM's QEMU from any other process
// (Alive's marker, see marker).
func serialOpaque(spec vmm.Spec) string { return "opaque=serial:" + esc(spec.SerialLog) }

// driveArgs gives one disk, opened through fd set path, as a virtio-blk
// device. serial= lets the guest find it as /dev/disk/by-id/virtio-<id>
// whatever its vdX letter. A block device (a /dev/mapper snapshot) takes
// the host_device protocol, QEMU's "file" refuses devices.
//
// Image locking is off: QEMU 7.2 cannot take its locks back after an
// outgoing migration (Save) when the image came as an fd set's rw+ro pair
// — cont fails with 'Failed to get "write" lock', the parent could never
// resume. The lock guarded against two QEMUs writing one image; the
// daemon hands every VM disks of its own, and QEMU opens no image path.
func driveArgs(d vmm.Disk, path string, block bool) []string {
	proto := "file"
	if block {
		proto = "host_device"
	}
	drive := "id=" + d.ID + ",file.driver=" + proto + ",file.filename=" + path + ",format=" + d.Format +
		",file.locking=off,if=none,cache=writeback,aio=threads,discard=unmap"
	if d.ReadOnly {
		drive += ",readonly=on"
	}
	return []string{"-drive", drive, "-device", "virtio-blk-device,drive=" + d.ID + ",serial=" + d.ID}
}

// esc doubles commas, QEMU's escape inside an option value.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// tbSize is the TCG translation cache in MiB: 128 for a boot (as fast as
// QEMU's 1 GiB default, GUEST-NOTES), ForkTBSizeMiB (default 128) for a
// guest restored from a snapshot. QEMU 7.2 fills the whole cache even in an
// idle guest, so it is most of a fork's own memory (its RAM is shared with
// its siblings): an idle 512 MiB child's PSS was 222 MiB with 128 and 133
// MiB with 32, but with 32 fork → agent ready went from 1.03 s to 1.43 s
// p50 (the burst after a restore translates more than 32 MiB of code).
func (e *Engine) tbSize(restored bool) int {
	switch {
	case restored && e.cfg.ForkTBSizeMiB > 0:
		return e.cfg.ForkTBSizeMiB
	case e.cfg.TBSizeMiB > 0:
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
	case spec.MemoryFile != "" && !filepath.IsAbs(spec.MemoryFile):
		return api.Invalid("vm %s: memory file %q is not an absolute path", spec.Name, spec.MemoryFile)
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
