package doctor

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/hostcap"
	"banger/internal/store"
)

func find(t *testing.T, r api.DoctorReport, name string) api.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %q check in %+v", name, r.Checks)
	return api.Check{}
}

func tempConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	return cfg
}

var kebab = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// checkShape asserts what every report must satisfy.
func checkShape(t *testing.T, r api.DoctorReport) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range r.Checks {
		if !kebab.MatchString(c.Name) || seen[c.Name] {
			t.Errorf("bad or duplicate check name %q", c.Name)
		}
		seen[c.Name] = true
		switch c.Status {
		case api.CheckOK, api.CheckWarn, api.CheckFail:
		default:
			t.Errorf("%s: status %q", c.Name, c.Status)
		}
		if c.Detail == "" {
			t.Errorf("%s: empty detail", c.Name)
		}
		if c.Status != api.CheckOK && c.Fix == "" {
			t.Errorf("%s is %s without a fix: %s", c.Name, c.Status, c.Detail)
		}
	}
}

// TestIntegrationRun runs the doctor on this machine.
func TestIntegrationRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (/dev/kvm, loop, nft): run the tests as root")
	}
	cfg := tempConfig(t)
	r := Run(context.Background(), cfg)
	for _, c := range r.Checks {
		t.Logf("%-14s %-4s %s | %s", c.Name, c.Status, c.Detail, c.Fix)
	}
	checkShape(t, r)
	if db := find(t, r, CheckDatabase); db.Status != api.CheckOK || !strings.Contains(db.Detail, "not created yet") {
		t.Errorf("database: %+v", db)
	}
	if _, err := os.Stat(cfg.DBPath()); err == nil {
		t.Errorf("doctor created %s", cfg.DBPath())
	}
	if sd := find(t, r, CheckStateDir); sd.Status != api.CheckOK {
		t.Errorf("state-dir: %+v", sd)
	}
	for _, name := range []string{CheckPrivileges, CheckTun, CheckBridge, CheckNftables, CheckEngine, CheckDiskDriver, CheckQEMU} {
		if c := find(t, r, name); c.Status != api.CheckOK {
			t.Errorf("%s: want ok here, got %+v", name, c)
		}
	}
	if Failed(r) {
		t.Errorf("doctor failed on this machine")
	}

	kvm := find(t, r, CheckKVM)
	_, errDev := os.Stat("/dev/kvm")
	_, errPVM := os.Stat("/sys/module/kvm_pvm")
	switch {
	case errDev != nil: // no /dev/kvm: say so, not "nested PVM"
		if !strings.Contains(kvm.Detail, "no /dev/kvm") || strings.Contains(kvm.Detail, "PVM") || kvm.Fix == "" {
			t.Errorf("kvm without /dev/kvm: %+v", kvm)
		}
		if eng := find(t, r, CheckEngine); strings.Contains(eng.Detail, "PVM") {
			t.Errorf("engine without /dev/kvm mentions PVM: %+v", eng)
		}
	case errPVM == nil:
		if !strings.Contains(kvm.Detail, "nested PVM") || kvm.Fix == "" {
			t.Errorf("kvm on nested PVM: %+v", kvm)
		}
	}
	if kvm.Status == api.CheckOK {
		return // the rest are the known facts of the development machines (no usable KVM, no DM)
	}
	if kvm.Status != api.CheckWarn || !strings.Contains(kvm.Detail, "software emulation") || kvm.Fix == "" {
		t.Errorf("kvm: %+v", kvm)
	}
	eng := find(t, r, CheckEngine)
	if !strings.HasPrefix(eng.Detail, "qemu with tcg") || !strings.Contains(eng.Detail, "tsc_early_khz=") {
		t.Errorf("engine: %+v", eng)
	}
	dm := find(t, r, CheckDeviceMapper)
	if dm.Status != api.CheckWarn || !strings.Contains(dm.Detail, "reflink (loop-backed XFS pool) will be used instead") ||
		!strings.Contains(dm.Fix, "dm_snapshot") {
		t.Errorf("device-mapper: %+v", dm)
	}
	fc := find(t, r, CheckFirecracker)
	if fc.Status != api.CheckWarn || !strings.Contains(fc.Detail, "not found") || !strings.Contains(fc.Fix, "Firecracker ≥ 1.8") {
		t.Errorf("firecracker: %+v", fc)
	}
	if vs := find(t, r, CheckVhostVsock); vs.Status != api.CheckOK || !strings.Contains(vs.Detail, "virtio-serial") {
		t.Errorf("vhost-vsock: %+v", vs)
	}
	if dns := find(t, r, CheckDNS); dns.Status != api.CheckOK || !strings.Contains(dns.Fix, "resolvectl domain "+cfg.BridgeName+" ~vm") {
		t.Errorf("dns: %+v", dns)
	}
}

