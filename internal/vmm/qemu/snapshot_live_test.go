package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/testimage"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// attackEnv makes the test binary the attacker: as a child's uid, open the
// file named in the variable (a child QEMU's template fd in /proc) and try
// to change it; print what each attempt gave as JSON.
const attackEnv = "BANGER_QEMU_TEST_ATTACK"

func runAttack(path string) int {
	res := map[string]string{}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		res["open"] = err.Error()
	} else {
		res["open"] = "ok"
		if _, err := f.WriteAt([]byte("POISON"), 4096); err != nil {
			res["pwrite"] = err.Error()
		} else {
			res["pwrite"] = "ok"
		}
		if b, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			res["mmap_shared_write"] = err.Error()
		} else {
			res["mmap_shared_write"] = "ok"
			_ = unix.Munmap(b)
		}
		if err := f.Truncate(4096); err != nil {
			res["ftruncate"] = err.Error()
		} else {
			res["ftruncate"] = "ok"
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// attack runs the attacker as uid against path.
func attack(t *testing.T, uid int, path string) map[string]string {
	t.Helper()
	// The test binary may sit in a dir only root can walk (go test's
	// build dir): the attacker runs a copy the uid can execute.
	dir, err := os.MkdirTemp("", "banger-attacker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "attacker")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), attackEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("attacker: %v", err)
	}
	res := map[string]string{}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("attacker output %q: %v", out, err)
	}
	return res
}

// snapEnv is the live snapshot test's world: the test image, taps in one
// netns, a tmpfs dir for RAM files.
type snapEnv struct {
	img    api.Image
	engine *Engine
	cfg    Config
	memDir string
	n      int
}

func (s *snapEnv) spec(t *testing.T, name string, disks [2]string) vmm.Spec {
	s.n++
	dir := t.TempDir()
	return vmm.Spec{
		Name: name, VMDir: dir, VCPUs: 1, MemoryMiB: 512, UID: testUID, GID: testUID,
		Kernel: s.img.Kernel, Initrd: s.img.Initrd, Cmdline: "root=/dev/vda rw systemd.hostname=" + name,
		Disks: []vmm.Disk{{ID: "root", Path: disks[0], Format: "qcow2"}, {ID: "work", Path: disks[1], Format: "raw"}},
		Tap:   fmt.Sprintf("bgs%d", s.n), MAC: fmt.Sprintf("06:00:ac:1e:01:%02x", s.n),
		APISocket: filepath.Join(dir, "qmp.sock"), AgentSocket: filepath.Join(dir, "agent.sock"),
		SerialLog: filepath.Join(dir, "serial.log"), EngineLog: filepath.Join(dir, "qemu.log"),
		MemoryFile: filepath.Join(s.memDir, name+".ram"),
	}
}

