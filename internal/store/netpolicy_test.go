package store

import (
	"context"
	"reflect"
	"testing"

	"banger/internal/api"
)

func TestNetPolicyRoundTripAndCascade(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	img := api.Image{Name: "base"}
	if err := s.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	vm := api.VM{Name: "dev", ImageID: img.ID, ImageName: "base", VCPUs: 1, MemoryMiB: 256}
	if err := s.CreateVM(ctx, &vm, testAlloc); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.NetPolicy(ctx, vm.ID); ok || err != nil {
		t.Fatalf("a new vm has a policy (ok %v, err %v)", ok, err)
	}
	for _, want := range []api.NetPolicy{{Mode: "none"}, {Mode: "allow", Allow: []string{"example.com", "10.0.0.0/8"}}} {
		if err := s.SetNetPolicy(ctx, vm.ID, want); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.NetPolicy(ctx, vm.ID)
		if !ok || err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("policy = %+v (ok %v, err %v), want %+v", got, ok, err, want)
		}
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM vm_net_policies`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d policy rows left after the vm was deleted (err %v)", n, err)
	}
}
