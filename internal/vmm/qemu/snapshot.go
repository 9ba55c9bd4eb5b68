package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/revert"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
)

// Snapshots are QEMU migrations to and from files.
//
// Save migrates a paused guest into dir/state through an fd handed over
// QMP (getfd: QEMU's sandbox forbids exec: URIs). A guest whose RAM is a
// shared file (Spec.MemoryFile) migrates with x-ignore-shared, so the
// stream holds device state only (~70 KB), and its RAM file is copied to
// dir/memory. Any other guest (anonymous RAM, or a child mapping its
// template privately) puts its RAM into the stream and Memory is empty.
//
// Restore starts QEMU with Start's arguments plus -S -incoming defer and
// the state as an inherited fd, then migrate-incoming fd:N and cont. A
// snapshot with Memory is mapped from a sealed memfd the engine loads once
// per snapshot: every child maps it private (share=off), so children share
// the pages none of them wrote, and none can write the template itself.
//
// The guest's devices come back as they were saved: virtio-net keeps the
// parent's MAC (the migration stream carries it; the child's -device mac=
// is overwritten), so the orchestrator resets it with the rest of the
// guest's identity.

// Timeouts for migrations (a full-RAM stream of a big guest takes a while).
const (
	saveTimeout    = 5 * time.Minute
	restoreTimeout = 5 * time.Minute
	migratePoll    = 5 * time.Millisecond
)

// maxBandwidth lifts QEMU's default 128 MiB/s migration limit: the guest
// is paused, the limit would only stretch the pause.
const maxBandwidth = int64(64) << 30

// stateFD is the name the state file's fd gets in QEMU (getfd).
const stateFD = "banger-state"

// Pause stops the guest's vCPUs; QEMU drains and flushes every disk before
// stop returns.
func (e *Engine) Pause(ctx context.Context, h vmm.Handles) error {
	if err := qmpDo(ctx, h.APISocket, "stop", nil); err != nil {
		return fmt.Errorf("pausing qemu pid %d: %w", h.PID, err)
	}
	return nil
}

// Resume continues a paused guest, also one whose state was just saved
// (QEMU's postmigrate state).
func (e *Engine) Resume(ctx context.Context, h vmm.Handles) error {
	if err := qmpDo(ctx, h.APISocket, "cont", nil); err != nil {
		return fmt.Errorf("resuming qemu pid %d: %w", h.PID, err)
	}
	return nil
}

// shape reads the RAM kind and machine shape Start recorded in h.
func shape(h vmm.Handles) (kind string, vcpus, mib int, err error) {
	kind = h.Extra["ram"]
	vcpus, err1 := strconv.Atoi(h.Extra["vcpus"])
	mib, err2 := strconv.Atoi(h.Extra["memory_mib"])
	if kind == "" || err1 != nil || err2 != nil || (kind == ramFile && h.Extra["memory_file"] == "") {
		return "", 0, 0, api.FailedPrecondition("qemu pid %d was started by an older banger: its handles do not record its memory layout", h.PID).
			WithFix("stop and start the VM, then snapshot it")
	}
	return kind, vcpus, mib, nil
}

