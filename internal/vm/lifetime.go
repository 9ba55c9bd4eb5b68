package vm

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/progress"
)

// Lifetimes owned by the daemon (api.VMLifetime): a TTL that deletes or
// stops a VM, an idle-stop, and VMs owned by a `vm run`. The durable part
// (deadlines, durations, the run mark) is in the store; what counts as
// activity lives here, in memory: exec streams open through Exec (the CLI's
// exec and run, vm cp, the web terminal, port forwards, the MCP tools), and
// the stats loop's samples (guest network traffic, guest CPU above
// idle_cpu_percent). A daemon restart counts as activity: idle time and the
// run grace count from the daemon's start. checkLifetimes runs every
// lifetimeEvery and acts on what is due, one VM after the other.

const lifetimeEvery = time.Second

var (
	// runEndGrace is how long a run-owned VM is kept once its last exec
	// stream has closed: the CLI deletes it itself when it can; the daemon
	// deletes it after this when the CLI is gone.
	runEndGrace = 10 * time.Second
	// runAttachGrace is how long a run-owned VM may run without any exec
	// stream ever opened (its CLI died during create).
	runAttachGrace = 2 * time.Minute
	// maxTTL bounds --ttl and --idle-stop.
	maxTTL = 10 * 365 * 24 * time.Hour
)

// activity is what the daemon saw of a VM lately (by VM ID in
// Manager.act, guarded by Manager.mu).
type activity struct {
	last       time.Time // last exec/forward/network/CPU activity
	sessions   int       // exec streams open now
	hadSession bool      // a stream was opened since the daemon started
	lastEnd    time.Time // when the last stream closed
	retryAt    time.Time // a failed step is not tried again before this
}

// lifetimeRetry is how long a failed lifetime step waits before the next
// try (a VM whose engine is not loaded here refuses stop and delete).
const lifetimeRetry = time.Minute

// activityLocked returns id's record, made on first use; m.mu must be held.
func (m *Manager) activityLocked(id string) *activity {
	a := m.act[id]
	if a == nil {
		a = &activity{last: m.started}
		m.act[id] = a
	}
	return a
}

// touch records activity on the VM with id now.
func (m *Manager) touch(id string) {
	m.mu.Lock()
	m.activityLocked(id).last = m.now()
	m.mu.Unlock()
}

// trackStream counts an exec stream of the VM with id as a session until
// it is closed.
func (m *Manager) trackStream(id string, s net.Conn) net.Conn {
	m.mu.Lock()
	a := m.activityLocked(id)
	a.sessions++
	a.hadSession = true
	a.last = m.now()
	m.mu.Unlock()
	t := trackedStream{Conn: s, end: sync.OnceFunc(func() {
		m.mu.Lock()
		a := m.activityLocked(id)
		a.sessions--
		a.last, a.lastEnd = m.now(), m.now()
		m.mu.Unlock()
	})}
	if cw, ok := s.(interface{ CloseWrite() error }); ok {
		return &trackedHalfCloser{trackedStream: t, cw: cw}
	}
	return &t
}

type trackedStream struct {
	net.Conn
	end func()
}

func (t *trackedStream) Close() error {
	err := t.Conn.Close()
	t.end()
	return err
}

// trackedHalfCloser keeps the stream's CloseWrite visible (the daemon's
// exec pipe half-closes streams that can).
type trackedHalfCloser struct {
	trackedStream
	cw interface{ CloseWrite() error }
}

func (t *trackedHalfCloser) CloseWrite() error { return t.cw.CloseWrite() }

// noteSample counts a stats sample as activity when the guest used CPU
// above idle_cpu_percent or moved network bytes since prev.
func (m *Manager) noteSample(id string, prev, s *statSample) {
	if prev == nil {
		return
	}
	busy := s.stats.CPUPercent >= float64(m.cfg.IdleCPUPercent) ||
		s.stats.NetRxBytes != prev.stats.NetRxBytes || s.stats.NetTxBytes != prev.stats.NetTxBytes
	if busy {
		m.touch(id)
	}
}

// lifetimeStep is what is due for one VM.
type lifetimeStep struct {
	do  string // "" (nothing), "delete", "stop", or "clear-ttl" (a stop TTL on a VM already down)
	why string
}

