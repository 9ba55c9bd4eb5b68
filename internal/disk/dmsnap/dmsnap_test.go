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

func TestCowSizeFor(t *testing.T) {
	const c = dmsnap.ChunkBytes
	tests := []struct {
		base int64
		want int64 // in chunks
	}{
		{c, 1 + 1 + 0 + 1},               // header, 1 data chunk, area 0's metadata
		{c + 1, 1 + 2 + 0 + 1},           // a partial chunk is a whole chunk
		{255 * c, 1 + 255 + 0 + 1},       // area 0 not full
		{256 * c, 1 + 256 + 1 + 1},       // area 0 full: area 1's metadata is zeroed at once
		{257 * c, 1 + 257 + 1 + 1},       // one data chunk in area 1
		{1 << 30, 1 + 262144 + 1024 + 1}, // 1 GiB: 1024 full areas
	}
	for _, tt := range tests {
		if got := dmsnap.CowSizeFor(tt.base); got != tt.want*c {
			t.Errorf("CowSizeFor(%d) = %d chunks, want %d", tt.base, got/c, tt.want)
		}
		if got := dmsnap.CowSizeFor(tt.base); got <= tt.base {
			t.Errorf("CowSizeFor(%d) = %d: no room for the metadata", tt.base, got)
		}
	}
	// Cross-check with the kernel's layout: the chunk a data chunk lands on
	// (and the metadata chunk zeroed after a full area) must be inside.
	for _, n := range []int64{1, 2, 255, 256, 257, 511, 512, 513, 1000, 65536} {
		size := dmsnap.CowSizeFor(n*c) / c
		last := int64(0)
		for j := int64(0); j < n; j++ {
			area, k := j/256, j%256
			last = max(last, 1+area*257+1+k)
			if k == 255 {
				last = max(last, 1+(area+1)*257) // next area's metadata, zeroed
			}
		}
		if last >= size {
			t.Errorf("%d data chunks: chunk %d is outside a COW of %d chunks", n, last, size)
		}
	}
}
