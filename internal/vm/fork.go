package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/names"
	"banger/internal/progress"
	"banger/internal/revert"
	"banger/internal/store"
)

// Fork starts req.Count new VMs from a snapshot, or from a running VM (a
// snapshot of it is taken first and kept). All or nothing: when one child
// fails, the children made so far are deleted.
func (m *Manager) Fork(ctx context.Context, req api.VMForkRequest, rep progress.Reporter) (api.VMForkResult, error) {
	count := req.Count
	if count == 0 {
		count = 1
	}
	if count < 1 || count > maxForkCount {
		return api.VMForkResult{}, api.Invalid("fork count %d is out of range 1..%d", count, maxForkCount).
			WithFix(fmt.Sprintf("use --count between 1 and %d", maxForkCount))
	}
	if req.Source == "" {
		return api.VMForkResult{}, api.Invalid("fork: no source named").WithFix("banger vm fork VM|SNAPSHOT")
	}
	row, err := m.st.GetSnapshot(ctx, req.Source)
	fromVM := false
	if api.IsNotFound(err) {
		if _, verr := m.getVM(ctx, req.Source); verr != nil {
			return api.VMForkResult{}, api.NotFound("no snapshot or vm is named %q", req.Source).
				WithFix("name a running vm or a snapshot").WithAction("snapshot list")
		}
		fromVM = true
	} else if err != nil {
		return api.VMForkResult{}, err
	} else if row.State != store.SnapshotReady {
		return api.VMForkResult{}, api.FailedPrecondition("snapshot %q is still being taken", row.Name)
	}
	childNames, err := m.forkNames(ctx, req, count)
	if err != nil {
		return api.VMForkResult{}, err
	}
	memMiB := 0
	if fromVM {
		v, err := m.getVM(ctx, req.Source)
		if err != nil {
			return api.VMForkResult{}, err
		}
		memMiB = v.MemoryMiB
	} else {
		memMiB = row.MemoryMiB
	}
	if err := m.checkForkRoom(ctx, count, memMiB); err != nil {
		return api.VMForkResult{}, err
	}
	if fromVM {
		v, unlock, err := m.lockedVM(ctx, req.Source)
		if err != nil {
			return api.VMForkResult{}, err
		}
		row, err = m.snapshotLocked(ctx, &v, m.snapshotName(ctx, v.Name), api.SnapshotVM, rep)
		unlock()
		if err != nil {
			return api.VMForkResult{}, err
		}
	}
	res := api.VMForkResult{Snapshot: row.Name}
	for i, name := range childNames {
		crep := rep
		if count > 1 {
			crep = prefixed{rep, name + ": "}
		}
		creq := forkCreateRequest(req, name)
		v, err := m.restore(ctx, row, creq, crep)
		if err != nil {
			for _, made := range res.VMs {
				c, cancel := bg()
				if derr := m.Delete(c, made.Name, progress.Nop{}); derr != nil {
					m.log.Error("deleting a fork's child after a later child failed", "vm", made.Name, "err", derr)
				}
				cancel()
			}
			if count > 1 {
				return api.VMForkResult{}, fmt.Errorf("fork %d of %d (%s): %w", i+1, count, name, err)
			}
			return api.VMForkResult{}, err
		}
		res.VMs = append(res.VMs, v)
	}
	return res, nil
}

func forkCreateRequest(req api.VMForkRequest, name string) api.VMCreateRequest {
	return api.VMCreateRequest{
		Name: name, NetPolicy: req.NetPolicy, TTLSeconds: req.TTLSeconds, TTLAction: req.TTLAction,
		IdleStopSeconds: req.IdleStopSeconds, Run: req.Run,
	}
}

