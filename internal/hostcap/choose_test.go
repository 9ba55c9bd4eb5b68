package hostcap

import (
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/vmm"
)

// synthetic hosts
func hwHost() Caps {
	return Caps{
		KVM:          KVMCap{Cap: Cap{OK: true, Detail: "/dev/kvm usable"}, Present: true, HWVirt: true},
		Firecracker:  Binary{Cap: Cap{OK: true, Detail: "firecracker 1.10.1"}, Version: "1.10.1"},
		QEMU:         Binary{Cap: Cap{OK: true}, Version: "7.2.22"},
		QEMUImg:      Binary{Cap: Cap{OK: true}},
		DeviceMapper: Cap{OK: true, Detail: "device-mapper with the snapshot target"},
		Loop:         Cap{OK: true},
		Tools:        []Tool{{Name: "mkfs.xfs", Cap: Cap{OK: true}}},
		StateDir:     StateDirCap{Cap: Cap{OK: true}, Path: "/var/lib/banger", FSType: "ext4"},
		Reflink:      Cap{Detail: "no reflink"},
	}
}

// thisHost mirrors the development machine: nested PVM, no firecracker, no DM.
func thisHost() Caps {
	c := hwHost()
	c.KVM = KVMCap{Cap: Cap{Detail: pvmDetail, Fix: kvmHWFix}, Present: true, NestedPVM: true}
	c.Firecracker = Binary{Cap: Cap{Detail: "firecracker not found on PATH", Fix: fcFix}}
	c.DeviceMapper = Cap{Detail: "device-mapper missing (/dev/mapper/control does not exist)", Fix: dmFix}
	return c
}

func with(c Caps, f func(*Caps)) Caps { f(&c); return c }