// TestIntegrationSnapshot: a guest on a shared RAM file is saved, resumed
// and restored twice; the children answer, are confined, share the
// template and cannot write it; the parent runs on without touching the
// snapshot.
func TestIntegrationSnapshot(t *testing.T) {
	requireBoot(t)
	s := &snapEnv{img: testimage.Get(t)}
	netns := tapInNetns(t, "bgs1")
	for i := 2; i <= 5; i++ {
		run(t, "ip", "-n", filepath.Base(netns), "tuntap", "add", "dev", fmt.Sprintf("bgs%d", i), "mode", "tap")
	}
	s.cfg = Config{Binary: DefaultBinary, Accel: "tcg", TSCkHz: hostTSCkHz(t), TapNetns: netns}
	s.engine = New(s.cfg)
	var err error
	if s.memDir, err = os.MkdirTemp("/dev/shm", "banger-t-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.memDir) })
	ctx := t.Context()
	e := s.engine
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(old) })

	// The parent: booted cold on a shared RAM file.
	work := t.TempDir()
	overlay := [2]string{filepath.Join(work, "parent.qcow2"), filepath.Join(work, "parent-work.ext4")}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", s.img.Rootfs, "-F", "raw", overlay[0])
	run(t, "cp", "--sparse=always", s.img.WorkSeed, overlay[1])
	pspec := s.spec(t, "snapparent", overlay)
	t0 := time.Now()
	ph := startOrFail(t, e, pspec)
	if ph.Extra["ram"] != ramFile {
		t.Fatalf("parent handles %v: want ram=file", ph.Extra)
	}
	if st, err := os.Stat(pspec.MemoryFile); err != nil || st.Size() != 512<<20 || st.Sys().(*syscall.Stat_t).Uid != testUID || st.Mode().Perm() != 0o600 {
		t.Fatalf("memory file: %v %v", st, err)
	}
	pag := dialAgent(ctx, t, pspec.AgentSocket, 180*time.Second)
	t.Logf("parent: agent healthy %v after Start (cold boot)", time.Since(t0).Round(time.Millisecond))
	guestSh(t, pag, "echo before-snapshot > /dev/shm/marker1")
	parentMAC := strings.TrimSpace(guestSh(t, pag, "cat /sys/class/net/eth0/address"))

	// Pause → Save → copy the disk → Resume.
	snapDir := t.TempDir()
	t1 := time.Now()
	if err := e.Pause(ctx, ph); err != nil {
		t.Fatal(err)
	}
	tPause := time.Since(t1)
	snap, err := e.Save(ctx, ph, snapDir)
	if err != nil {
		t.Fatal(err)
	}
	tSave := time.Since(t1) - tPause
	disks := make([][2]string, 4)
	for i := range disks {
		for j, ext := range []string{"qcow2", "ext4"} {
			disks[i][j] = filepath.Join(work, fmt.Sprintf("child%d-%d.%s", i, j, ext))
			run(t, "cp", "--sparse=always", overlay[j], disks[i][j])
		}
	}
	t2 := time.Now()
	if err := e.Resume(ctx, ph); err != nil {
		t.Fatal(err)
	}
	t.Logf("pause: stop %v + save %v (+ disk copies %v) + cont %v = %v paused",
		tPause.Round(time.Millisecond), tSave.Round(time.Millisecond), t2.Sub(t1.Add(tPause+tSave)).Round(time.Millisecond),
		time.Since(t2).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	t.Logf("snapshot: %+v; state %d bytes, memory %d bytes apparent, %d allocated", snap, snap.StateSize, snap.MemorySize, allocated(t, snap.Memory))
	if snap.Memory == "" || snap.MemorySize != 512<<20 || snap.StateSize == 0 || snap.StateSize > 4<<20 || snap.VCPUs != 1 || snap.MemoryMiB != 512 || snap.Accel != "tcg" || snap.Version == "" {
		t.Fatalf("snapshot = %+v", snap)
	}
	for _, p := range []string{snap.State, snap.Memory} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o400 || st.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: %v %v, want root's 0400", p, st, err)
		}
	}
	// The parent runs on and writes into its RAM after the snapshot.
	guestSh(t, pag, "echo after-snapshot > /dev/shm/marker2; dd if=/dev/urandom of=/dev/shm/noise bs=1M count=32 2>/dev/null")
	if st, err := e.State(ctx, ph); err != nil || st != vmm.StateRunning {
		t.Fatalf("parent state after Resume = %v, %v", st, err)
	}

	// Two children from the snapshot.
	var kids []vmm.Handles
	var kidSpecs []vmm.Spec
	for i := 0; i < 2; i++ {
		cspec := s.spec(t, fmt.Sprintf("snapchild%d", i), disks[i])
		t3 := time.Now()
		ch, err := e.Restore(ctx, cspec, snap)
		if err != nil {
			t.Fatalf("Restore child %d: %v", i, err)
		}
		tRun := time.Since(t3)
		t.Cleanup(func() { _ = e.Kill(context.Background(), ch) })
		ag := dialAgent(ctx, t, cspec.AgentSocket, 60*time.Second)
		t.Logf("child %d: Restore → running %v, → agent health %v", i, tRun.Round(time.Millisecond), time.Since(t3).Round(time.Millisecond))
		if st, err := e.State(ctx, ch); err != nil || st != vmm.StateRunning {
			t.Errorf("child %d state = %v, %v", i, st, err)
		}
		vmmtest.CheckConfined(t, ch.PID)
		if ch.Extra["ram"] != ramTemplate {
			t.Errorf("child handles %v: want ram=template", ch.Extra)
		}
		if _, err := os.Stat(cspec.MemoryFile); err == nil {
			t.Errorf("child %d made a memory file %s though it maps the template", i, cspec.MemoryFile)
		}
		if got := guestSh(t, ag, "cat /dev/shm/marker1"); got != "before-snapshot\n" {
			t.Errorf("child %d: marker1 = %q, want the parent's RAM from before the snapshot", i, got)
		}
		if got := guestSh(t, ag, "cat /dev/shm/marker2 2>&1 || true"); strings.Contains(got, "after-snapshot") {
			t.Errorf("child %d sees the parent's write after the snapshot: %q", i, got)
		}
		mac := strings.TrimSpace(guestSh(t, ag, "cat /sys/class/net/eth0/address"))
		t.Logf("child %d: guest MAC %s, QEMU's %s (parent's %s, child's command line %s)", i, mac, qemuMAC(t, cspec.APISocket), parentMAC, cspec.MAC)
		if i == 1 { // what the orchestrator's identity reset does: the guest sets its MAC, QEMU follows
			guestSh(t, ag, "ip link set dev eth0 address "+cspec.MAC)
			mac = strings.TrimSpace(guestSh(t, ag, "cat /sys/class/net/eth0/address"))
			if q := qemuMAC(t, cspec.APISocket); mac != cspec.MAC || q != cspec.MAC {
				t.Errorf("after ip link set: guest MAC %s, QEMU's %s; want %s", mac, q, cspec.MAC)
			} else {
				t.Logf("child %d: after 'ip link set dev eth0 address %s' in the guest, QEMU's MAC is %s", i, cspec.MAC, q)
			}
		}
		guestSh(t, ag, fmt.Sprintf("echo child%d > /dev/shm/mine", i))
		ag.Close()
		kids, kidSpecs = append(kids, ch), append(kidSpecs, cspec)
	}
	if !e.Alive(ph) {
		t.Fatal("the parent died")
	}
	guestSh(t, pag, "true")

	// The snapshot's files are unaffected by the parent and children.
	for _, f := range []struct{ path, sum string }{{snap.State, snap.StateSHA256}, {snap.Memory, snap.MemorySHA256}} {
		if _, sum, err := hashFile(f.path); err != nil || sum != f.sum {
			t.Errorf("%s: SHA-256 %s, %v; Save said %s", f.path, sum, err, f.sum)
		}
	}

	// Attack: a child's uid writes the template through the child's fd.
	tfd := templateFD(t, kids[0].PID)
	res := attack(t, testUID, fmt.Sprintf("/proc/%d/fd/%d", kids[0].PID, tfd))
	t.Logf("attack on the sealed template: %v", res)
	for _, k := range []string{"pwrite", "mmap_shared_write", "ftruncate"} {
		if res[k] == "ok" || res[k] == "" {
			t.Errorf("attack: %s on the sealed template = %q, want refused", k, res[k])
		}
	}

	// Memory after 10 s idle.
	time.Sleep(10 * time.Second)
	for i, k := range kids {
		t.Logf("child %d memory: %s; its RAM mapping (the template, private): %s", i, rollup(t, k.PID), ramMapping(t, k.PID, "memfd:banger-snapshot-memory"))
	}
	t.Logf("parent memory: %s", rollup(t, ph.PID))

	// A child saves: its RAM is private, so it goes into the stream; a
	// grandchild restores it onto its own shared RAM file.
	dir2 := t.TempDir()
	if err := e.Pause(ctx, kids[0]); err != nil {
		t.Fatal(err)
	}
	t4 := time.Now()
	snap2, err := e.Save(ctx, kids[0], dir2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("child save (RAM in stream): %v, state %d bytes", time.Since(t4).Round(time.Millisecond), snap2.StateSize)
	for j := range 2 {
		run(t, "cp", "--sparse=always", disks[0][j], disks[2][j])
	}
	if err := e.Resume(ctx, kids[0]); err != nil {
		t.Fatal(err)
	}
	if snap2.Memory != "" || snap2.StateSize < 16<<20 {
		t.Errorf("child snapshot = %+v: want RAM in the stream", snap2)
	}
	gspec := s.spec(t, "snapgrand", disks[2])
	t5 := time.Now()
	gh, err := e.Restore(ctx, gspec, snap2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Kill(context.Background(), gh) })
	gag := dialAgent(ctx, t, gspec.AgentSocket, 60*time.Second)
	t.Logf("grandchild (full stream onto its own RAM file): Restore → agent health %v", time.Since(t5).Round(time.Millisecond))
	if got := guestSh(t, gag, "cat /dev/shm/mine"); got != "child0\n" || gh.Extra["ram"] != ramFile {
		t.Errorf("grandchild: /dev/shm/mine = %q, ram %q", got, gh.Extra["ram"])
	}
	gag.Close()
	if err := e.Kill(ctx, gh); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(gspec.MemoryFile); err == nil {
		t.Errorf("%s left after Kill", gspec.MemoryFile)
	}

	// Refused: the memory file replaced in place (the cache notices).
	bad := copySnapshot(t, snap)
	flipByte(t, bad.Memory, 100<<20)
	cspec := s.spec(t, "snaprefused", disks[3])
	if h, err := e.Restore(ctx, cspec, bad); err == nil || !api.IsFailedPrecondition(err) {
		_ = e.Kill(ctx, h)
		t.Errorf("Restore from a changed memory file = %v, want FailedPrecondition", err)
	} else {
		t.Logf("changed memory: %v", err)
	}
	checkNothingLeft(t, cspec)

	// Naive code: an unsealed template lets a child's uid poison it.
	sealTemplates = false
	naive := New(s.cfg)
	nspec := s.spec(t, "snapnaive", disks[3])
	nh, err := naive.Restore(ctx, nspec, snap)
	sealTemplates = true
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = naive.Kill(context.Background(), nh); naive.Forget(snap) })
	res = attack(t, testUID, fmt.Sprintf("/proc/%d/fd/%d", nh.PID, templateFD(t, nh.PID)))
	t.Logf("attack on an unsealed template (naive): %v", res)
	if res["pwrite"] != "ok" {
		t.Errorf("the naive attack did not succeed (%v): the sealed result proves nothing", res)
	}

	for i, k := range kids {
		if err := e.Stop(ctx, k, 5*time.Second); err != nil {
			t.Errorf("stopping child %d: %v", i, err)
		}
	}
	e.Forget(snap)
	_ = kidSpecs
	pag.Close()
	if err := e.Kill(ctx, ph); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pspec.MemoryFile); err == nil {
		t.Errorf("parent memory file left after Kill")
	}
}