// dueStep decides what is due for v at now, given its activity and when
// the daemon started. Busy states (creating, starting, stopping, deleting)
// wait.
func dueStep(v api.VM, a activity, now, started time.Time) lifetimeStep {
	lt := v.Lifetime
	st := v.Runtime.State
	if lt == nil || (st != api.VMRunning && st != api.VMStopped && st != api.VMFailed) {
		return lifetimeStep{}
	}
	since := func(ts ...time.Time) time.Duration {
		latest := started
		for _, t := range ts {
			if t.After(latest) {
				latest = t
			}
		}
		return now.Sub(latest)
	}
	if lt.Run {
		switch {
		case st != api.VMRunning:
			return lifetimeStep{"delete", fmt.Sprintf("its vm run is over (the vm is %s)", st)}
		case a.sessions == 0 && a.hadSession && since(a.lastEnd) >= runEndGrace:
			return lifetimeStep{"delete", "the command of its vm run ended or its client went away"}
		case a.sessions == 0 && !a.hadSession && since(v.Runtime.StartedAt) >= runAttachGrace:
			return lifetimeStep{"delete", fmt.Sprintf("no vm run attached to it within %s", runAttachGrace)}
		}
	}
	if !lt.ExpiresAt.IsZero() && !now.Before(lt.ExpiresAt) {
		switch {
		case lt.TTLAction != api.TTLStop:
			return lifetimeStep{"delete", "its ttl ended at " + lt.ExpiresAt.Format(time.RFC3339)}
		case st == api.VMRunning:
			return lifetimeStep{"stop", "its ttl ended at " + lt.ExpiresAt.Format(time.RFC3339)}
		default:
			return lifetimeStep{"clear-ttl", "its ttl ended while it was " + string(st)}
		}
	}
	if lt.IdleStop > 0 && st == api.VMRunning && a.sessions == 0 {
		if idle := since(a.last, v.Runtime.StartedAt); idle >= lt.IdleStop {
			return lifetimeStep{"stop", fmt.Sprintf("idle for %s (idle-stop %s)", idle.Round(time.Second), lt.IdleStop)}
		}
	}
	return lifetimeStep{}
}

// idleStopAt is when v will be idle-stopped if nothing happens (zero when
// it will not).
func (m *Manager) idleStopAt(v api.VM) time.Time {
	if v.Lifetime == nil || v.Lifetime.IdleStop <= 0 || v.Runtime.State != api.VMRunning {
		return time.Time{}
	}
	m.mu.Lock()
	a := *m.activityLocked(v.ID)
	m.mu.Unlock()
	if a.sessions > 0 {
		return time.Time{}
	}
	last := m.started
	for _, t := range []time.Time{a.last, v.Runtime.StartedAt} {
		if t.After(last) {
			last = t
		}
	}
	return last.Add(v.Lifetime.IdleStop).UTC()
}

// checkLifetimes acts on every VM whose lifetime step is due.
func (m *Manager) checkLifetimes(ctx context.Context) {
	vms, err := m.st.ListVMs(ctx)
	if err != nil {
		m.log.Warn("lifetimes: listing vms", "err", err)
		return
	}
	now := m.now()
	seen := make(map[string]bool, len(vms))
	var due []api.VM
	var steps []lifetimeStep
	m.mu.Lock()
	for _, v := range vms {
		seen[v.ID] = true
		a := m.activityLocked(v.ID)
		if now.Before(a.retryAt) {
			continue
		}
		if s := dueStep(v, *a, now, m.started); s.do != "" {
			due, steps = append(due, v), append(steps, s)
		}
	}
	for id := range m.act {
		if !seen[id] {
			delete(m.act, id)
		}
	}
	m.mu.Unlock()
	for i, v := range due {
		if ctx.Err() != nil {
			return
		}
		m.applyStep(ctx, v, steps[i])
	}
}

// applyStep does one due step; failures are logged (the next check tries
// again).
func (m *Manager) applyStep(ctx context.Context, v api.VM, s lifetimeStep) {
	log := m.log.With("vm", v.Name, "reason", s.why)
	var err error
	switch s.do {
	case "delete":
		log.Info("lifetime: deleting vm")
		err = m.Delete(ctx, v.Name, progress.Nop{})
		if api.IsNotFound(err) {
			err = nil
		}
	case "stop":
		log.Info("lifetime: stopping vm")
		if _, err = m.Stop(ctx, v.Name, progress.Nop{}); err == nil && !v.Lifetime.ExpiresAt.IsZero() && !m.now().Before(v.Lifetime.ExpiresAt) {
			err = m.clearTTL(ctx, v)
		}
		if err == nil {
			err = m.noteStopReason(ctx, v.Name, "stopped by the daemon: "+s.why)
		}
	case "clear-ttl":
		err = m.clearTTL(ctx, v)
	}
	if err != nil {
		log.Warn("lifetime step failed; trying again later", "step", s.do, "err", err, "retry_in", lifetimeRetry)
		m.mu.Lock()
		m.activityLocked(v.ID).retryAt = m.now().Add(lifetimeRetry)
		m.mu.Unlock()
	}
}