func TestChooseEngine(t *testing.T) {
	noQEMU := func(c *Caps) { c.QEMU = Binary{Cap: Cap{Detail: "qemu-system-x86_64 not found", Fix: qemuFix}} }
	noKVM := func(c *Caps) {
		c.KVM = KVMCap{Cap: Cap{Detail: "KVM is not usable: opening /dev/kvm: no such file", Fix: "modprobe kvm_intel"}}
	}
	tests := []struct {
		name, engine, accel string
		caps                Caps
		wantEngine          string
		wantAccel           string
		wantKind            api.Kind // "" = no error
		reason              string
	}{
		{name: "auto hw", caps: hwHost(), wantEngine: "firecracker", wantAccel: "kvm", reason: "firecracker 1.10.1"},
		{name: "auto this host", caps: thisHost(), wantEngine: "qemu", wantAccel: "tcg",
			reason: "KVM is not usable for real guests here (nested PVM); falling back to QEMU software emulation — expect ~15 s boots"},
		{name: "auto kvm no fc", caps: with(hwHost(), func(c *Caps) { c.Firecracker = thisHost().Firecracker }),
			wantEngine: "qemu", wantAccel: "kvm", reason: "firecracker not found"},
		{name: "auto nothing", caps: with(thisHost(), noQEMU), wantKind: api.KindFailedPrecondition},
		{name: "auto accel tcg forced", accel: "tcg", caps: hwHost(), wantEngine: "qemu", wantAccel: "tcg", reason: `accel = "tcg"`},
		{name: "auto accel kvm forced on pvm", accel: "kvm", caps: thisHost(), wantEngine: "qemu", wantAccel: "kvm"},
		{name: "auto accel kvm forced no dev", accel: "kvm", caps: with(thisHost(), noKVM), wantKind: api.KindFailedPrecondition},
		{name: "fc forced hw", engine: "firecracker", caps: hwHost(), wantEngine: "firecracker", wantAccel: "kvm"},
		{name: "fc forced missing", engine: "firecracker", caps: thisHost(), wantKind: api.KindFailedPrecondition},
		{name: "fc forced pvm", engine: "firecracker", caps: with(thisHost(), func(c *Caps) { c.Firecracker = hwHost().Firecracker }),
			wantKind: api.KindFailedPrecondition},
		{name: "fc forced pvm accel kvm", engine: "firecracker", accel: "kvm",
			caps: with(thisHost(), func(c *Caps) { c.Firecracker = hwHost().Firecracker }), wantEngine: "firecracker", wantAccel: "kvm"},
		{name: "fc tcg", engine: "firecracker", accel: "tcg", caps: hwHost(), wantKind: api.KindInvalid},
		{name: "qemu forced hw", engine: "qemu", caps: hwHost(), wantEngine: "qemu", wantAccel: "kvm"},
		{name: "qemu forced missing", engine: "qemu", caps: with(hwHost(), noQEMU), wantKind: api.KindFailedPrecondition},
		{name: "unknown engine", engine: "bochs", caps: hwHost(), wantKind: api.KindInvalid},
		{name: "auto jailer same release", caps: with(hwHost(), jailer("1.10.1", true)), wantEngine: "firecracker", wantAccel: "kvm"},
		{name: "auto jailer other release", caps: with(hwHost(), jailer("1.9.0", true)), wantEngine: "qemu", wantAccel: "kvm",
			reason: "jailer 1.9.0 at /usr/local/bin/jailer is not the same version as firecracker 1.10.1"},
		{name: "auto jailer broken", caps: with(hwHost(), jailer("", false)), wantEngine: "qemu", wantAccel: "kvm", reason: "jailer not found"},
		{name: "fc forced jailer other release", engine: "firecracker", caps: with(hwHost(), jailer("1.9.0", true)), wantKind: api.KindFailedPrecondition},
		{name: "fc forced jailer broken", engine: "firecracker", caps: with(hwHost(), jailer("", false)), wantKind: api.KindFailedPrecondition},
		{name: "auto fc engine unavailable", caps: hwHost().WithEngine(vmm.Info{Name: vmm.Firecracker, Reason: "jailer /x not found"}),
			wantEngine: "qemu", wantAccel: "kvm", reason: "firecracker engine unavailable: jailer /x not found"},
		{name: "fc forced engine unavailable", engine: "firecracker", caps: hwHost().WithEngine(vmm.Info{Name: vmm.Firecracker, Reason: "x"}),
			wantKind: api.KindFailedPrecondition},
		{name: "auto fc engine available", caps: hwHost().WithEngine(vmm.Info{Name: vmm.Firecracker, Available: true}), wantEngine: "firecracker", wantAccel: "kvm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Engine, cfg.Accel = orAuto(tt.engine), orAuto(tt.accel)
			eng, accel, reason, err := ChooseEngine(cfg, tt.caps)
			if tt.wantKind != "" {
				if err == nil || api.KindOf(err) != tt.wantKind {
					t.Fatalf("err = %v, want kind %s", err, tt.wantKind)
				}
				if api.AsError(err).Fix == "" {
					t.Errorf("error without a fix: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if eng != tt.wantEngine || accel != tt.wantAccel {
				t.Errorf("got %s/%s, want %s/%s (%s)", eng, accel, tt.wantEngine, tt.wantAccel, reason)
			}
			if !strings.Contains(reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", reason, tt.reason)
			}
		})
	}
}

// jailer sets a probed jailer of version (ok) or a missing one.
func jailer(version string, ok bool) func(*Caps) {
	return func(c *Caps) {
		if !ok {
			c.Jailer = &Binary{Cap: Cap{Detail: "jailer not found at /usr/local/bin/jailer", Fix: "install the jailer"}}
			return
		}
		c.Jailer = &Binary{Cap: Cap{OK: true}, Path: "/usr/local/bin/jailer", Version: version}
	}
}

func TestFirecrackerUsableJailerFix(t *testing.T) {
	ok, why, fix := with(hwHost(), jailer("1.9.0", true)).FirecrackerUsable()
	if ok || !strings.Contains(why, "not the same version") || !strings.Contains(fix, "same release") {
		t.Errorf("FirecrackerUsable = %v, %q, %q", ok, why, fix)
	}
	if ok, _, _ := hwHost().FirecrackerUsable(); !ok {
		t.Error("no jailer configured: firecracker alone must be usable")
	}
}

func orAuto(s string) string {
	if s == "" {
		return "auto"
	}
	return s
}

func TestChooseDiskDriver(t *testing.T) {
	reflinkDir := func(c *Caps) { c.Reflink = Cap{OK: true}; c.StateDir.FSType = "xfs" }
	noLoop := func(c *Caps) { c.Loop = Cap{Detail: "/dev/loop-control: no such file"} }
	noXFS := func(c *Caps) { c.Tools = []Tool{{Name: "mkfs.xfs", Cap: Cap{Detail: "mkfs.xfs not found"}}} }
	noQEMUImg := func(c *Caps) { c.QEMUImg = Binary{Cap: Cap{Detail: "qemu-img not found", Fix: qemuFix}} }
	tests := []struct {
		name, driver, pool, engine string
		caps                       Caps
		want                       string
		wantPool                   bool
		wantKind                   api.Kind
		reason                     []string
	}{
		{name: "reflink state dir", caps: with(hwHost(), reflinkDir), engine: "firecracker", want: "reflink", reason: []string{"xfs with reflink"}},
		{name: "dmsnap fc", caps: hwHost(), engine: "firecracker", want: "dmsnap",
			reason: []string{"state dir /var/lib/banger is ext4 (no reflink)", "device-mapper snapshots"}},
		{name: "pool on beats dmsnap", pool: "on", caps: hwHost(), engine: "firecracker", want: "reflink", wantPool: true},
		{name: "dm but qemu → pool", caps: hwHost(), engine: "qemu", want: "reflink", wantPool: true,
			reason: []string{"firecracker only", poolReason}},
		{name: "this host", caps: thisHost(), engine: "qemu", want: "reflink", wantPool: true,
			reason: []string{"state dir /var/lib/banger is ext4 (no reflink)", "device-mapper missing (/dev/mapper/control", "using a loop-backed XFS pool with reflink clones"}},
		{name: "this host pool off", pool: "off", caps: thisHost(), engine: "qemu", want: "qcow2",
			reason: []string{`storage_pool = "off"`, "qcow2 overlays"}},
		{name: "no loop qemu", caps: with(thisHost(), noLoop), engine: "qemu", want: "qcow2", reason: []string{"loop-control"}},
		{name: "no xfs qemu no qemu-img", caps: with(with(thisHost(), noXFS), noQEMUImg), engine: "qemu", want: "copy",
			reason: []string{"mkfs.xfs missing", "qemu-img missing", "sparse copies"}},
		{name: "fc no dm no pool", pool: "off", caps: with(hwHost(), func(c *Caps) { c.DeviceMapper = thisHost().DeviceMapper }),
			engine: "firecracker", want: "copy", reason: []string{"qcow2 needs the qemu engine"}},
		{name: "forced copy", driver: "copy", caps: with(hwHost(), reflinkDir), engine: "firecracker", want: "copy"},
		{name: "forced dmsnap missing", driver: "dmsnap", caps: thisHost(), engine: "qemu", wantKind: api.KindFailedPrecondition},
		{name: "forced dmsnap ok", driver: "dmsnap", caps: hwHost(), engine: "qemu", want: "dmsnap"},
		{name: "forced reflink via pool", driver: "reflink", caps: thisHost(), engine: "qemu", want: "reflink", wantPool: true},
		{name: "forced reflink in dir", driver: "reflink", caps: with(thisHost(), reflinkDir), engine: "qemu", want: "reflink"},
		{name: "forced reflink impossible", driver: "reflink", pool: "off", caps: thisHost(), engine: "qemu", wantKind: api.KindFailedPrecondition},
		{name: "forced qcow2 fc", driver: "qcow2", caps: hwHost(), engine: "firecracker", wantKind: api.KindFailedPrecondition},
		{name: "forced qcow2 no qemu-img", driver: "qcow2", caps: with(thisHost(), noQEMUImg), engine: "qemu", wantKind: api.KindFailedPrecondition},
		{name: "forced qcow2", driver: "qcow2", caps: thisHost(), engine: "qemu", want: "qcow2"},
		{name: "unknown", driver: "zfs", caps: thisHost(), engine: "qemu", wantKind: api.KindInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.DiskDriver, cfg.StoragePool = orAuto(tt.driver), orAuto(tt.pool)
			d, pool, reason, err := ChooseDiskDriver(cfg, tt.caps, tt.engine)
			if tt.wantKind != "" {
				if err == nil || api.KindOf(err) != tt.wantKind {
					t.Fatalf("err = %v, want kind %s (got %s pool=%v)", err, tt.wantKind, d, pool)
				}
				if api.AsError(err).Fix == "" {
					t.Errorf("error without a fix: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if d != tt.want || pool != tt.wantPool {
				t.Errorf("got %s pool=%v, want %s pool=%v (%s)", d, pool, tt.want, tt.wantPool, reason)
			}
			for _, r := range tt.reason {
				if !strings.Contains(reason, r) {
					t.Errorf("reason %q does not contain %q", reason, r)
				}
			}
		})
	}
}

func TestAccel(t *testing.T) {
	if a, _ := hwHost().Accel(config.Config{Accel: "auto"}); a != "kvm" {
		t.Errorf("hw auto = %s", a)
	}
	if a, why := thisHost().Accel(config.Config{Accel: "auto"}); a != "tcg" || !strings.Contains(why, "nested PVM") {
		t.Errorf("pvm auto = %s (%s)", a, why)
	}
	if a, _ := thisHost().Accel(config.Config{Accel: "kvm"}); a != "kvm" {
		t.Errorf("forced kvm = %s", a)
	}
	if a, _ := hwHost().Accel(config.Config{Accel: "tcg"}); a != "tcg" {
		t.Errorf("forced tcg = %s", a)
	}
}
