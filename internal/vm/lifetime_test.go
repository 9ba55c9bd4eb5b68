package vm

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/progress"
)

// fakeClock is the lifetimes' clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestDueStep(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	started := t0.Add(-time.Hour)
	running := func(lt api.VMLifetime) api.VM {
		return api.VM{Name: "v", Lifetime: &lt, Runtime: api.VMRuntime{State: api.VMRunning, StartedAt: t0.Add(-30 * time.Minute)}}
	}
	withState := func(v api.VM, s api.VMState) api.VM { v.Runtime.State = s; return v }
	quiet := activity{last: t0.Add(-10 * time.Minute)}
	for _, tc := range []struct {
		name string
		v    api.VM
		a    activity
		want string
	}{
		{"no lifetime", api.VM{Runtime: api.VMRuntime{State: api.VMRunning}}, quiet, ""},
		{"ttl not yet", running(api.VMLifetime{ExpiresAt: t0.Add(time.Second), TTLAction: api.TTLDelete}), quiet, ""},
		{"ttl ended: delete", running(api.VMLifetime{ExpiresAt: t0, TTLAction: api.TTLDelete}), quiet, "delete"},
		{"ttl ended, action empty: delete", running(api.VMLifetime{ExpiresAt: t0.Add(-time.Hour)}), quiet, "delete"},
		{"ttl ended: stop", running(api.VMLifetime{ExpiresAt: t0, TTLAction: api.TTLStop}), quiet, "stop"},
		{"stop ttl on a stopped vm: cleared", withState(running(api.VMLifetime{ExpiresAt: t0, TTLAction: api.TTLStop}), api.VMStopped), quiet, "clear-ttl"},
		{"delete ttl on a stopped vm", withState(running(api.VMLifetime{ExpiresAt: t0}), api.VMStopped), quiet, "delete"},
		{"ttl waits while creating", withState(running(api.VMLifetime{ExpiresAt: t0}), api.VMCreating), quiet, ""},
		{"ttl waits while deleting", withState(running(api.VMLifetime{ExpiresAt: t0}), api.VMDeleting), quiet, ""},
		{"idle long enough", running(api.VMLifetime{IdleStop: 10 * time.Minute}), quiet, "stop"},
		{"idle not long enough", running(api.VMLifetime{IdleStop: 11 * time.Minute}), quiet, ""},
		{"idle but a session is open", running(api.VMLifetime{IdleStop: time.Minute}), activity{last: t0.Add(-time.Hour), sessions: 1}, ""},
		{"idle counts from the vm's start", api.VM{Lifetime: &api.VMLifetime{IdleStop: 10 * time.Minute},
			Runtime: api.VMRuntime{State: api.VMRunning, StartedAt: t0.Add(-5 * time.Minute)}}, activity{}, ""},
		{"idle counts from the daemon's start", running(api.VMLifetime{IdleStop: 2 * time.Hour}), activity{}, ""},
		{"idle on a stopped vm", withState(running(api.VMLifetime{IdleStop: time.Minute}), api.VMStopped), quiet, ""},
		{"run: command running", running(api.VMLifetime{Run: true}), activity{sessions: 1, hadSession: true}, ""},
		{"run: command just ended", running(api.VMLifetime{Run: true}), activity{hadSession: true, lastEnd: t0.Add(-time.Second)}, ""},
		{"run: command ended", running(api.VMLifetime{Run: true}), activity{hadSession: true, lastEnd: t0.Add(-runEndGrace)}, "delete"},
		{"run: never attached, in grace", api.VM{Lifetime: &api.VMLifetime{Run: true},
			Runtime: api.VMRuntime{State: api.VMRunning, StartedAt: t0.Add(-time.Minute)}}, activity{}, ""},
		{"run: never attached", api.VM{Lifetime: &api.VMLifetime{Run: true},
			Runtime: api.VMRuntime{State: api.VMRunning, StartedAt: t0.Add(-runAttachGrace)}}, activity{}, "delete"},
		{"run: vm stopped", withState(running(api.VMLifetime{Run: true}), api.VMStopped), activity{}, "delete"},
		{"run: vm failed", withState(running(api.VMLifetime{Run: true}), api.VMFailed), activity{}, "delete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dueStep(tc.v, tc.a, t0, started)
			if s.do != tc.want {
				t.Fatalf("dueStep = %q (%s), want %q", s.do, s.why, tc.want)
			}
			if s.do != "" && s.why == "" {
				t.Fatalf("step %q without a reason", s.do)
			}
		})
	}
}