// Save writes the paused guest in h into dir: dir/state, and dir/memory
// when its RAM is a shared file. Files are created new (never over
// existing ones) and removed again when Save fails.
func (e *Engine) Save(ctx context.Context, h vmm.Handles, dir string) (vmm.Snapshot, error) {
	kind, vcpus, mib, err := shape(h)
	if err != nil {
		return vmm.Snapshot{}, err
	}
	status, err := queryStatus(ctx, h.APISocket)
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("saving qemu pid %d: %w", h.PID, err)
	}
	if status != "paused" && status != "postmigrate" {
		return vmm.Snapshot{}, api.FailedPrecondition("qemu pid %d: the guest is %s, not paused", h.PID, status).
			WithFix("pause the guest (Pause) before saving it")
	}
	r := revert.New()
	defer r.Fail()
	snap := vmm.Snapshot{
		Engine: vmm.QEMU, Version: e.Info().Version, Accel: h.Accel, VCPUs: vcpus, MemoryMiB: mib,
		State: filepath.Join(dir, "state"), Extra: map[string]string{"ram": kind},
	}
	sf, err := os.OpenFile(snap.State, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("saving qemu pid %d: %w", h.PID, err)
	}
	r.Add(func() { _ = os.Remove(snap.State) })
	t0 := time.Now()
	err = migrateOut(ctx, h.APISocket, sf, kind == ramFile)
	if err == nil {
		err = sf.Sync()
	}
	sf.Close()
	if err != nil {
		return vmm.Snapshot{}, fmt.Errorf("saving qemu pid %d: %w", h.PID, err)
	}
	migrated := time.Since(t0)
	if snap.StateSize, snap.StateSHA256, err = hashFile(snap.State); err != nil {
		return vmm.Snapshot{}, err
	}
	if kind == ramFile {
		snap.Memory = filepath.Join(dir, "memory")
		r.Add(func() { _ = os.Remove(snap.Memory) })
		snap.MemorySize = int64(mib) << 20
		if snap.MemorySHA256, err = copyMemory(h.Extra["memory_file"], snap.Memory, snap.MemorySize); err != nil {
			return vmm.Snapshot{}, fmt.Errorf("saving qemu pid %d: %w", h.PID, err)
		}
	}
	r.Success()
	if snap.Memory != "" {
		// The first fork would load (and verify) the template; do it now,
		// off the pause, while the file is in the page cache.
		go e.Preload(snap)
	}
	slog.Debug("qemu snapshot saved", "pid", h.PID, "ram", kind, "migrate", migrated, "total", time.Since(t0),
		"state_bytes", snap.StateSize, "memory", snap.Memory != "")
	return snap, nil
}

// Preload loads and verifies snap's memory template now, so the first
// restore does not (the daemon preloads warm snapshots at its start). A
// failure is left for Restore to report.
func (e *Engine) Preload(snap vmm.Snapshot) {
	if snap.Memory == "" {
		return
	}
	if f, err := e.templateFor(snap); err == nil {
		f.Close()
	}
}

// migrateOut migrates the guest at sock into f and waits until it is done.
// ignoreShared keeps a shared-file RAM out of the stream; it is set either
// way (a restored child had it on for its incoming migration).
func migrateOut(ctx context.Context, sock string, f *os.File, ignoreShared bool) error {
	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	q, err := dialQMP(ctx, sock)
	if err != nil {
		return err
	}
	defer q.Close()
	steps := []struct {
		cmd  string
		args any
		f    *os.File
	}{
		{"migrate-set-capabilities", ignoreSharedCap(ignoreShared), nil},
		{"migrate-set-parameters", map[string]any{"max-bandwidth": maxBandwidth}, nil},
		{"getfd", map[string]string{"fdname": stateFD}, f},
		{"migrate", map[string]string{"uri": "fd:" + stateFD}, nil},
	}
	for _, s := range steps {
		if err := q.call(s.cmd, s.args, s.f, nil); err != nil {
			return err
		}
	}
	if err := waitMigration(ctx, q); err != nil {
		_ = q.call("migrate_cancel", nil, nil, nil)
		return err
	}
	return nil
}

func ignoreSharedCap(on bool) map[string]any {
	return map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": on}}}
}

// waitMigration polls query-migrate until the migration (outgoing or
// incoming) completed, failed or ctx ends.
func waitMigration(ctx context.Context, q *qmpConn) error {
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.call("query-migrate", nil, nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration still %q: %w", st.Status, ctx.Err())
		case <-time.After(migratePoll):
		}
	}
}