// hwCaps is a synthetic bare-metal host with everything installed.
func hwCaps(stateDir string) hostcap.Caps {
	ok := hostcap.Cap{OK: true, Detail: "ok"}
	return hostcap.Caps{
		Root:         ok,
		KVM:          hostcap.KVMCap{Cap: ok, Present: true, HWVirt: true},
		Firecracker:  hostcap.Binary{Cap: hostcap.Cap{OK: true, Detail: "firecracker 1.10.1"}, Version: "1.10.1"},
		QEMU:         hostcap.Binary{Cap: ok},
		QEMUImg:      hostcap.Binary{Cap: ok},
		DeviceMapper: ok, VhostVsock: ok, Loop: ok, Tun: ok, Bridge: ok, Nftables: ok, IPForward: ok,
		Tools:    []hostcap.Tool{{Name: "mkfs.ext4", Cap: ok, Required: true}, {Name: "mkfs.xfs", Cap: ok}},
		StateDir: hostcap.StateDirCap{Cap: ok, Path: stateDir, FSType: "ext4"},
		Reflink:  hostcap.Cap{Detail: "no reflink"},
		FreeDisk: hostcap.FreeDiskCap{Cap: ok, Bytes: 100 << 30},
	}
}

func TestReportSynthetic(t *testing.T) {
	cfg := tempConfig(t)
	ctx := context.Background()

	r := Report(ctx, cfg, hwCaps(cfg.StateDir))
	checkShape(t, r)
	if eng := find(t, r, CheckEngine); !strings.HasPrefix(eng.Detail, "firecracker with kvm") {
		t.Errorf("engine: %+v", eng)
	}
	if d := find(t, r, CheckDiskDriver); !strings.HasPrefix(d.Detail, "dmsnap:") {
		t.Errorf("disk-driver: %+v", d)
	}
	if fc := find(t, r, CheckFirecracker); fc.Status != api.CheckOK {
		t.Errorf("firecracker: %+v", fc)
	}
	for _, c := range r.Checks {
		if c.Name == CheckJailer {
			t.Errorf("jailer check without a configured jailer")
		}
	}

	// Nothing can run: no QEMU, no firecracker, no KVM.
	c := hwCaps(cfg.StateDir)
	c.KVM = hostcap.KVMCap{Cap: hostcap.Cap{Detail: "KVM is not usable: /dev/kvm missing", Fix: "modprobe kvm_intel"}}
	c.Firecracker = hostcap.Binary{Cap: hostcap.Cap{Detail: "firecracker not found", Fix: "install Firecracker"}}
	c.QEMU = hostcap.Binary{Cap: hostcap.Cap{Detail: "qemu-system-x86_64 not found", Fix: "apt-get install qemu-system-x86 qemu-utils"}}
	c.Tools[0].OK, c.Tools[0].Fix, c.Tools[0].Package = false, "apt-get install e2fsprogs", "e2fsprogs"
	c.Jailer = &hostcap.Binary{Cap: hostcap.Cap{Detail: "jailer not found", Fix: "install the jailer"}}
	c.FreeDisk = hostcap.FreeDiskCap{Cap: hostcap.Cap{Detail: "1 GiB free", Fix: "free space"}, Bytes: 1 << 30, Low: true}
	r = Report(ctx, cfg, c)
	checkShape(t, r)
	if !Failed(r) {
		t.Fatal("Failed = false for a host that cannot run anything")
	}
	for _, name := range []string{CheckEngine, CheckFirecracker, CheckQEMU, CheckTools, CheckJailer, CheckFreeDisk} {
		if got := find(t, r, name); got.Status != api.CheckFail {
			t.Errorf("%s: want fail, got %+v", name, got)
		}
	}
	if k := find(t, r, CheckKVM); k.Status != api.CheckWarn {
		t.Errorf("kvm: %+v", k)
	}
}

func TestFailed(t *testing.T) {
	tests := []struct {
		statuses []string
		want     bool
	}{
		{nil, false},
		{[]string{"ok", "warn"}, false},
		{[]string{"ok", "fail", "warn"}, true},
	}
	for _, tt := range tests {
		var r api.DoctorReport
		for _, s := range tt.statuses {
			r.Checks = append(r.Checks, api.Check{Name: "x", Status: s})
		}
		if got := Failed(r); got != tt.want {
			t.Errorf("Failed(%v) = %v, want %v", tt.statuses, got, tt.want)
		}
	}
}