func TestLifetimeForRejectsBadInput(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name        string
		ttl, idle   int64
		action      string
		wantInvalid bool
	}{
		{"nothing", 0, 0, "", false},
		{"negative ttl", -1, 0, "", true},
		{"negative idle", 0, -5, "", true},
		{"huge ttl", 1 << 62, 0, "", true},
		{"unknown action", 60, 0, "explode", true},
		{"action without ttl", 0, 0, "stop", true},
		{"ttl stop", 60, 0, "stop", false},
		{"idle", 0, 60, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lifetimeFor(tc.ttl, tc.action, tc.idle, false, now)
			if got := api.IsInvalid(err); got != tc.wantInvalid {
				t.Fatalf("lifetimeFor err = %v, want invalid %v", err, tc.wantInvalid)
			}
		})
	}
}

// newClockFixture is newFixture with the manager's lifetime clock faked.
func newClockFixture(t *testing.T) (*fixture, *fakeClock) {
	f := newFixture(t)
	clk := &fakeClock{t: time.Now()}
	f.m.now, f.m.started = clk.now, clk.now()
	return f, clk
}

func TestTTLDeletesAfterTheDeadlineAndSurvivesARestart(t *testing.T) {
	f, clk := newClockFixture(t)
	ctx := context.Background()
	v, err := f.m.Create(ctx, api.VMCreateRequest{Name: "ttl", NoStart: true, TTLSeconds: 3600}, progress.Nop{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Lifetime == nil || v.Lifetime.TTLAction != api.TTLDelete || v.Lifetime.ExpiresAt.Sub(clk.now()) > time.Hour {
		t.Fatalf("created lifetime = %+v", v.Lifetime)
	}
	clk.add(59 * time.Minute)
	f.m.checkLifetimes(ctx)
	if _, err := f.st.GetVM(ctx, "ttl"); err != nil {
		t.Fatalf("deleted before its ttl: %v", err)
	}
	// A new manager over the same store (a daemon restart) still knows the deadline.
	f.m.Close()
	m2, err := New(Options{Config: f.m.cfg, Store: f.st, Engines: f.m.engines, DefaultEngine: f.m.defEngine,
		Disk: f.m.disk, WorkDisks: f.m.work, Net: f.m.net, VMsDir: f.m.vmsDir, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Minute)
	m2.checkLifetimes(ctx)
	if _, err := f.st.GetVM(ctx, "ttl"); !api.IsNotFound(err) {
		t.Fatalf("vm after its ttl: %v", err)
	}
	f.assertEmpty(t)
}

func TestTTLStopOnAStoppedVMIsCleared(t *testing.T) {
	f, clk := newClockFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "ts", NoStart: true, TTLSeconds: 60, TTLAction: api.TTLStop,
		IdleStopSeconds: 30}, progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Minute)
	f.m.checkLifetimes(ctx)
	v, err := f.st.GetVM(ctx, "ts")
	if err != nil || v.Lifetime == nil || !v.Lifetime.ExpiresAt.IsZero() || v.Lifetime.IdleStop != 30*time.Second {
		t.Fatalf("after a stop ttl on a stopped vm: %+v %v", v.Lifetime, err)
	}
}

func TestSetLifetime(t *testing.T) {
	f, clk := newClockFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "edit", NoStart: true}, progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	i64 := func(n int64) *int64 { return &n }
	v, err := f.m.SetLifetime(ctx, "edit", api.VMLifetimeRequest{TTLSeconds: i64(600), IdleStopSeconds: i64(60)})
	if err != nil || v.Lifetime == nil || v.Lifetime.IdleStop != time.Minute ||
		v.Lifetime.ExpiresAt.Sub(clk.now()) > 10*time.Minute || v.Lifetime.TTLAction != api.TTLDelete {
		t.Fatalf("set: %+v %v", v.Lifetime, err)
	}
	exp := v.Lifetime.ExpiresAt
	// the action alone keeps the deadline
	if v, err = f.m.SetLifetime(ctx, "edit", api.VMLifetimeRequest{TTLAction: api.TTLStop}); err != nil ||
		v.Lifetime.TTLAction != api.TTLStop || v.Lifetime.ExpiresAt.Sub(exp).Abs() > time.Second {
		t.Fatalf("action only: %+v %v", v.Lifetime, err)
	}
	// the idle-stop alone keeps the ttl
	if v, err = f.m.SetLifetime(ctx, "edit", api.VMLifetimeRequest{IdleStopSeconds: i64(0)}); err != nil ||
		v.Lifetime.IdleStop != 0 || v.Lifetime.ExpiresAt.IsZero() || v.Lifetime.TTLAction != api.TTLStop {
		t.Fatalf("idle cleared: %+v %v", v.Lifetime, err)
	}
	if v, err = f.m.SetLifetime(ctx, "edit", api.VMLifetimeRequest{TTLSeconds: i64(0)}); err != nil || v.Lifetime != nil {
		t.Fatalf("all cleared: %+v %v", v.Lifetime, err)
	}
	if _, err = f.m.SetLifetime(ctx, "edit", api.VMLifetimeRequest{TTLSeconds: i64(-3)}); !api.IsInvalid(err) {
		t.Fatalf("negative ttl: %v", err)
	}
	if _, err = f.m.SetLifetime(ctx, "nope", api.VMLifetimeRequest{TTLSeconds: i64(3)}); !api.IsNotFound(err) {
		t.Fatalf("missing vm: %v", err)
	}
}

