package vm

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/api"
	"banger/internal/progress"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// Start, Edit, ExportDisks and GrowSystemDisk refuse a VM that is not
// stopped with one error text and fix.
func TestOneStoppedCheck(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v, h := f.stoppedVM(t, "s")
	out := t.TempDir()
	ops := map[string]func() error{
		"start": func() error { _, err := f.m.Start(ctx, "s", progress.Nop{}); return err },
		"edit":  func() error { _, err := f.m.Edit(ctx, "s", api.VMEditRequest{VCPUs: 2}); return err },
		"export": func() error {
			return f.m.ExportDisks(ctx, "s", filepath.Join(out, "sys"), filepath.Join(out, "work"))
		},
		"grow": func() error { return f.m.GrowSystemDisk(ctx, "s", 128<<20) },
	}
	check := func(why, msg, fix string) {
		t.Helper()
		for name, op := range ops {
			e := api.AsError(op())
			if e == nil || e.Kind != api.KindFailedPrecondition || e.Message != msg || e.FixLine() != fix {
				t.Errorf("%s of a vm that %s: %+v, want %q with fix %q", name, why, e, msg, fix)
			}
		}
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Errorf("a refused export left %v", ents)
		}
	}

	// an engine process alive under the VM's handles
	vh, err := f.eng.Start(ctx, vmmtest.Spec(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	h.Engine, h.VMM = vmm.QEMU, vh
	f.m.cacheHandles(v.ID, h)
	check("runs", `vm "s" is running`, "stop it first: banger vm stop s")

	f.eng.Kill(ctx, h.VMM)
	f.m.cacheHandles(v.ID, nil)
	for _, s := range []api.VMState{api.VMCreating, api.VMDeleting} {
		v.Runtime.State = s
		if err := f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime); err != nil {
			t.Fatal(err)
		}
		check("is "+string(s), `vm "s" is `+string(s), "wait for it, or delete it: banger vm delete s")
	}
	v.Runtime.State = api.VMStopped
	f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)
	if err := f.m.Delete(ctx, "s", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

// Start of a VM recorded as running whose engine has exited (a guest that
// powered itself off) stops it first, returning its tap, then boots it.
func TestStartOverAnExitedEngine(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v, h := f.stoppedVM(t, "x")
	h.Tap, h.VMM.PID = "tap-pool-3", 999999
	writeHandles(v.Runtime.VMDir, h)
	f.net.MarkInUse("tap-pool-3")
	v.Runtime.State = api.VMRunning
	f.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)

	// The scripted engine's guest never answers: the boot fails at readiness.
	if _, err := f.m.Start(ctx, "x", progress.Nop{}); err == nil {
		t.Fatal("start succeeded without an agent")
	}
	if f.net.taps() != 0 {
		t.Errorf("%d taps still in use: the exited engine's tap was not returned", f.net.taps())
	}
	got, _ := f.st.GetVM(ctx, "x")
	if got.Runtime.State != api.VMStopped || got.Runtime.LastError == "" {
		t.Errorf("after the failed start: state %s, reason %q", got.Runtime.State, got.Runtime.LastError)
	}
	if h, _ := readHandles(v.Runtime.VMDir); h == nil || h.Tap != "" || h.VMM.PID != 0 || len(h.SystemDisk.Files) == 0 {
		t.Errorf("handles.json after the failed start: %+v, want only the disk record", h)
	}
	if err := f.m.Delete(ctx, "x", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}