func TestDatabaseCheck(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		setup  func(t *testing.T, path string)
		status string
		detail string
		fix    string
	}{
		{name: "missing", setup: func(*testing.T, string) {}, status: api.CheckOK, detail: "not created yet; the daemon creates it on first start"},
		{name: "empty file", setup: func(t *testing.T, p string) {
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, status: api.CheckOK, detail: "empty"},
		{name: "current", setup: makeDB, status: api.CheckOK, detail: "schema migration"},
		{name: "newer", setup: func(t *testing.T, p string) {
			makeDB(t, p)
			db, err := sql.Open("sqlite", p)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`INSERT INTO schema_migrations (id, name, applied_at) VALUES (9999, 'from the future', '2030-01-01T00:00:00Z')`); err != nil {
				t.Fatal(err)
			}
		}, status: api.CheckWarn, detail: "written by a newer banger", fix: "upgrade banger"},
		{name: "corrupt", setup: func(t *testing.T, p string) {
			if err := os.WriteFile(p, corruptBytes, 0o600); err != nil {
				t.Fatal(err)
			}
		}, status: api.CheckFail, detail: "corrupt", fix: "move"},
		{name: "foreign sqlite", setup: func(t *testing.T, p string) {
			db, err := sql.Open("sqlite", p)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`CREATE TABLE notes (x TEXT)`); err != nil {
				t.Fatal(err)
			}
		}, status: api.CheckFail, detail: "unreadable", fix: "move"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "banger.db")
			tt.setup(t, path)
			before := snapshotDir(t, dir)
			ch := databaseCheck(ctx, path)
			if ch.Name != CheckDatabase || ch.Status != tt.status || !strings.Contains(ch.Detail, tt.detail) || !strings.Contains(ch.Fix, tt.fix) {
				t.Errorf("got %+v, want status %s, detail ~%q, fix ~%q", ch, tt.status, tt.detail, tt.fix)
			}
			if ch.Status == api.CheckFail && !strings.Contains(ch.Fix, path) {
				t.Errorf("fix %q does not name %s", ch.Fix, path)
			}
			after := snapshotDir(t, dir)
			if ch.Status == api.CheckOK || ch.Status == api.CheckWarn {
				// A read-only SQLite reader of a WAL database may leave empty
				// -wal/-shm sidecars; the database itself must be untouched.
				delete(after, "banger.db-wal")
				delete(after, "banger.db-shm")
			}
			if !equalSnap(before, after) {
				t.Errorf("doctor changed the state dir:\nbefore %v\nafter  %v", keys(before), keys(after))
			}
		})
	}
}

var corruptBytes = bytes.Repeat([]byte("this is not sqlite\x00\xff"), 300)

func makeDB(t *testing.T, path string) {
	t.Helper()
	s, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// snapshotDir maps every file in dir to its bytes.
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func equalSnap(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func keys(m map[string][]byte) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"("+strconv.Itoa(len(v))+")")
	}
	return out
}

func TestSSHKeyCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("key"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, status, detail, fix string
	}{
		{name: "missing", path: filepath.Join(dir, "none"), status: api.CheckWarn, detail: "created on first use", fix: "ssh-keygen"},
		{name: "0600", path: write("good", 0o600), status: api.CheckOK, detail: "0600"},
		{name: "0644", path: write("open", 0o644), status: api.CheckWarn, detail: "0644", fix: "chmod 600"},
		{name: "dir", path: dir, status: api.CheckFail, detail: "not a regular file", fix: "move"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := sshKeyCheck(tt.path)
			if ch.Status != tt.status || !strings.Contains(ch.Detail, tt.detail) || !strings.Contains(ch.Fix, tt.fix) {
				t.Errorf("got %+v", ch)
			}
		})
	}
}

func TestDNSCheckNoBridge(t *testing.T) {
	cfg := config.Default()
	cfg.BridgeName = "bgr-doctor-none"
	ch := dnsCheck(context.Background(), cfg)
	want := "resolvectl dns bgr-doctor-none " + cfg.Gateway().String() + "; resolvectl domain bgr-doctor-none ~vm"
	if ch.Status != api.CheckOK || ch.Fix != want || !strings.Contains(ch.Detail, "not up yet") {
		t.Errorf("got %+v, want fix %q", ch, want)
	}
}