// forkNames picks the children's names and checks they are free.
func (m *Manager) forkNames(ctx context.Context, req api.VMForkRequest, count int) ([]string, error) {
	var out []string
	switch {
	case count == 1 && req.Name != "":
		out = []string{req.Name}
	case count == 1:
		out = []string{names.GenerateUnique(func(n string) bool {
			_, err := m.st.GetVM(ctx, n)
			return err == nil
		})}
	default:
		prefix := req.Name
		if prefix == "" {
			prefix = req.Source + "-fork"
		}
		for i := 1; i <= count; i++ {
			out = append(out, prefix+"-"+strconv.Itoa(i))
		}
	}
	for _, n := range out {
		if err := names.Validate(n); err != nil {
			return nil, err
		}
		if _, err := m.st.GetVM(ctx, n); err == nil {
			return nil, api.AlreadyExists("vm %q already exists", n).
				WithFix("pick another --name (for --count, the prefix of NAME-1…), or delete it").WithAction("vm delete", n)
		}
	}
	return out, nil
}

// forkChildMiB is what one forked child is planned to take beyond the
// pages it shares with its siblings: a quarter of its memory plus the
// engine's own (measured: an idle 512 MiB child's private memory is ~80 MiB).
func forkChildMiB(memMiB int) int { return memMiB/4 + 64 }

// checkForkRoom refuses, before anything is made, a fork the host has no
// addresses or memory for.
func (m *Manager) checkForkRoom(ctx context.Context, count, memMiB int) error {
	vms, err := m.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	bits := m.cfg.Subnet.Bits()
	free := (1 << (32 - bits)) - 3 - len(vms) // network, broadcast, gateway
	if count > free {
		return api.FailedPrecondition("fork of %d needs %d addresses; subnet %s has %d free", count, count, m.cfg.Subnet, max(free, 0)).
			WithFix("fork fewer (--count), delete vms, or give banger a larger subnet in the config")
	}
	need := count * forkChildMiB(memMiB)
	if avail := hostMemAvailableMiB(); avail > 0 && need > avail {
		return api.FailedPrecondition("fork of %d needs about %d MiB (%d MiB each); the host has %d MiB available", count, need, forkChildMiB(memMiB), avail).
			WithFix("fork fewer (--count), or stop vms first")
	}
	return nil
}