func TestRunOwnedVMNotRunningIsDeleted(t *testing.T) {
	f, _ := newClockFixture(t)
	ctx := context.Background()
	if _, err := f.m.Create(ctx, api.VMCreateRequest{Name: "run", NoStart: true, Run: true}, progress.Nop{}); err != nil {
		t.Fatal(err)
	}
	f.m.checkLifetimes(ctx)
	if _, err := f.st.GetVM(ctx, "run"); !api.IsNotFound(err) {
		t.Fatalf("stopped run-owned vm: %v", err)
	}
	f.assertEmpty(t)
}

func TestFailedLifetimeStepWaitsBeforeRetrying(t *testing.T) {
	f, clk := newClockFixture(t)
	ctx := context.Background()
	v, err := f.m.Create(ctx, api.VMCreateRequest{Name: "stuck", NoStart: true, TTLSeconds: 60}, progress.Nop{})
	if err != nil {
		t.Fatal(err)
	}
	// as if a step had just failed
	clk.add(2 * time.Minute)
	f.m.mu.Lock()
	f.m.activityLocked(v.ID).retryAt = clk.now().Add(lifetimeRetry)
	f.m.mu.Unlock()
	f.m.checkLifetimes(ctx)
	if _, err := f.st.GetVM(ctx, "stuck"); err != nil {
		t.Fatalf("a step was tried during its retry wait: %v", err)
	}
	clk.add(lifetimeRetry)
	f.m.checkLifetimes(ctx)
	if _, err := f.st.GetVM(ctx, "stuck"); !api.IsNotFound(err) {
		t.Fatalf("the step was not tried after its wait: %v", err)
	}
}

type halfCloser struct{ net.Conn }

func (halfCloser) CloseWrite() error { return nil }

func TestTrackStreamCountsSessions(t *testing.T) {
	f, clk := newClockFixture(t)
	a, b := net.Pipe()
	defer b.Close()
	s1 := f.m.trackStream("id", a)
	if _, ok := s1.(interface{ CloseWrite() error }); ok {
		t.Fatal("a stream without CloseWrite gained one")
	}
	s2 := f.m.trackStream("id", halfCloser{b})
	if _, ok := s2.(interface{ CloseWrite() error }); !ok {
		t.Fatal("a stream's CloseWrite was hidden")
	}
	clk.add(time.Minute)
	s1.Close()
	s1.Close() // twice counts once
	f.m.mu.Lock()
	got := *f.m.act["id"]
	f.m.mu.Unlock()
	if got.sessions != 1 || !got.hadSession || !got.lastEnd.Equal(clk.now()) {
		t.Fatalf("after one close: %+v", got)
	}
	s2.Close()
	f.m.mu.Lock()
	got = *f.m.act["id"]
	f.m.mu.Unlock()
	if got.sessions != 0 {
		t.Fatalf("after both closed: %+v", got)
	}
}

func TestNoteSampleCountsCPUAndNetwork(t *testing.T) {
	f, clk := newClockFixture(t)
	f.m.cfg.IdleCPUPercent = 10
	base := &statSample{stats: api.VMStats{NetRxBytes: 100, NetTxBytes: 100}}
	for _, tc := range []struct {
		name string
		s    api.VMStats
		busy bool
	}{
		{"quiet", api.VMStats{CPUPercent: 3, NetRxBytes: 100, NetTxBytes: 100}, false},
		{"cpu", api.VMStats{CPUPercent: 12, NetRxBytes: 100, NetTxBytes: 100}, true},
		{"network", api.VMStats{CPUPercent: 1, NetRxBytes: 180, NetTxBytes: 100}, true},
	} {
		clk.add(time.Minute)
		f.m.noteSample("x", base, &statSample{stats: tc.s})
		f.m.mu.Lock()
		last := f.m.activityLocked("x").last
		f.m.mu.Unlock()
		if got := last.Equal(clk.now()); got != tc.busy {
			t.Errorf("%s: busy = %v, want %v", tc.name, got, tc.busy)
		}
	}
}
