package firecracker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/golden"
	"banger/internal/vmm"
)

// childSpec is a fork's spec: its own name, dir, sockets, tap, uid and
// copies of the parent's disks.
func childSpec(t *testing.T, parent vmm.Spec, name, tap string, uid int) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	c := parent
	c.Name, c.VMDir, c.Tap, c.MAC, c.UID, c.GID, c.VsockCID = name, dir, tap, "06:00:ac:1e:00:09", uid, uid, parent.VsockCID+1
	c.APISocket, c.AgentSocket = filepath.Join(dir, "fc.sock"), filepath.Join(dir, "agent.sock")
	c.SerialLog, c.EngineLog, c.MetricsPath = filepath.Join(dir, "serial.log"), filepath.Join(dir, "firecracker.log"), filepath.Join(dir, "metrics.json")
	c.Disks = nil
	for _, d := range parent.Disks {
		b, err := os.ReadFile(d.Path)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, d.ID+".ext4")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		d.Path = p
		c.Disks = append(c.Disks, d)
	}
	return c
}

// health asks the guest's agent behind sock.
func health(t *testing.T, sock string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := agent.DialHybridVsock(ctx, sock, vmm.AgentPort)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Health(ctx)
	return err
}

// waitAgent waits until the agent behind sock answers.
func waitAgent(t *testing.T, sock string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for health(t, sock) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("agent on %s never answered: %v", sock, health(t, sock))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

// snapshotParent pauses a running parent, saves it into dir, checks what
// Save describes and resumes the parent.
func snapshotParent(t *testing.T, e *Engine, spec vmm.Spec, h vmm.Handles, dir string) vmm.Snapshot {
	t.Helper()
	ctx := context.Background()
	if err := e.Pause(ctx, h); err != nil {
		t.Fatal(err)
	}
	if st, err := e.State(ctx, h); err != nil || st != vmm.StatePaused {
		t.Fatalf("State after Pause = %q, %v", st, err)
	}
	t0 := time.Now()
	snap, err := e.Save(ctx, h, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Save of a %d MiB guest: %v", spec.MemoryMiB, time.Since(t0))
	if snap.Engine != vmm.Firecracker || snap.Version != "fake" || snap.VCPUs != spec.VCPUs || snap.MemoryMiB != spec.MemoryMiB ||
		snap.MemorySize != int64(spec.MemoryMiB)<<20 || snap.StateSize == 0 {
		t.Errorf("snapshot = %+v", snap)
	}
	for path, want := range map[string]struct {
		mode os.FileMode
		sum  string
		size int64
	}{snap.State: {0o400, snap.StateSHA256, snap.StateSize}, snap.Memory: {0o444, snap.MemorySHA256, snap.MemorySize}} {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil || filepath.Dir(path) != dir {
			t.Fatalf("%s: %v (not in %s)", path, err, dir)
		}
		if st.Uid != 0 || st.Gid != 0 || os.FileMode(st.Mode&0o7777) != want.mode || st.Nlink != 1 || st.Size != want.size {
			t.Errorf("%s: %d:%d %o nlink %d size %d, want root's %o, one link, %d bytes", path, st.Uid, st.Gid, st.Mode&0o7777, st.Nlink, st.Size, want.mode, want.size)
		}
		if got := sha(t, path); got != want.sum {
			t.Errorf("%s: sha256 %s, Save said %s", path, got, want.sum)
		}
	}
	if err := e.Resume(ctx, h); err != nil {
		t.Fatal(err)
	}
	if st, err := e.State(ctx, h); err != nil || st != vmm.StateRunning {
		t.Errorf("parent State after Resume = %q, %v", st, err)
	}
	if err := health(t, h.AgentSocket); err != nil {
		t.Errorf("parent's agent after Resume: %v", err)
	}
	return snap
}

// restoreChild restores child from snap and checks it runs and answers.
func restoreChild(t *testing.T, e *Engine, child vmm.Spec, snap vmm.Snapshot) vmm.Handles {
	t.Helper()
	t0 := time.Now()
	ch, err := e.Restore(context.Background(), child, snap)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Restore: %v", time.Since(t0))
	t.Cleanup(func() { _ = e.Kill(context.Background(), ch) })
	if st, err := e.State(context.Background(), ch); err != nil || st != vmm.StateRunning {
		t.Errorf("child State = %q, %v", st, err)
	}
	if ch.AgentSocket == "" || health(t, ch.AgentSocket) != nil {
		t.Errorf("child's agent on %s does not answer: %v", ch.AgentSocket, health(t, ch.AgentSocket))
	}
	return ch
}

// The whole sequence unjailed: boot → pause → save → resume the parent →
// restore a child with its own tap, sockets and disks → both run. Every
// request was validated against the API spec (a 400 fails the step) and
// is in the golden log: the child gets no machine configuration, only
// PUT /snapshot/load.
func TestSnapshotForkUnjailed(t *testing.T) {
	e, reqLog := fakeEngine(t)
	spec := fakeSpec(t)
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Kill(context.Background(), h) })
	waitAgent(t, h.AgentSocket)
	dir := t.TempDir()
	snap := snapshotParent(t, e, spec, h, dir)
	child := childSpec(t, spec, "fc2", "bgtap2", testUID+1)
	ch := restoreChild(t, e, child, snap)
	if target, err := os.Readlink(filepath.Join(child.VMDir, "fc-drive-1")); err != nil || target != child.Disks[1].Path {
		t.Errorf("child's work drive link = %q, %v; want its own disk", target, err)
	}
	// The child snapshots again, and is restored again (a fork of a fork).
	snap2 := snapshotParent(t, e, child, ch, t.TempDir())
	grandchild := childSpec(t, child, "fc3", "bgtap3", testUID+2)
	gh := restoreChild(t, e, grandchild, snap2)
	for _, hh := range []vmm.Handles{gh, ch, h} {
		if err := e.Kill(context.Background(), hh); err != nil {
			t.Fatal(err)
		}
		checkGone(t, e, hh)
	}
	for _, d := range []string{spec.VMDir, child.VMDir, grandchild.VMDir} {
		if m, _ := filepath.Glob(filepath.Join(d, "fc-drive-*")); len(m) != 0 {
			t.Errorf("drive links left after Kill: %v", m)
		}
	}
	log := requestLog(t, reqLog, spec.VMDir)
	for from, to := range map[string]string{child.VMDir: "$CHILD", grandchild.VMDir: "$GRANDCHILD", dir: "$SNAP", filepath.Dir(snap2.State): "$SNAP2"} {
		log = strings.ReplaceAll(log, from, to)
	}
	golden.Check(t, "testdata/snapshot-fork.golden", log)
}