// restore makes one VM from snapshot row: allocate → system disk → work
// disk → network → restore → identity → agent ready (+ features) →
// running. On failure everything made is undone and the row removed.
func (m *Manager) restore(ctx context.Context, row store.SnapshotRow, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
	var rec snapFiles
	if err := json.Unmarshal(row.Record, &rec); err != nil {
		return api.VM{}, fmt.Errorf("snapshot %s: its record: %w", row.Name, err)
	}
	sn, err := m.snapshotter(row.Engine)
	if err != nil {
		return api.VM{}, err
	}
	if err := checkSnapshotFiles(row, rec); err != nil {
		return api.VM{}, err
	}
	req.Image, req.Engine = row.ImageID, row.Engine
	req.VCPUs, req.MemoryMiB, req.DiskBytes = row.VCPUs, row.MemoryMiB, row.DiskBytes
	v, img, err := m.prepareCreate(ctx, req, rep)
	if err != nil {
		return api.VM{}, err
	}
	pol, err := createPolicy(req)
	if err != nil {
		return api.VM{}, err
	}
	unlock := m.lockVM(v.Name)
	defer unlock()
	log := m.log.With("vm", v.Name, "snapshot", row.Name)
	r := revert.New()
	defer r.Fail()
	if err := m.allocate(ctx, &v, pol, rep, r, "fork", row.ID); err != nil {
		return api.VM{}, err
	}
	v.Origin = row.Name

	h, err := m.makeDisks(ctx, &v, rep, r, "fork",
		func() (disk.Disk, error) { return m.disk.Snapshot(ctx, rec.SystemDisk, v.Runtime.SystemDisk) },
		func() error { return disk.Clone(rec.WorkDisk, v.Runtime.WorkDisk) })
	if err != nil {
		return api.VM{}, fmt.Errorf("from snapshot %s: %w", row.Name, err)
	}

	if err := m.attachNet(ctx, &v, h, rep, r, "fork"); err != nil {
		return api.VM{}, err
	}

	done := rep.Stage(StageRestore)
	if err := m.prepareMemoryFile(v); err != nil {
		done(err)
		return api.VM{}, err
	}
	spec := m.spec(v, img, h)
	start := time.Now()
	vh, err := sn.Restore(ctx, spec, rec.Engine)
	if err != nil {
		done(err)
		return api.VM{}, fmt.Errorf("restoring snapshot %s: %w", row.Name, err)
	}
	r.Add(func() {
		c, cancel := bg()
		defer cancel()
		if err := sn.Kill(c, vh); err != nil {
			log.Error("killing engine", "pid", vh.PID, "err", err)
		}
		m.removeMemoryFile(v)
		m.dropAgent(v.ID)
		m.cacheHandles(v.ID, nil)
	})
	h.VMM = vh
	v.Runtime.Accel, v.Runtime.AgentTransport = vh.Accel, vh.AgentTransport
	if err := writeHandles(v.Runtime.VMDir, h); err != nil {
		done(err)
		return api.VM{}, err
	}
	m.cacheHandles(v.ID, h)
	// The state stays "creating" until the guest has its own identity: a
	// daemon killed before then finds a half-made fork and deletes it.
	if err := m.st.UpdateVM(ctx, v); err != nil {
		done(err)
		return api.VM{}, err
	}
	rep.Detail(fmt.Sprintf("pid %d, %s, %d ms", vh.PID, accelName(vh.Accel), time.Since(start).Milliseconds()))
	done(nil)
	m.stageHook("fork", StageRestore)

	done = rep.Stage(StageIdentity)
	deadline := time.Now().Add(time.Duration(m.cfg.ReadyTimeout))
	if err := m.waitAgent(ctx, v, sn, h, deadline, 50*time.Millisecond, false); err != nil {
		err = fmt.Errorf("the restored guest's agent did not answer: %w", err)
		done(err)
		return api.VM{}, err
	}
	if err := m.resetIdentity(ctx, &v, h, rep); err != nil {
		err = fmt.Errorf("giving the restored guest its own identity: %w (the vm is deleted)", err)
		done(err)
		return api.VM{}, err
	}
	if js, err := json.Marshal(rec.HostCAs); err == nil && len(rec.HostCAs) > 0 {
		_ = writeFileAtomic(filepath.Join(v.Runtime.VMDir, hostCAsName), js)
	}
	done(nil)
	m.stageHook("fork", StageIdentity)

	done = rep.Stage(StageReady)
	done(nil)
	if req.Wait != api.WaitAgent {
		alive := func() bool { return sn.Alive(h.VMM) }
		if err := m.waitFeatures(ctx, v, req.Wait, alive, rep); err != nil {
			return api.VM{}, err
		}
	}
	if err := m.setState(ctx, &v, api.VMRunning, ""); err != nil {
		return api.VM{}, err
	}
	r.Success()
	log.Info("vm restored from snapshot", "ip", v.Runtime.GuestIP, "ms", time.Since(start).Milliseconds())
	return v, nil
}

// checkSnapshotFiles refuses a snapshot whose files are gone (before
// anything is made; the engine checks sizes and sums of its own).
func checkSnapshotFiles(row store.SnapshotRow, rec snapFiles) error {
	for _, p := range []string{rec.Engine.State, rec.Engine.Memory, rec.SystemDisk.Path, rec.WorkDisk} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return api.FailedPrecondition("snapshot %q is missing its file %s: %v", row.Name, p, err).
				WithFix("delete the snapshot and take it again").WithAction("snapshot delete", row.Name)
		}
	}
	if rec.Engine.State == "" {
		return api.FailedPrecondition("snapshot %q has no state file", row.Name).WithAction("snapshot delete", row.Name)
	}
	return nil
}

// prefixed is a Reporter whose stage names start with a child's name.
type prefixed struct {
	progress.Reporter
	prefix string
}

func (p prefixed) Stage(name string) func(error) { return p.Reporter.Stage(p.prefix + name) }