// Restore starts a guest for spec from snap and returns once it runs. It
// refuses (FailedPrecondition, nothing started) a snapshot of another
// engine, version, accel or shape, and files that are missing, truncated
// or changed. spec.MemoryFile is used only for a snapshot without Memory
// (the stream then fills it); with Memory the child maps the template.
func (e *Engine) Restore(ctx context.Context, spec vmm.Spec, snap vmm.Snapshot) (vmm.Handles, error) {
	if err := checkSpecFields(spec); err != nil {
		return vmm.Handles{}, err
	}
	if err := e.checkSnapshot(spec, snap); err != nil {
		return vmm.Handles{}, err
	}
	state, err := openVerified(snap.State, "snapshot state", snap.StateSize, snap.StateSHA256)
	if err != nil {
		return vmm.Handles{}, err
	}
	defer state.Close() // a second Close after launch's is harmless
	in := &incoming{state: snap.State}
	pre := map[string]*os.File{passState: state}
	if snap.Memory != "" {
		tf, err := e.templateFor(snap)
		if err != nil {
			return vmm.Handles{}, err
		}
		defer tf.Close()
		in.template = snap.Memory
		pre[passTemplate] = tf
	}
	return e.launch(ctx, spec, in, pre)
}

// checkSnapshot refuses a snapshot this engine cannot restore for spec.
func (e *Engine) checkSnapshot(spec vmm.Spec, snap vmm.Snapshot) error {
	info := e.Info()
	fix := "take a new snapshot with this engine and machine shape"
	switch {
	case snap.Engine != vmm.QEMU:
		return api.FailedPrecondition("vm %s: the snapshot was made by engine %q, not qemu", spec.Name, snap.Engine).WithFix(fix)
	case snap.Version != info.Version:
		return api.FailedPrecondition("vm %s: the snapshot was made by qemu %s, this is qemu %s", spec.Name, snap.Version, info.Version).
			WithFix("take a new snapshot: QEMU was upgraded since this one")
	case snap.Accel != e.cfg.Accel:
		return api.FailedPrecondition("vm %s: the snapshot was made under accel %q, this engine uses %q", spec.Name, snap.Accel, e.cfg.Accel).WithFix(fix)
	case snap.VCPUs != spec.VCPUs || snap.MemoryMiB != spec.MemoryMiB:
		return api.FailedPrecondition("vm %s: the snapshot is of a %d-vCPU %d MiB guest, asked for %d vCPUs and %d MiB",
			spec.Name, snap.VCPUs, snap.MemoryMiB, spec.VCPUs, spec.MemoryMiB).WithFix("restore it with its own shape, or " + fix)
	case snap.State == "":
		return api.FailedPrecondition("vm %s: the snapshot names no state file", spec.Name).WithFix(fix)
	case snap.Memory != "" && snap.MemorySize != int64(snap.MemoryMiB)<<20:
		return api.FailedPrecondition("vm %s: the snapshot's memory is %d bytes for a %d MiB guest", spec.Name, snap.MemorySize, snap.MemoryMiB).WithFix(fix)
	}
	return nil
}

// loadState feeds a just-started QEMU (-incoming defer) its state from fd
// and continues the guest. QEMU exits when the stream does not load: the
// error then carries its log.
func loadState(ctx context.Context, p *proc.Process, spec vmm.Spec, in *incoming, fd int) error {
	ctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	err := func() error {
		q, err := dialQMP(ctx, spec.APISocket)
		if err != nil {
			return err
		}
		defer q.Close()
		if err := q.call("migrate-set-capabilities", ignoreSharedCap(in.template != ""), nil, nil); err != nil {
			return err
		}
		if err := q.call("migrate-incoming", map[string]string{"uri": "fd:" + strconv.Itoa(fd)}, nil, nil); err != nil {
			return err
		}
		if err := waitMigration(ctx, q); err != nil {
			return err
		}
		return q.call("cont", nil, nil, nil)
	}()
	if err == nil {
		return nil
	}
	select {
	case <-p.Exited:
		return api.FailedPrecondition("vm %s: qemu exited loading the snapshot (%s): %s", spec.Name, p.ExitStatus(), proc.LogTail(spec.EngineLog)).
			WithFix("delete the snapshot and take it again")
	case <-time.After(100 * time.Millisecond):
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return api.Unavailable("vm %s: loading the snapshot: %w", spec.Name, err)
	}
	return fmt.Errorf("vm %s: loading the snapshot: %w (log: %s)", spec.Name, err, proc.LogTail(spec.EngineLog))
}
