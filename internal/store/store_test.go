package store

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "state", "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var testAlloc = Alloc{
	Subnet:   netip.MustParsePrefix("10.203.0.0/24"),
	Reserved: []netip.Addr{netip.MustParseAddr("10.203.0.1")},
}

func TestOpenCreatesPrivateFileAndPragmas(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a", "b", "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("db mode = %o, want 600", st.Mode().Perm())
	}
	// Every pooled connection carries the pragmas: hold several at once.
	var conns []interface{ Close() error }
	for i := range 3 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var mode string
		var fk, busy, syncMode int
		if err := c.QueryRowContext(ctx, `SELECT * FROM pragma_journal_mode, pragma_foreign_keys, pragma_busy_timeout, pragma_synchronous`).Scan(&mode, &fk, &busy, &syncMode); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || fk != 1 || busy != 10000 || syncMode != 1 {
			t.Errorf("conn %d: journal=%s fk=%d busy=%d sync=%d; want wal 1 10000 1", i, mode, fk, busy, syncMode)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	info, err := s.SchemaInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Current != info.Latest || len(info.Unknown) != 0 {
		t.Errorf("fresh SchemaInfo = %+v", info)
	}
}

func TestImageCRUD(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	img := api.Image{Name: "debian", Fingerprint: "sha256:ab", Managed: true, Source: "debian:bookworm",
		KernelVersion: "6.1", Dir: "/d", Kernel: "/d/bzImage", Vmlinux: "/d/vmlinux", Initrd: "/d/initrd",
		Rootfs: "/d/rootfs", WorkSeed: "/d/work", KernelSize: 1, VmlinuxSize: 2, InitrdSize: 3, RootfsSize: 4,
		WorkSeedSize: 5, Engines: []string{"firecracker", "qemu"}, Features: []string{"agent"}, Recipe: `{"a":1}`}
	if err := s.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	if img.ID == "" || img.CreatedAt.IsZero() {
		t.Fatalf("CreateImage did not set ID/CreatedAt: %+v", img)
	}
	for _, key := range []string{"debian", img.ID} {
		got, err := s.GetImage(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, img) {
			t.Errorf("GetImage(%s) =\n%+v\nwant\n%+v", key, got, img)
		}
	}
	dup := api.Image{Name: "debian"}
	if err := s.CreateImage(ctx, &dup); !api.IsAlreadyExists(err) {
		t.Errorf("duplicate name: err = %v, want AlreadyExists", err)
	}
	child := api.Image{Name: "child", Parent: "debian"}
	if err := s.CreateImage(ctx, &child); err != nil {
		t.Fatal(err)
	}
	kids, err := s.ImageChildren(ctx, "debian")
	if err != nil || !reflect.DeepEqual(kids, []string{"child"}) {
		t.Errorf("ImageChildren = %v, %v", kids, err)
	}
	list, err := s.ListImages(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "child" || list[1].Name != "debian" {
		t.Errorf("ListImages = %v, %v; want child, debian", list, err)
	}
	img.Fingerprint = "sha256:cd"
	img.Engines = nil
	if err := s.UpdateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetImage(ctx, img.ID)
	if !reflect.DeepEqual(got, img) {
		t.Errorf("after update =\n%+v\nwant\n%+v", got, img)
	}
	child.Name = "debian"
	if err := s.UpdateImage(ctx, child); !api.IsAlreadyExists(err) {
		t.Errorf("rename onto taken name: %v, want AlreadyExists", err)
	}
	if err := s.UpdateImage(ctx, api.Image{ID: "nope", Name: "x"}); !api.IsNotFound(err) {
		t.Errorf("update missing: %v, want NotFound", err)
	}
	if _, err := s.GetImage(ctx, "nope"); !api.IsNotFound(err) || !strings.Contains(err.Error(), "banger image list") {
		t.Errorf("get missing: %v, want NotFound with fix", err)
	}
	if err := s.DeleteImage(ctx, "child"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, "child"); !api.IsNotFound(err) {
		t.Errorf("delete twice: %v, want NotFound", err)
	}
}

func TestDeleteImageInUse(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	img := api.Image{Name: "base"}
	if err := s.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"web", "db"} {
		vm := api.VM{Name: n, ImageID: img.ID, ImageName: img.Name, VCPUs: 1, MemoryMiB: 256}
		if err := s.CreateVM(ctx, &vm, testAlloc); err != nil {
			t.Fatal(err)
		}
	}
	users, err := s.VMsUsingImage(ctx, img.ID)
	if err != nil || !reflect.DeepEqual(users, []string{"db", "web"}) {
		t.Errorf("VMsUsingImage = %v, %v", users, err)
	}
	err = s.DeleteImage(ctx, "base")
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "db, web") {
		t.Fatalf("DeleteImage in use = %v, want FailedPrecondition naming db, web", err)
	}
	// The foreign key holds even if a caller bypasses the check.
	if _, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, img.ID); err == nil || !isForeignKeyViolation(err) {
		t.Errorf("raw delete of used image = %v, want foreign key violation", err)
	}
	// An unknown image id is refused on create.
	vm := api.VM{Name: "ghost", ImageID: "missing", VCPUs: 1}
	if err := s.CreateVM(ctx, &vm, testAlloc); !api.IsNotFound(err) {
		t.Errorf("CreateVM with missing image = %v, want NotFound", err)
	}
}