// clearTTL removes a TTL that has done its work (a stop TTL).
func (m *Manager) clearTTL(ctx context.Context, v api.VM) error {
	lt := *v.Lifetime
	lt.ExpiresAt, lt.TTLAction = time.Time{}, ""
	return m.st.SetVMLifetime(ctx, v.ID, lt)
}

// noteStopReason records why the daemon stopped a VM in its last_error, so
// vm show says so.
func (m *Manager) noteStopReason(ctx context.Context, name, why string) error {
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if v.Runtime.State != api.VMStopped {
		return nil
	}
	v.Runtime.LastError = why
	return m.st.UpdateVMRuntime(ctx, v.ID, v.Runtime)
}

// lifetimeFor turns request fields into a lifetime starting at now.
func lifetimeFor(ttlSec int64, action string, idleSec int64, run bool, now time.Time) (*api.VMLifetime, error) {
	lt := api.VMLifetime{Run: run}
	if err := checkSeconds("ttl", ttlSec); err != nil {
		return nil, err
	}
	if err := checkSeconds("idle-stop", idleSec); err != nil {
		return nil, err
	}
	switch action {
	case "", api.TTLDelete, api.TTLStop:
	default:
		return nil, api.Invalid("ttl action %q is neither %s nor %s", action, api.TTLDelete, api.TTLStop).
			WithFix("use --ttl-action delete or --ttl-action stop")
	}
	if action != "" && ttlSec == 0 {
		return nil, api.Invalid("a ttl action without a ttl").WithFix("give --ttl DURATION too, e.g. --ttl 2h")
	}
	if ttlSec > 0 {
		lt.ExpiresAt = now.Add(time.Duration(ttlSec) * time.Second).UTC().Truncate(time.Second)
		lt.TTLAction = action
		if lt.TTLAction == "" {
			lt.TTLAction = api.TTLDelete
		}
	}
	lt.IdleStop = time.Duration(idleSec) * time.Second
	if lt.IsZero() {
		return nil, nil
	}
	return &lt, nil
}

func checkSeconds(what string, s int64) error {
	if s < 0 || time.Duration(s)*time.Second > maxTTL || s > int64(maxTTL/time.Second) {
		return api.Invalid("--%s of %ds is out of range (0 to %s)", what, s, maxTTL).
			WithFix("give a duration such as 30m, 2h or 7d")
	}
	return nil
}

// SetLifetime changes the TTL and idle-stop of a VM, running or not (nil
// request fields are unchanged; a TTL counts from now; 0 clears).
func (m *Manager) SetLifetime(ctx context.Context, name string, req api.VMLifetimeRequest) (api.VM, error) {
	v, unlock, err := m.lockedVM(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if v.Runtime.State == api.VMDeleting {
		return api.VM{}, api.FailedPrecondition("vm %q is being deleted", v.Name)
	}
	var cur api.VMLifetime
	if v.Lifetime != nil {
		cur = *v.Lifetime
	}
	ttl, action := int64(0), req.TTLAction
	if req.TTLSeconds != nil {
		ttl = *req.TTLSeconds
	} else if action != "" && !cur.ExpiresAt.IsZero() {
		// a new action for the TTL in place
		ttl = int64(max(1, cur.ExpiresAt.Sub(m.now()).Round(time.Second)/time.Second))
	}
	idle := int64(cur.IdleStop / time.Second)
	if req.IdleStopSeconds != nil {
		idle = *req.IdleStopSeconds
	}
	next, err := lifetimeFor(ttl, action, idle, cur.Run, m.now())
	if err != nil {
		return api.VM{}, err
	}
	if next == nil {
		next = &api.VMLifetime{}
	}
	if req.TTLSeconds == nil && action == "" {
		next.ExpiresAt, next.TTLAction = cur.ExpiresAt, cur.TTLAction
	}
	if err := m.st.SetVMLifetime(ctx, v.ID, *next); err != nil {
		return api.VM{}, err
	}
	m.touch(v.ID) // a change counts as activity: idle time starts again
	return m.getVM(ctx, name)
}
