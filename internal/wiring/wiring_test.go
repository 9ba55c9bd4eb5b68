package wiring

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"banger/internal/config"
	"banger/internal/disk/pool"
	"banger/internal/image"
	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/qemu"
)

var errBoom = errors.New("boom")

// steps are Start's steps in order.
var steps = []string{"choose", "pool", "dirs", "network", "vms", "reconcile", "ssh key", "images"}

// undoLog records the undo (and shutdown) calls of the fake host parts.
type undoLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *undoLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, s)
}

func (l *undoLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// fakeNet is a hostNetwork that records Setup, Close and Teardown.
type fakeNet struct {
	log      *undoLog
	setupErr error
}

func (n *fakeNet) Setup(context.Context) error {
	n.log.add("network setup")
	return n.setupErr
}
func (n *fakeNet) Close(context.Context) error    { n.log.add("network close"); return nil }
func (n *fakeNet) Teardown(context.Context) error { n.log.add("network teardown"); return nil }
func (n *fakeNet) AcquireTap(context.Context) (string, bool, error) {
	return "", false, errors.New("fake network has no taps")
}
func (n *fakeNet) ReleaseTap(context.Context, string) error { return nil }
func (n *fakeNet) MarkInUse(string)                         {}
func (n *fakeNet) DeleteTap(context.Context, string) error  { return nil }
func (n *fakeNet) Gateway() netip.Addr                      { return netip.MustParseAddr("10.0.0.1") }
func (n *fakeNet) Netmask() string                          { return "255.255.255.0" }
func (n *fakeNet) SetHost(string, netip.Addr)               {}
func (n *fakeNet) RemoveHost(string)                        {}
func (n *fakeNet) TapStats(string) (int64, int64, error)    { return 0, 0, nil }

// fixture is a store, a config and fake host parts recording into log.
type fixture struct {
	cfg config.Config
	st  *store.Store
	log *undoLog
	net *fakeNet
	s   seams
}

func newFixture(t *testing.T, existed bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.StoragePoolSize = 512 << 20
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil { // daemon.New makes it
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), filepath.Join(dir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{cfg: cfg, st: st, log: &undoLog{}}
	f.net = &fakeNet{log: f.log}
	f.s = seams{
		choose: func(context.Context, config.Config, *slog.Logger) (choice, error) {
			return choice{engine: vmm.QEMU, accel: "tcg", reason: "test", driver: "copy", usePool: true,
				engines: map[string]vmm.Engine{vmm.QEMU: qemu.New(qemu.Config{Binary: "/bin/false", Accel: "tcg"})}}, nil
		},
		pool: func(_ context.Context, p *pool.Pool) (func(), error) {
			f.log.add("pool mount")
			return func() { f.log.add("pool unmount") }, os.MkdirAll(p.MountPoint, 0o700)
		},
		newNetwork: func(config.Config, *slog.Logger) (hostNetwork, bool, error) { return f.net, existed, nil },
		listTaps:   func() ([]string, error) { return nil, nil },
		sshKey:     func(string) (string, error) { return "ssh-ed25519 AAAAtest banger", nil },
	}
	return f
}

func (f *fixture) start() (*Services, error) {
	return start(f.cfg, f.st, slog.New(slog.DiscardHandler), Options{}, f.s)
}

func failAt(step string) func(string) error {
	return func(s string) error {
		if s == step {
			return errBoom
		}
		return nil
	}
}

// A failure after any step undoes every earlier step, newest first: the
// network this start created is torn down, the pool it mounted unmounted.
func TestStartFailureUndoesEarlierSteps(t *testing.T) {
	for i, step := range steps {
		t.Run(step, func(t *testing.T) {
			f := newFixture(t, false)
			f.s.fail = failAt(step)
			s, err := f.start()
			if s != nil || !errors.Is(err, errBoom) || !strings.Contains(err.Error(), step) {
				t.Fatalf("Start = %v, %v; want the injected error naming %q", s, err, step)
			}
			var want []string
			done := steps[:i+1]
			if slices.Contains(done, "pool") {
				want = append(want, "pool mount")
			}
			if slices.Contains(done, "network") {
				want = append(want, "network setup", "network teardown")
			}
			if slices.Contains(done, "pool") {
				want = append(want, "pool unmount")
			}
			if got := f.log.get(); !slices.Equal(got, want) {
				t.Errorf("host calls %v, want %v", got, want)
			}
		})
	}
}

// Failures inside a step: a failed network setup is undone too (it used to
// be left open), and a failed SSH key undoes the network and the pool.
func TestStartStepErrorsUndo(t *testing.T) {
	t.Run("network setup", func(t *testing.T) {
		f := newFixture(t, false)
		f.net.setupErr = errBoom
		if _, err := f.start(); !errors.Is(err, errBoom) {
			t.Fatalf("Start = %v", err)
		}
		want := []string{"pool mount", "network setup", "network teardown", "pool unmount"}
		if got := f.log.get(); !slices.Equal(got, want) {
			t.Errorf("host calls %v, want %v", got, want)
		}
	})
	t.Run("ssh key, network of an earlier daemon", func(t *testing.T) {
		f := newFixture(t, true)
		f.s.sshKey = func(string) (string, error) { return "", errBoom }
		if _, err := f.start(); !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "ssh key") {
			t.Fatalf("Start = %v", err)
		}
		// A network that existed before this start may carry running VMs:
		// it is closed, never torn down.
		want := []string{"pool mount", "network setup", "network close", "pool unmount"}
		if got := f.log.get(); !slices.Equal(got, want) {
			t.Errorf("host calls %v, want %v", got, want)
		}
	})
}

// A successful start runs the image data patch; Close stops the network's
// daemon side only: the pool stays mounted and the network stays up for the
// VMs that outlive the daemon.
func TestStartThenClose(t *testing.T) {
	f := newFixture(t, false)
	s, err := f.start()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.st.PatchApplied(context.Background(), image.PatchHealImages); !ok || err != nil {
		t.Errorf("the start-up data patch did not run: %v %v", ok, err)
	}
	if info := s.VMs.Info(); info.Engine != vmm.QEMU || info.DiskDriver != "copy" {
		t.Errorf("Info = %+v", info)
	}
	for _, d := range []string{"images", "staging", "vms"} {
		if _, err := os.Stat(filepath.Join(f.cfg.StateDir, "pool", d)); err != nil {
			t.Errorf("%s not made in the pool: %v", d, err)
		}
	}
	s.Close()
	want := []string{"pool mount", "network setup", "network close"}
	if got := f.log.get(); !slices.Equal(got, want) {
		t.Errorf("host calls %v, want %v", got, want)
	}
}

// As root, with the real loop-backed pool: a start failing after the pool
// step leaves no mount and no loop device.
func TestIntegrationStartFailureUnmountsPool(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the loop-backed pool: run go test as root")
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("no mkfs.xfs: apt-get install xfsprogs")
	}
	f := newFixture(t, false)
	f.s.pool = hostSeams().pool
	p := &pool.Pool{Image: filepath.Join(f.cfg.StateDir, "pool.img"), MountPoint: filepath.Join(f.cfg.StateDir, "pool")}
	t.Cleanup(func() { p.Destroy(context.Background()) })
	f.s.fail = func(step string) error {
		if step == "pool" {
			if m, _ := p.Mounted(); !m {
				t.Error("the pool step did not mount the pool")
			}
		}
		return failAt("images")(step)
	}
	if _, err := f.start(); !errors.Is(err, errBoom) {
		t.Fatalf("Start = %v", err)
	}
	if m, err := p.Mounted(); m || err != nil {
		t.Errorf("pool still mounted after a failed start (%v)", err)
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), " "+p.MountPoint+" ") {
		t.Errorf("%s still in /proc/self/mounts", p.MountPoint)
	}
	if out, err := exec.Command("losetup", "-j", p.Image).Output(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("loop devices left on %s: %q %v", p.Image, out, err)
	}
}