func TestVMCRUD(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	img := api.Image{Name: "base"}
	if err := s.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	vm := api.VM{Name: "dev", ImageID: img.ID, ImageName: "base", VCPUs: 2, MemoryMiB: 1024, DiskBytes: 8 << 30}
	if err := s.CreateVM(ctx, &vm, testAlloc); err != nil {
		t.Fatal(err)
	}
	if vm.Runtime.GuestIP != "10.203.0.2" || vm.Runtime.MAC != "02:42:0a:cb:00:02" || vm.Runtime.VsockCID != 3 {
		t.Errorf("allocation = %s %s %d, want 10.203.0.2 02:42:0a:cb:00:02 3", vm.Runtime.GuestIP, vm.Runtime.MAC, vm.Runtime.VsockCID)
	}
	if vm.ID == "" || vm.CreatedAt.IsZero() || vm.UpdatedAt.IsZero() || vm.Runtime.State != api.VMCreating {
		t.Errorf("CreateVM did not fill ID/times/state: %+v", vm)
	}
	got, err := s.GetVM(ctx, "dev")
	if err != nil || !reflect.DeepEqual(got, vm) {
		t.Fatalf("GetVM =\n%+v, %v\nwant\n%+v", got, err, vm)
	}
	dup := api.VM{Name: "dev", ImageID: img.ID}
	if err := s.CreateVM(ctx, &dup, testAlloc); !api.IsAlreadyExists(err) {
		t.Errorf("duplicate vm: %v, want AlreadyExists", err)
	}

	rt := vm.Runtime
	rt.State, rt.Engine, rt.Accel = api.VMRunning, "qemu", "tcg"
	rt.APISocket, rt.AgentSocket, rt.AgentTransport = "/v/api.sock", "/v/agent.sock", "serial"
	rt.SerialLogPath, rt.EngineLogPath, rt.MetricsPath = "/v/serial.log", "/v/engine.log", "/v/metrics"
	rt.VMDir, rt.SystemDisk, rt.SystemDiskKind, rt.WorkDisk = "/v", "/v/sys", "reflink", "/v/work"
	rt.DNSName, rt.LastError = "dev.vm", "none"
	rt.StartedAt = time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	rt.StoppedAt = rt.StartedAt.Add(time.Hour)
	time.Sleep(2 * time.Microsecond)
	if err := s.UpdateVMRuntime(ctx, vm.ID, rt); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetVM(ctx, vm.ID)
	if !reflect.DeepEqual(got.Runtime, rt) || !got.UpdatedAt.After(vm.UpdatedAt) {
		t.Errorf("after UpdateVMRuntime =\n%+v\nwant\n%+v (updated %v > %v)", got.Runtime, rt, got.UpdatedAt, vm.UpdatedAt)
	}
	got.VCPUs, got.MemoryMiB = 4, 2048
	if err := s.UpdateVM(ctx, got); err != nil {
		t.Fatal(err)
	}
	again, _ := s.GetVM(ctx, "dev")
	if again.VCPUs != 4 || again.MemoryMiB != 2048 || !again.CreatedAt.Equal(vm.CreatedAt) {
		t.Errorf("after UpdateVM = %+v", again)
	}
	if err := s.UpdateVMRuntime(ctx, "nope", rt); !api.IsNotFound(err) {
		t.Errorf("UpdateVMRuntime missing = %v, want NotFound", err)
	}
	if _, err := s.GetVM(ctx, "nope"); !api.IsNotFound(err) || !strings.Contains(err.Error(), "banger vm list") {
		t.Errorf("GetVM missing = %v, want NotFound with fix banger vm list", err)
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, vm.ID); !api.IsNotFound(err) {
		t.Errorf("DeleteVM twice = %v, want NotFound", err)
	}
	if list, err := s.ListVMs(ctx); err != nil || len(list) != 0 {
		t.Errorf("ListVMs after delete = %v, %v", list, err)
	}
}

