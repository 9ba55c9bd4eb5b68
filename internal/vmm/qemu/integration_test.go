package qemu

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/golden"
	"banger/internal/vmm"
	"banger/internal/vmm/proc"
	"banger/internal/vmm/vmmtest"
)

// daemonEnv makes the test binary act as a short-lived daemon: start one
// guest from the JSON in the variable, print its Handles and exit — so the
// test can check the guest outlives the process that started it.
const daemonEnv = "BANGER_QEMU_TEST_DAEMON"

type daemonJob struct {
	Config Config
	Spec   vmm.Spec
}

func TestMain(m *testing.M) {
	if job := os.Getenv(daemonEnv); job != "" {
		os.Exit(runDaemon(job))
	}
	if path := os.Getenv(attackEnv); path != "" {
		os.Exit(runAttack(path))
	}
	os.Exit(m.Run())
}

func runDaemon(job string) int {
	var j daemonJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	h, err := New(j.Config).Start(context.Background(), j.Spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = json.NewEncoder(os.Stdout).Encode(h)
	return 0
}

// guestInit loads the drivers, reports what the guest sees, then waits for
// the ACPI power button (when $1 is "button") and powers off.
const guestInit = `
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
busybox mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net virtio_console button evdev; do
  busybox insmod /lib/modules/$m.ko || echo "BANGER-INSMOD-FAILED $m"
done
busybox sleep 0.2
echo "BANGER-DISKS vda=$(busybox cat /sys/block/vda/serial) vdb=$(busybox cat /sys/block/vdb/serial)"
echo "BANGER-MAC $(busybox cat /sys/class/net/eth0/address)"
echo "BANGER-PORT $(busybox ls /sys/class/virtio-ports/*/name >/dev/null && busybox cat /sys/class/virtio-ports/*/name)"
for ev in /sys/class/input/event*; do
  if [ "$(busybox cat $ev/device/name)" = "Power Button" ]; then pwr=/dev/input/${ev##*/}; fi
done
obey=
if [ -n "$pwr" ] && busybox grep -q banger.obey_button /proc/cmdline; then
  exec 3<$pwr # open before READY: the host may press the button at once
  obey=1
fi
echo "BANGER-READY button=$pwr"
if [ -n "$obey" ]; then
  busybox head -c 1 <&3 >/dev/null
  echo BANGER-POWERDOWN
  busybox poweroff -f
fi
while :; do busybox sleep 3600; done
`

// TestIntegrationBoot boots a real kernel under TCG with a busybox
// initramfs, twice: a guest that obeys the power button (started by a
// short-lived "daemon" process that exits first) and one that ignores it.
func TestIntegrationBoot(t *testing.T) {
	env := newBootEnv(t)

	t.Run("graceful-after-daemon-exit", func(t *testing.T) {
		spec := env.spec(t, "banger.obey_button")
		t0 := time.Now()
		h := startViaDaemon(t, env.cfg, spec)
		t.Logf("Start returned after %v", time.Since(t0))
		checkRunning(t, env.engine, h, spec)
		t1 := time.Now()
		if err := env.engine.Stop(context.Background(), h, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("graceful Stop took %v", time.Since(t1))
		if !strings.Contains(golden.ReadFile(t, spec.SerialLog), "BANGER-POWERDOWN") {
			t.Error("guest did not see the power button (no BANGER-POWERDOWN in the serial log)")
		}
		checkGone(t, env.engine, h)
	})

	t.Run("kill-after-timeout", func(t *testing.T) {
		spec := env.spec(t, "")
		t0 := time.Now()
		h, err := env.engine.Start(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.engine.Kill(context.Background(), h) })
		t.Logf("Start returned after %v", time.Since(t0))
		checkRunning(t, env.engine, h, spec)

		// A second guest on the same tap: QEMU exits at once; Start must
		// say why and leave nothing behind.
		spec2 := env.spec(t, "")
		if h2, err := env.engine.Start(context.Background(), spec2); err == nil {
			_ = env.engine.Kill(context.Background(), h2)
			t.Error("Start on a busy tap succeeded")
		} else if !strings.Contains(err.Error(), "attaching to tap bgt0") {
			t.Errorf("Start on a busy tap = %v, want 'attaching to tap bgt0'", err)
		}
		for _, p := range []string{spec2.APISocket, spec2.AgentSocket} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s left behind after a failed Start", p)
			}
		}

		t1 := time.Now()
		if err := env.engine.Stop(context.Background(), h, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t1); d < 2*time.Second {
			t.Errorf("Stop returned after %v, before the 2s timeout, for a guest that ignores the button", d)
		}
		checkGone(t, env.engine, h)
		if err := env.engine.Stop(context.Background(), h, time.Second); err != nil {
			t.Errorf("Stop on a stopped VM: %v", err)
		}
		if err := env.engine.Kill(context.Background(), h); err != nil {
			t.Errorf("Kill on a stopped VM: %v", err)
		}
	})

	t.Run("missing-file", func(t *testing.T) {
		spec := env.spec(t, "")
		spec.Disks[1].Path = "/nonexistent/work.ext4"
		if _, err := env.engine.Start(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "disk work /nonexistent/work.ext4") {
			t.Fatalf("Start with a missing disk = %v", err)
		}
	})
}

