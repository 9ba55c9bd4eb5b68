package vm

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/progress"
	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// snapFake is vmmtest.Fake with snapshots: Pause/Resume are recorded, Save
// writes a state file, Restore starts a fake guest (whose agent, like
// Fake's, never answers) or fails with restoreErr.
type snapFake struct {
	*vmmtest.Fake
	mu         sync.Mutex
	paused     map[int]bool
	restoreErr error
	saveErr    error
}

func (s *snapFake) Pause(_ context.Context, h vmm.Handles) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused[h.PID] = true
	return nil
}

func (s *snapFake) Resume(_ context.Context, h vmm.Handles) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.paused, h.PID)
	return nil
}

func (s *snapFake) isPaused(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused[pid]
}

func (s *snapFake) State(ctx context.Context, h vmm.Handles) (vmm.State, error) {
	if s.isPaused(h.PID) {
		return vmm.StatePaused, nil
	}
	return s.Fake.State(ctx, h)
}

func (s *snapFake) Save(_ context.Context, h vmm.Handles, dir string) (vmm.Snapshot, error) {
	if s.saveErr != nil {
		return vmm.Snapshot{}, s.saveErr
	}
	p := filepath.Join(dir, "state")
	if err := os.WriteFile(p, []byte("device state"), 0o400); err != nil {
		return vmm.Snapshot{}, err
	}
	return vmm.Snapshot{Engine: vmm.QEMU, Version: s.Caps.Version, State: p, StateSize: 12}, nil
}

func (s *snapFake) Restore(ctx context.Context, spec vmm.Spec, snap vmm.Snapshot) (vmm.Handles, error) {
	if s.restoreErr != nil {
		return vmm.Handles{}, s.restoreErr
	}
	return s.Fake.Start(ctx, spec)
}

func (s *snapFake) Forget(vmm.Snapshot) {}

func newSnapFixture(t *testing.T) (*fixture, *snapFake) {
	f := newFixture(t)
	f.eng.Caps.Snapshots = true
	f.eng.Caps.Version = "7.2.0"
	sf := &snapFake{Fake: f.eng, paused: map[int]bool{}}
	f.m.engines[vmm.QEMU] = sf
	return f, sf
}

// runningVM makes a VM whose fake engine runs, marked running (the fake
// guest's agent never answers, so Create cannot get there).
func (f *fixture) runningVM(t *testing.T, name string) api.VM {
	t.Helper()
	ctx := context.Background()
	v, h := f.stoppedVM(t, name)
	img, err := f.st.GetImage(ctx, v.ImageID)
	if err != nil {
		t.Fatal(err)
	}
	tap, _, _ := f.net.AcquireTap(ctx)
	h.Tap = tap
	vh, err := f.eng.Start(ctx, f.m.spec(v, img, h))
	if err != nil {
		t.Fatal(err)
	}
	h.VMM, h.Engine = vh, vmm.QEMU
	if err := writeHandles(v.Runtime.VMDir, h); err != nil {
		t.Fatal(err)
	}
	f.m.cacheHandles(v.ID, h)
	if err := f.m.setState(ctx, &v, api.VMRunning, ""); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSnapshotRefusesAStoppedVM(t *testing.T) {
	f, _ := newSnapFixture(t)
	f.stoppedVM(t, "a")
	_, err := f.m.CreateSnapshot(context.Background(), api.SnapshotCreateRequest{VM: "a"}, progress.Nop{})
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "only a running vm") {
		t.Fatalf("snapshot of a stopped vm: %v", err)
	}
	if rows, _ := f.st.ListSnapshots(context.Background()); len(rows) != 0 {
		t.Fatalf("rows left: %v", rows)
	}
}

func TestSnapshotTakesFilesAndResumes(t *testing.T) {
	f, sf := newSnapFixture(t)
	ctx := context.Background()
	v := f.runningVM(t, "p")
	rec := &progress.Recorder{}
	s, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "p", Name: "s1"}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rec.Names(), ","); got != "pause,save state,capture disks,resume" {
		t.Fatalf("stages %s", got)
	}
	h, _ := f.m.vmAlive(v)
	if sf.isPaused(h.VMM.PID) {
		t.Fatal("the parent was left paused")
	}
	if s.Name != "s1" || s.VMName != "p" || s.Engine != vmm.QEMU || s.EngineVersion != "7.2.0" || len(s.Files) != 3 {
		t.Fatalf("snapshot record %+v", s)
	}
	for _, fl := range s.Files {
		if _, err := os.Stat(fl.Path); err != nil || !strings.HasPrefix(fl.Path, s.Dir) {
			t.Errorf("file %+v: %v", fl, err)
		}
	}
	// Names clash.
	if _, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "p", Name: "s1"}, progress.Nop{}); !api.IsAlreadyExists(err) {
		t.Fatalf("second s1: %v", err)
	}
	if err := f.m.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot dir left: %v", err)
	}
}

func TestSnapshotFailureResumesAndLeavesNothing(t *testing.T) {
	f, sf := newSnapFixture(t)
	ctx := context.Background()
	v := f.runningVM(t, "p")
	sf.saveErr = errors.New("migration failed")
	if _, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "p"}, progress.Nop{}); err == nil {
		t.Fatal("snapshot succeeded with a failing save")
	}
	h, alive := f.m.vmAlive(v)
	if !alive || sf.isPaused(h.VMM.PID) {
		t.Fatal("the parent is not running on")
	}
	if rows, _ := f.st.ListSnapshots(ctx); len(rows) != 0 {
		t.Fatalf("rows left: %v", rows)
	}
	if ents, _ := os.ReadDir(f.m.snapsDir); len(ents) != 0 {
		t.Fatalf("snapshot dirs left: %v", ents)
	}
}

