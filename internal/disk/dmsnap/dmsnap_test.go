package dmsnap_test

import (
	"os"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
	"banger/internal/disk/dmsnap"
)

// requireDM skips with the fix when device-mapper is not usable here.
func requireDM(t *testing.T) {
	t.Helper()
	disktest.RequireRoot(t)
	if info := dmsnap.New().Info(); !info.Available {
		t.Skip(info.Reason)
	}
}

func TestIntegrationConformance(t *testing.T) {
	requireDM(t)
	disktest.Run(t, func(t *testing.T, dir string) disk.Driver { return dmsnap.New() })
}

func TestIntegrationSmallCow(t *testing.T) {
	requireDM(t)
	disktest.Run(t, func(t *testing.T, dir string) disk.Driver { return &dmsnap.Driver{CowSize: 16 << 20} })
}

func TestTable(t *testing.T) {
	tests := []struct {
		size      int64
		base, cow string
		want      string
	}{
		{64 << 20, "/dev/loop3", "/dev/loop4", "0 131072 snapshot /dev/loop3 /dev/loop4 P 8"},
		{1 << 30, "/dev/loop10", "/dev/loop11", "0 2097152 snapshot /dev/loop10 /dev/loop11 P 8"},
	}
	for _, tt := range tests {
		if got := dmsnap.Table(tt.size, tt.base, tt.cow); got != tt.want {
			t.Errorf("Table(%d) = %q, want %q", tt.size, got, tt.want)
		}
	}
}

func TestName(t *testing.T) {
	a := dmsnap.Name("/var/lib/banger/vms/web-1/root.cow")
	b := dmsnap.Name("/var/lib/banger/vms/web-1/other.cow")
	c := dmsnap.Name("/var/lib/banger/vms/with space:and/colon/root.cow")
	long := dmsnap.Name("/x/" + strings.Repeat("a", 300) + "/root.cow")
	if !strings.HasPrefix(a, "banger-web-1-") {
		t.Errorf("Name = %q, want banger-web-1-<hash>", a)
	}
	if a == b {
		t.Errorf("two disks of one VM share the dm name %q", a)
	}
	if a != dmsnap.Name("/var/lib/banger/vms/web-1/root.cow") {
		t.Error("Name is not stable")
	}
	for _, n := range []string{c, long} {
		if strings.ContainsAny(n, " :/") || len(n) > 127 {
			t.Errorf("Name = %q: not a valid dm name", n)
		}
	}
}

// Without device-mapper the driver says why with the fix, and Create
// fails as Unavailable without touching anything.
func TestUnavailableWithoutDM(t *testing.T) {
	info := dmsnap.New().Info()
	if info.Available {
		t.Skip("this host has device-mapper; TestIntegrationConformance covers it")
	}
	if info.Available || info.Reason != dmsnap.MissingReason || !info.KernelState {
		t.Errorf("Info = %+v, want unavailable with %q", info, dmsnap.MissingReason)
	}
	dir := t.TempDir()
	_, err := dmsnap.New().Create(t.Context(), "/nonexistent", dir+"/disk")
	if !api.IsUnavailable(err) || !strings.Contains(err.Error(), "modprobe dm_snapshot") {
		t.Errorf("Create = %v, want Unavailable with the fix", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Create left %v", ents)
	}
}