type bootEnv struct {
	cfg    Config
	engine *Engine
	kernel string
	initrd string
	tap    string
	disks  [2]string
}

func newBootEnv(t *testing.T) *bootEnv {
	requireBoot(t)
	kernel := testKernel(t)
	env := &bootEnv{kernel: kernel, initrd: testInitramfs(t, kernel, guestInit), tap: "bgt0"}
	netns := tapInNetns(t, env.tap)
	dir := t.TempDir()
	for i, name := range []string{"root.ext4", "work.ext4"} {
		env.disks[i] = filepath.Join(dir, name)
		if err := os.WriteFile(env.disks[i], make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env.cfg = Config{Binary: DefaultBinary, Accel: "tcg", TSCkHz: hostTSCkHz(t), TapNetns: netns}
	env.engine = New(env.cfg)
	return env
}

// requireBoot skips unless this host can boot a test guest.
func requireBoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (tap device in a network namespace): run as root")
	}
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Skip("no qemu-system-x86_64: apt-get install qemu-system-x86")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun: modprobe tun")
	}
}

// tapInNetns makes tap in a new network namespace (removed on cleanup) and
// returns the namespace's path for Config.TapNetns: the engine attaches to
// the tap there and hands QEMU the fd.
func tapInNetns(t *testing.T, tap string) string {
	ns := "banger-t-" + randHex(4)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
	run(t, "ip", "-n", ns, "link", "set", tap, "up")
	return "/run/netns/" + ns
}

// testUID is the unprivileged id test guests' QEMU runs as (no passwd entry).
const testUID = 2000000123

func (env *bootEnv) spec(t *testing.T, cmdline string) vmm.Spec {
	dir := t.TempDir()
	return vmm.Spec{
		Name: "t" + randHex(3), VMDir: dir, VCPUs: 1, MemoryMiB: 256, UID: testUID, GID: testUID,
		Kernel: env.kernel, Initrd: env.initrd, Cmdline: cmdline,
		Disks: []vmm.Disk{
			{ID: "root", Path: env.disks[0], Format: "raw", ReadOnly: true},
			{ID: "work", Path: env.disks[1], Format: "raw"}, // writable: the rw+ro fd pair
		},
		Tap: env.tap, MAC: "06:00:ac:1e:00:09",
		APISocket: filepath.Join(dir, "qmp.sock"), AgentSocket: filepath.Join(dir, "agent.sock"),
		SerialLog: filepath.Join(dir, "serial.log"), EngineLog: filepath.Join(dir, "qemu.log"),
	}
}

func startViaDaemon(t *testing.T, cfg Config, spec vmm.Spec) vmm.Handles {
	job, _ := json.Marshal(daemonJob{Config: cfg, Spec: spec})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), daemonEnv+"="+string(job))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output() // the "daemon" has exited when this returns
	if err != nil {
		t.Fatalf("daemon process: %v", err)
	}
	var h vmm.Handles
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("daemon output %q: %v", out, err)
	}
	t.Cleanup(func() { _ = New(cfg).Kill(context.Background(), h) })
	return h
}

func checkRunning(t *testing.T, e *Engine, h vmm.Handles, spec vmm.Spec) {
	t.Helper()
	if !e.Alive(h) {
		t.Fatalf("Alive(%+v) = false right after Start", h)
	}
	if h.AgentTransport != vmm.TransportSerial || h.AgentSocket != spec.AgentSocket || h.Accel != "tcg" {
		t.Errorf("handles = %+v", h)
	}
	if sid, err := unix.Getsid(h.PID); err != nil || sid != h.PID {
		t.Errorf("getsid(%d) = %d, %v: QEMU is not in its own session", h.PID, sid, err)
	}
	vmmtest.CheckConfined(t, h.PID)
	st, err := e.State(context.Background(), h)
	if err != nil || st != vmm.StateRunning {
		t.Errorf("State = %q, %v; want running", st, err)
	}
	t0 := time.Now()
	log := waitSerial(t, spec.SerialLog, "BANGER-READY", 90*time.Second)
	t.Logf("guest ready %v after Start returned", time.Since(t0))
	for _, want := range []string{
		"Linux version 6.1", "BANGER-DISKS vda=root vdb=work", "BANGER-MAC " + spec.MAC,
		"BANGER-PORT org.banger.agent", "button=/dev/input/event",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("serial log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "BANGER-INSMOD-FAILED") {
		t.Errorf("a module failed to load:\n%s", log)
	}
}

func checkGone(t *testing.T, e *Engine, h vmm.Handles) {
	t.Helper()
	if e.Alive(h) {
		t.Errorf("pid %d alive after Stop", h.PID)
	}
	if s, err := proc.State(h.PID); err == nil && s != 'Z' {
		t.Errorf("pid %d still in /proc with state %c", h.PID, s)
	}
	if st, err := e.State(context.Background(), h); err != nil || st != vmm.StateStopped {
		t.Errorf("State after Stop = %q, %v", st, err)
	}
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left after Stop", p)
		}
	}
}

func waitSerial(t *testing.T, path, marker string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), marker) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the serial log within %v:\n%s", marker, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hostTSCkHz reads "cpu MHz" from /proc/cpuinfo.
func hostTSCkHz(t *testing.T) int {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(mhz * 1000)
			}
		}
	}
	t.Fatal("no cpu MHz in /proc/cpuinfo")
	return 0
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