func TestCreateVMAllocation(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		alloc   Alloc
		n       int
		wantIPs []string
		wantCID []uint32
		fullErr bool // the last create fails with Unavailable
	}{
		{"gateway reserved", testAlloc, 3, []string{"10.203.0.2", "10.203.0.3", "10.203.0.4"}, []uint32{3, 4, 5}, false},
		{"nothing reserved, min cid", Alloc{Subnet: netip.MustParsePrefix("10.1.0.0/24"), MinCID: 100}, 2,
			[]string{"10.1.0.1", "10.1.0.2"}, []uint32{100, 101}, false},
		{"/29 fills up", Alloc{Subnet: netip.MustParsePrefix("10.2.0.8/29"), Reserved: []netip.Addr{netip.MustParseAddr("10.2.0.9")}}, 6,
			[]string{"10.2.0.10", "10.2.0.11", "10.2.0.12", "10.2.0.13", "10.2.0.14"}, []uint32{3, 4, 5, 6, 7}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			var ips []string
			var cids []uint32
			for i := range tt.n {
				vm := api.VM{Name: fmt.Sprintf("vm%d", i)}
				err := s.CreateVM(ctx, &vm, tt.alloc)
				if tt.fullErr && i == tt.n-1 {
					if !api.IsUnavailable(err) || !strings.Contains(err.Error(), "is full") {
						t.Fatalf("create in full subnet = %v, want Unavailable 'is full'", err)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				ips = append(ips, vm.Runtime.GuestIP)
				cids = append(cids, vm.Runtime.VsockCID)
			}
			if !reflect.DeepEqual(ips, tt.wantIPs) || !reflect.DeepEqual(cids, tt.wantCID) {
				t.Errorf("got ips %v cids %v, want %v %v", ips, cids, tt.wantIPs, tt.wantCID)
			}
		})
	}
}

func TestCreateVMReusesFreedSlots(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var vms []api.VM
	for i := range 3 {
		vm := api.VM{Name: fmt.Sprintf("vm%d", i)}
		if err := s.CreateVM(ctx, &vm, testAlloc); err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm)
	}
	if err := s.DeleteVM(ctx, vms[1].ID); err != nil {
		t.Fatal(err)
	}
	vm := api.VM{Name: "again"}
	if err := s.CreateVM(ctx, &vm, testAlloc); err != nil {
		t.Fatal(err)
	}
	if vm.Runtime.GuestIP != vms[1].Runtime.GuestIP || vm.Runtime.VsockCID != vms[1].Runtime.VsockCID {
		t.Errorf("new vm got %s/%d, want the freed %s/%d", vm.Runtime.GuestIP, vm.Runtime.VsockCID,
			vms[1].Runtime.GuestIP, vms[1].Runtime.VsockCID)
	}
}

