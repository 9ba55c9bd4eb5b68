package store

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"banger/internal/api"
)

func TestSnapshotsAndOrigins(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	img := api.Image{Name: "base"}
	if err := s.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	row := SnapshotRow{Snapshot: api.Snapshot{ID: "s1", Name: "snap", Kind: api.SnapshotVM, ImageID: img.ID, ImageName: "base",
		Engine: "qemu", VCPUs: 1, MemoryMiB: 512}, State: SnapshotCreating, Record: json.RawMessage(`{"k":1}`)}
	if err := s.CreateSnapshot(ctx, &row); err != nil {
		t.Fatal(err)
	}
	dup := row
	dup.ID = "s2"
	if err := s.CreateSnapshot(ctx, &dup); !api.IsAlreadyExists(err) {
		t.Fatalf("duplicate name: %v", err)
	}
	row.State = SnapshotReady
	row.SizeBytes = 42
	if err := s.UpdateSnapshot(ctx, row); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshot(ctx, "snap")
	if err != nil || got.State != SnapshotReady || got.SizeBytes != 42 || string(got.Record) != `{"k":1}` || got.CreatedAt.IsZero() {
		t.Fatalf("GetSnapshot = %+v, %v", got, err)
	}
	if byID, err := s.GetSnapshot(ctx, "s1"); err != nil || byID.Name != "snap" {
		t.Fatalf("by id: %+v %v", byID, err)
	}
	// Children: VMs whose origin it is; they go with their VM.
	var vms []api.VM
	for _, n := range []string{"b", "a"} {
		vm := api.VM{Name: n, ImageID: img.ID, ImageName: "base", VCPUs: 1, MemoryMiB: 256}
		if err := s.CreateVM(ctx, &vm, testAlloc); err != nil {
			t.Fatal(err)
		}
		if err := s.SetVMOrigin(ctx, vm.ID, row.ID); err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm)
	}
	if got, _ := s.GetSnapshot(ctx, "snap"); !reflect.DeepEqual(got.Children, []string{"a", "b"}) {
		t.Fatalf("children %v", got.Children)
	}
	if v, _ := s.GetVM(ctx, "a"); v.Origin != "snap" {
		t.Fatalf("origin %q", v.Origin)
	}
	if err := s.DeleteSnapshot(ctx, row.ID); !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "a, b") {
		t.Fatalf("delete with children: %v", err)
	}
	if err := s.DeleteImage(ctx, "base"); !api.IsFailedPrecondition(err) {
		t.Fatalf("delete of an image with vms and snapshots: %v", err)
	}
	for _, v := range vms {
		if err := s.DeleteVM(ctx, v.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteImage(ctx, "base"); !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "snap") {
		t.Fatalf("delete of an image with a snapshot: %v", err)
	}
	if err := s.DeleteSnapshot(ctx, row.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(ctx, "snap"); !api.IsNotFound(err) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.DeleteImage(ctx, "base"); err != nil {
		t.Fatal(err)
	}
}