// Save refuses a running guest and writes nothing.
func TestSaveRefusesARunningGuest(t *testing.T) {
	e, _, h := startFake(t)
	dir := t.TempDir()
	_, err := e.Save(context.Background(), h, dir)
	if !api.IsFailedPrecondition(err) || api.AsError(err).Fix == "" {
		t.Fatalf("Save of a running guest = %v, want FailedPrecondition with a fix", err)
	}
	t.Logf("refused: %v", err)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Save left %d files", len(ents))
	}
}

// Restore refuses what it cannot restore, before or after Firecracker
// starts, and leaves no process, socket or drive link.
func TestRestoreRefusals(t *testing.T) {
	e, _ := fakeEngine(t)
	spec := fakeSpec(t)
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Kill(context.Background(), h) })
	waitAgent(t, h.AgentSocket)
	good := snapshotParent(t, e, spec, h, t.TempDir())
	copyTo := func(t *testing.T, src string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), filepath.Base(src))
		os.WriteFile(p, b, 0o400)
		return p
	}
	tests := []struct {
		name         string
		edit         func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec)
		precondition bool // FailedPrecondition with a fix
		want         string
	}{
		{"other engine", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) { s.Engine = vmm.QEMU }, true, "qemu engine"},
		{"other version", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) { s.Version = "1.15.0" }, true, "Firecracker 1.15.0"},
		{"other shape", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) { c.MemoryMiB = 1024 }, true, "512 MiB"},
		{"other disks", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) { c.Disks = c.Disks[:1] }, true, "disks [root work]"},
		{"jailed snapshot", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) { s.Extra = map[string]string{xJailed: "true"} }, true, "jailed=true"},
		{"missing memory", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) { s.Memory += ".gone" }, true, "no such file"},
		{"truncated state", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) {
			s.State = copyTo(t, s.State)
			os.Truncate(s.State, s.StateSize-5)
		}, true, "truncated or changed"},
		{"changed memory", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) {
			s.Memory = copyTo(t, s.Memory)
			f, _ := os.OpenFile(s.Memory, os.O_WRONLY, 0)
			f.WriteAt([]byte("evil"), 4096)
			f.Close()
		}, true, "changed since it was made"},
		{"garbage state, consistent record", func(t *testing.T, s *vmm.Snapshot, c *vmm.Spec) {
			s.State = filepath.Join(t.TempDir(), "garbage")
			os.WriteFile(s.State, []byte("garbage, not a snapshot"), 0o400)
			s.StateSize, s.StateSHA256 = 23, sha(t, s.State)
		}, true, "Magic value"}, // refused by Firecracker itself
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := good
			snap.Extra = map[string]string{}
			for k, v := range good.Extra {
				snap.Extra[k] = v
			}
			child := childSpec(t, spec, "fc"+itoa(10+i), "bgtap9", testUID+1)
			tt.edit(t, &snap, &child)
			_, err := e.Restore(context.Background(), child, snap)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore = %v, want an error mentioning %q", err, tt.want)
			}
			if tt.precondition && (!api.IsFailedPrecondition(err) || api.AsError(err).Fix == "") {
				t.Errorf("kind %s, fix %q: want FailedPrecondition with a fix", api.KindOf(err), api.AsError(err).Fix)
			}
			t.Logf("refused: %v", err)
			checkNoProcess(t, child.APISocket)
			for _, p := range []string{child.APISocket, child.AgentSocket} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s left behind", p)
				}
			}
			if m, _ := filepath.Glob(filepath.Join(child.VMDir, "fc-drive-*")); len(m) != 0 {
				t.Errorf("drive links left: %v", m)
			}
		})
	}
	// The good snapshot still restores, its memory hash now remembered;
	// a later change to the file is still caught (its ctime moved).
	child := childSpec(t, spec, "fc30", "bgtap9", testUID+1)
	ch := restoreChild(t, e, child, good)
	if err := e.Kill(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(good.Memory, os.O_WRONLY, 0)
	f.WriteAt([]byte{1}, 1<<20)
	f.Close()
	if _, err := e.Restore(context.Background(), childSpec(t, spec, "fc31", "bgtap9", testUID+1), good); !api.IsFailedPrecondition(err) {
		t.Errorf("Restore after the memory changed = %v, want FailedPrecondition", err)
	}
}

// A restore hashes the memory file once per file identity: a fresh engine
// (a daemon restart) hashes it at its first restore, not at the next.
func TestRestoreHashesMemoryOncePerFile(t *testing.T) {
	e, _ := fakeEngine(t)
	spec := fakeSpec(t)
	h, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Kill(context.Background(), h) })
	waitAgent(t, h.AgentSocket)
	snap := snapshotParent(t, e, spec, h, t.TempDir())
	fresh := New(e.cfg)
	for i, what := range []string{"first restore (memory hashed)", "second restore (hash remembered)"} {
		t0 := time.Now()
		ch := restoreChild(t, fresh, childSpec(t, spec, "fc"+itoa(40+i), "bgtap9", testUID+1), snap)
		t.Logf("%s: %v", what, time.Since(t0))
		if err := fresh.Kill(context.Background(), ch); err != nil {
			t.Fatal(err)
		}
		fresh.memMu.Lock()
		_, ok := fresh.memSums[snap.Memory]
		fresh.memMu.Unlock()
		if !ok {
			t.Errorf("%s: the memory hash was not remembered", what)
		}
	}
	fresh.Forget(snap)
	if _, ok := fresh.memSums[snap.Memory]; ok {
		t.Error("Forget kept the memory hash")
	}
}
