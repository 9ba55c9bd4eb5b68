package vm

import (
	"context"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/progress"
)

// A create with NoWait returns after the engine stage with the VM
// "starting"; when the agent never answers the background boot marks it
// failed with the reason and releases its engine and tap.
func TestCreateNoWaitFailsInTheBackground(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rec := &progress.Recorder{}
	v, err := f.m.Create(ctx, api.VMCreateRequest{Name: "bg", NoWait: true}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if v.Runtime.State != api.VMStarting {
		t.Fatalf("state after a no-wait create = %s, want starting", v.Runtime.State)
	}
	if got := rec.Names(); got[len(got)-1] != StageEngine {
		t.Fatalf("stages = %v, want them to end at %q", got, StageEngine)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := f.m.Detail(ctx, "bg")
		if err != nil {
			t.Fatal(err)
		}
		if d.VM.Runtime.State == api.VMFailed {
			if !strings.Contains(d.VM.Runtime.LastError, "did not answer") {
				t.Errorf("failed without the reason: %q", d.VM.Runtime.LastError)
			}
			if d.Alive || f.net.taps() != 0 {
				t.Errorf("a failed background boot kept its engine (%v) or tap (%d)", d.Alive, f.net.taps())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s after the ready timeout", d.VM.Runtime.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := f.m.Delete(ctx, "bg", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

// Delete while a no-wait VM is still booting cancels the background boot
// (which must not hold the VM's lock) and removes everything.
func TestDeleteCancelsBackgroundBoot(t *testing.T) {
	f := newFixture(t)
	f.m.cfg.ReadyTimeout = config.Duration(time.Hour)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "cyc", NoWait: true}, progress.Nop{}); err != nil {
			t.Fatalf("cycle %d: create: %v", i, err)
		}
		done := make(chan error, 1)
		go func() { done <- f.m.Delete(ctx, "cyc", progress.Nop{}) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("cycle %d: delete: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cycle %d: delete blocked behind the background boot", i)
		}
		f.assertEmpty(t)
		if len(f.m.ready) != 0 {
			t.Fatalf("cycle %d: background boot still registered", i)
		}
	}
	if n := len(f.m.bootSem); n != 0 {
		t.Fatalf("%d boot slots still held", n)
	}
}
