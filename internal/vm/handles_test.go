package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/disk/disktest"
	"banger/internal/progress"
)

// A VM made by the banger before disk state was opaque has a handles.json
// whose system disk carries dmsnap's loops and dm names beside the common
// fields. Reconcile still tears that state down through the driver (which
// gets the old fields as its State), and rewrites handles.json without it.
func TestReconcileOldHandlesFile(t *testing.T) {
	for _, state := range []api.VMState{api.VMRunning, api.VMStopped} {
		t.Run(string(state), func(t *testing.T) {
			f := newFixture(t)
			fake := &disktest.Fake{}
			f.m.disk = fake
			ctx := context.Background()
			v, _ := f.stoppedVM(t, "old")
			fixture, err := os.ReadFile("testdata/handles-before-disk-state.json")
			if err != nil {
				t.Fatal(err)
			}
			fixture = bytes.ReplaceAll(fixture, []byte("VMDIR"), []byte(v.Runtime.VMDir))
			if err := os.WriteFile(filepath.Join(v.Runtime.VMDir, handlesFileName), fixture, 0o600); err != nil {
				t.Fatal(err)
			}
			f.net.MarkInUse("tap-pool-7")
			v.Runtime.State = state
			if err := f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime); err != nil {
				t.Fatal(err)
			}
			f.m.cacheHandles(v.ID, nil)
			before := len(fake.DetachedRecords())

			if err := f.m.Reconcile(ctx, nil); err != nil {
				t.Fatal(err)
			}
			got, _ := f.st.GetVM(ctx, "old")
			if got.Runtime.State != api.VMStopped {
				t.Errorf("state after reconcile = %s, want stopped", got.Runtime.State)
			}
			recs := fake.DetachedRecords()[before:]
			if len(recs) != 1 {
				t.Fatalf("driver Detach called %d times, want once", len(recs))
			}
			var st struct {
				Loops  []string `json:"loops"`
				DMName string   `json:"dm_name"`
			}
			if err := json.Unmarshal(recs[0].State, &st); err != nil || st.DMName != "banger-old-1a2b3c4d" ||
				!slices.Equal(st.Loops, []string{"/dev/loop6", "/dev/loop7"}) {
				t.Errorf("the driver got State %s (%v), want the old loops and dm name", recs[0].State, err)
			}
			if f.net.taps() != 0 {
				t.Error("reconcile kept the old tap")
			}
			after, err := os.ReadFile(filepath.Join(v.Runtime.VMDir, handlesFileName))
			if err != nil {
				t.Fatal(err)
			}
			for _, gone := range []string{"loops", "dm_name", "dm_device", "state", "tap-pool-7"} {
				if bytes.Contains(after, []byte(gone)) {
					t.Errorf("handles.json after reconcile still has %q:\n%s", gone, after)
				}
			}
			h, err := ParseHandles(after)
			if err != nil || len(h.SystemDisk.Files) != 2 || h.SystemDisk.Driver != "dmsnap" {
				t.Errorf("handles.json after reconcile lost the disk record: %+v %v", h, err)
			}
			if err := f.m.Delete(ctx, "old", progress.Nop{}); err != nil {
				t.Fatal(err)
			}
			f.assertEmpty(t)
		})
	}
}

// The API view of handles carries no disk driver state.
func TestHandlesAPIHasNoDiskState(t *testing.T) {
	h, err := ParseHandles([]byte(`{"engine":"qemu","vmm":{"pid":5},"tap":"t","system_disk":{"driver":"dmsnap","loops":["/dev/loop1"],"dm_name":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(h.API())
	for _, gone := range []string{"loop", "dm_"} {
		if bytes.Contains(b, []byte(gone)) {
			t.Errorf("api handles %s carry %q", b, gone)
		}
	}
}

// The per-VM lock map holds only names someone holds or waits for: after
// many names and contended locking it is empty again.
func TestVMLocksDoNotGrow(t *testing.T) {
	f := newFixture(t)
	m := f.m
	var wg sync.WaitGroup
	counts := map[string]int{} // guarded by countsMu
	var countsMu sync.Mutex
	for i := range 2000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("vm-%d", i%50)
			unlock := m.lockVM(name)
			countsMu.Lock()
			counts[name]++
			countsMu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if len(counts) != 50 {
		t.Fatalf("%d names locked, want 50", len(counts))
	}
	ctx := context.Background()
	for i := range 3 {
		name := fmt.Sprintf("made-%d", i)
		if _, err := m.Create(ctx, api.VMCreateRequest{Name: name, NoStart: true}, progress.Nop{}); err != nil {
			t.Fatal(err)
		}
		if err := m.Delete(ctx, name, progress.Nop{}); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	n := len(m.vmLocks)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("vmLocks holds %d entries after every lock was released, want 0", n)
	}
	// exclusion still holds while entries come and go
	unlock := m.lockVM("x")
	got := make(chan struct{})
	go func() { u := m.lockVM("x"); close(got); u() }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-got:
		t.Fatal("a second lockVM of a held name did not wait")
	default:
	}
	unlock()
	<-got
}