// A child whose restore fails, and one whose agent never answers (so its
// identity cannot be reset), are deleted with the reason; the parent and the
// snapshot stay.
func TestForkFailuresLeaveNoChild(t *testing.T) {
	f, sf := newSnapFixture(t)
	ctx := context.Background()
	f.runningVM(t, "p")
	if _, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "p", Name: "s"}, progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	sf.restoreErr = api.FailedPrecondition("snapshot memory file changed")
	_, err := f.m.Fork(ctx, api.VMForkRequest{Source: "s", Count: 2, Name: "c"}, progress.Nop{})
	if err == nil || !strings.Contains(err.Error(), "memory file changed") {
		t.Fatalf("fork with a failing restore: %v", err)
	}
	sf.restoreErr = nil
	_, err = f.m.Fork(ctx, api.VMForkRequest{Source: "s", Name: "c1"}, progress.Nop{})
	if err == nil || !strings.Contains(err.Error(), "agent did not answer") {
		t.Fatalf("fork whose agent never answers: %v", err)
	}
	vms, _ := f.st.ListVMs(ctx)
	if len(vms) != 1 || vms[0].Name != "p" {
		t.Fatalf("vms left: %v", vms)
	}
	if n := f.net.taps(); n != 1 {
		t.Fatalf("%d taps in use, want the parent's only", n)
	}
	if sf.Running() != 1 {
		t.Fatalf("%d engines run, want the parent's only", sf.Running())
	}
	s, err := f.m.GetSnapshot(ctx, "s")
	if err != nil || len(s.Children) != 0 {
		t.Fatalf("snapshot after failed forks: %+v %v", s, err)
	}
}

func TestForkRefusesBadRequestsBeforeMakingAnything(t *testing.T) {
	f, _ := newSnapFixture(t)
	ctx := context.Background()
	f.runningVM(t, "p")
	for _, tc := range []struct {
		req  api.VMForkRequest
		want string
	}{
		{api.VMForkRequest{Source: "p", Count: 65}, "out of range"},
		{api.VMForkRequest{Source: "p", Count: -1}, "out of range"},
		{api.VMForkRequest{Source: "nope"}, "no snapshot or vm"},
		{api.VMForkRequest{Source: "p", Name: "p"}, "already exists"},
		{api.VMForkRequest{Source: "p", Name: "Bad_Name"}, "name"},
		{api.VMForkRequest{Source: "p", Count: 64}, "addresses"},
	} {
		if tc.want == "addresses" {
			f.m.cfg.Subnet = netip.MustParsePrefix("10.203.0.0/28") // 13 usable, 1 taken
		}
		_, err := f.m.Fork(ctx, tc.req, progress.Nop{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}
	if rows, _ := f.st.ListSnapshots(ctx); len(rows) != 0 {
		t.Fatalf("a refused fork took a snapshot: %v", rows)
	}
}

func TestDeleteSnapshotWithChildrenIsRefused(t *testing.T) {
	f, _ := newSnapFixture(t)
	ctx := context.Background()
	f.runningVM(t, "p")
	if _, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "p", Name: "s"}, progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	c, _ := f.stoppedVM(t, "child")
	row, _ := f.st.GetSnapshot(ctx, "s")
	if err := f.st.SetVMOrigin(ctx, c.ID, row.ID); err != nil {
		t.Fatal(err)
	}
	err := f.m.DeleteSnapshot(ctx, "s")
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "child") {
		t.Fatalf("delete with a child: %v", err)
	}
	if got, _ := f.st.GetVM(ctx, "child"); got.Origin != "s" {
		t.Fatalf("child's origin %q", got.Origin)
	}
	// The parent goes; the snapshot and its child stay.
	if err := f.m.Delete(ctx, "p", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.GetSnapshot(ctx, "s"); err != nil {
		t.Fatalf("snapshot after its parent's delete: %v", err)
	}
	if err := f.m.Delete(ctx, "child", progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	if err := f.m.DeleteSnapshot(ctx, "s"); err != nil {
		t.Fatalf("delete once the child is gone: %v", err)
	}
}

// A daemon that died mid-snapshot left the parent paused and a half-made
// snapshot: reconcile resumes the parent and removes the snapshot.
func TestReconcileFinishesAnInterruptedSnapshot(t *testing.T) {
	f, sf := newSnapFixture(t)
	ctx := context.Background()
	v := f.runningVM(t, "p")
	h, _ := f.m.vmAlive(v)
	row := store.SnapshotRow{Snapshot: api.Snapshot{ID: "0123", Name: "half", Kind: api.SnapshotVM, ImageID: v.ImageID},
		VMID: v.ID, State: store.SnapshotCreating}
	if err := f.st.CreateSnapshot(ctx, &row); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(f.m.snapsDir, "0123"), 0o700)
	os.MkdirAll(filepath.Join(f.m.snapsDir, "orphan"), 0o700)
	_ = sf.Pause(ctx, h.VMM)
	if err := f.m.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if sf.isPaused(h.VMM.PID) {
		t.Fatal("the parent is still paused")
	}
	if rows, _ := f.st.ListSnapshots(ctx); len(rows) != 0 {
		t.Fatalf("rows left: %v", rows)
	}
	if ents, _ := os.ReadDir(f.m.snapsDir); len(ents) != 0 {
		t.Fatalf("dirs left: %v", ents)
	}
}