func startOrFail(t *testing.T, e *Engine, spec vmm.Spec) vmm.Handles {
	t.Helper()
	h, err := e.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Kill(context.Background(), h)
		if t.Failed() {
			t.Logf("%s serial (tail):\n%s\nqemu log:\n%s", spec.Name, tailLines(readFileOr(spec.SerialLog), 30), readFileOr(spec.EngineLog))
		}
	})
	return h
}

func readFileOr(p string) string { b, _ := os.ReadFile(p); return string(b) }

func tailLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("qemu started")) {
		return len(p), nil // the argument list: long and in the golden files
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ramMapping sums /proc/pid/smaps over the mappings whose name contains
// name (kB).
func ramMapping(t *testing.T, pid int, name string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]int{}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = strings.Contains(line, name)
			continue
		}
		if in && len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.Atoi(f[1])
			sums[strings.TrimSuffix(f[0], ":")] += n
		}
	}
	return fmt.Sprintf("Rss %d kB, Pss %d kB, Shared_Clean %d kB, Private_Clean %d kB, Private_Dirty %d kB",
		sums["Rss"], sums["Pss"], sums["Shared_Clean"], sums["Private_Clean"], sums["Private_Dirty"])
}

// qemuMAC is the guest NIC's MAC as QEMU has it (query-rx-filter).
func qemuMAC(t *testing.T, sock string) string {
	t.Helper()
	q, err := dialQMP(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var fs []struct {
		MainMAC string `json:"main-mac"`
	}
	if err := q.call("query-rx-filter", nil, nil, &fs); err != nil || len(fs) != 1 {
		t.Fatalf("query-rx-filter: %v %v", fs, err)
	}
	return fs[0].MainMAC
}

// dialAgent dials the guest agent until it answers health.
func dialAgent(ctx context.Context, t *testing.T, sock string, timeout time.Duration) *agent.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		c, err := agent.DialSerial(ctx, sock)
		if err == nil {
			hctx, hcancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = c.Health(hctx)
			hcancel()
			if err == nil {
				return c
			}
			c.Close()
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("agent on %s did not answer within %v: %v", sock, timeout, lastErr)
	return nil
}

func guestSh(t *testing.T, c *agent.Client, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := c.Exec(ctx, api.ExecRequest{Argv: []string{"sh", "-c", script}}, nil, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("guest %q: code %d, %v, stderr %q", script, code, err, errb.String())
	}
	return out.String()
}

// templateFD finds the fd a child QEMU maps its template from.
func templateFD(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`mem-path=/proc/self/fd/(\d+),share=off`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no share=off mem-path in pid %d's command line", pid)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// rollup summarises /proc/pid/smaps_rollup (kB).
func rollup(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "Rss" || k == "Pss" || k == "Shared_Clean" || k == "Private_Clean" || k == "Private_Dirty") {
			parts = append(parts, k+" "+strings.Join(strings.Fields(v), " "))
		}
	}
	return strings.Join(parts, ", ")
}

func allocated(t *testing.T, path string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// copySnapshot copies snap's files into a new dir (writable copies).
func copySnapshot(t *testing.T, snap vmm.Snapshot) vmm.Snapshot {
	dir := t.TempDir()
	out := snap
	out.State, out.Memory = filepath.Join(dir, "state"), filepath.Join(dir, "memory")
	run(t, "cp", "--sparse=always", snap.State, out.State)
	run(t, "cp", "--sparse=always", snap.Memory, out.Memory)
	run(t, "chmod", "0600", out.State, out.Memory)
	return out
}

func flipByte(t *testing.T, path string, off int64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// checkNothingLeft: a refused Restore started no process and left no
// socket or memory file.
func checkNothingLeft(t *testing.T, spec vmm.Spec) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		if b, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline"); bytes.Contains(b, []byte(spec.SerialLog)) {
			t.Errorf("pid %s still runs for a refused Restore", d.Name())
		}
	}
	for _, p := range []string{spec.APISocket, spec.AgentSocket, spec.MemoryFile} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left by a refused Restore", p)
		}
	}
}