func TestCreateVMConcurrent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A second Store on the same file stands in for a second process: the
	// write mutex does not cover it, so only SQLite's locking and the busy
	// timeout keep the two apart.
	other, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	const n = 32
	var wg sync.WaitGroup
	errs := make([]error, n)
	vms := make([]api.VM, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%4 == 0 {
				st = other
			}
			vms[i] = api.VM{Name: fmt.Sprintf("vm-%02d", i)}
			errs[i] = st.CreateVM(ctx, &vms[i], testAlloc)
			if errs[i] == nil {
				_, errs[i] = st.ListVMs(ctx) // readers run alongside writers
			}
		}()
	}
	wg.Wait()
	ips, macs, cids := map[string]bool{}, map[string]bool{}, map[uint32]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("goroutine %d: %v", i, err)
		}
		ips[vms[i].Runtime.GuestIP] = true
		macs[vms[i].Runtime.MAC] = true
		cids[vms[i].Runtime.VsockCID] = true
	}
	if len(ips) != n || len(macs) != n || len(cids) != n {
		t.Errorf("unique ips/macs/cids = %d/%d/%d, want %d each", len(ips), len(macs), len(cids), n)
	}
	list, err := s.ListVMs(ctx)
	if err != nil || len(list) != n {
		t.Errorf("ListVMs = %d vms, %v; want %d", len(list), err, n)
	}
}

func TestMACForIP(t *testing.T) {
	tests := []struct{ ip, mac string }{
		{"10.203.0.2", "02:42:0a:cb:00:02"},
		{"192.168.255.254", "02:42:c0:a8:ff:fe"},
	}
	for _, tt := range tests {
		if got := MACForIP(netip.MustParseAddr(tt.ip)); got != tt.mac {
			t.Errorf("MACForIP(%s) = %s, want %s", tt.ip, got, tt.mac)
		}
	}
}

func TestVMLifetimeRoundTripAndCascade(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	vm := api.VM{Name: "life", VCPUs: 1, MemoryMiB: 256}
	if err := s.CreateVM(ctx, &vm, testAlloc); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "life")
	if err != nil || got.Lifetime != nil {
		t.Fatalf("fresh vm: lifetime %+v, %v", got.Lifetime, err)
	}
	want := api.VMLifetime{ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), TTLAction: api.TTLStop,
		IdleStop: 90 * time.Second, Run: true}
	if err := s.SetVMLifetime(ctx, vm.ID, want); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetVM(ctx, "life")
	if err != nil || got.Lifetime == nil || *got.Lifetime != want {
		t.Fatalf("GetVM lifetime = %+v, %v; want %+v", got.Lifetime, err, want)
	}
	list, err := s.ListVMs(ctx)
	if err != nil || len(list) != 1 || list[0].Lifetime == nil || *list[0].Lifetime != want {
		t.Fatalf("ListVMs = %+v, %v", list, err)
	}
	if err := s.SetVMLifetime(ctx, vm.ID, api.VMLifetime{}); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.GetVM(ctx, "life"); got.Lifetime != nil {
		t.Fatalf("cleared lifetime still there: %+v", got.Lifetime)
	}
	if err := s.SetVMLifetime(ctx, vm.ID, want); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM vm_lifetimes`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("lifetime rows after delete: %d %v", n, err)
	}
	if err := s.SetVMLifetime(ctx, "nope", want); !api.IsNotFound(err) {
		t.Fatalf("missing vm: %v", err)
	}
}
