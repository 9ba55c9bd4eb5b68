// Command bench-create measures VM creates on this host: N creates with
// per-stage timings, create → agent ready, create → SSH answering, and the
// host-side overhead (request received → engine process started, guest boot
// excluded); p50/p95/max as a table or --json. It names the engine and
// whether KVM or software emulation ran the guests, so figures from
// different hosts are never confused.
//
// It runs a private daemon in its own network namespace and state dir with
// the cached test image, and removes everything afterwards. Needs root and
// bin/ built:
//
//	make bench-create ARGS="--runs 10 [--json] [--no-ssh]"
//	make bench-create ARGS="--runs 20 --no-boot"
//	make bench-create ARGS="--runs 3 --vm-run"
//	make bench-create ARGS="--runs 5 --mode cold,fork,warm [--density 8] [--json]"
//
// --no-boot measures only the host side: each create is a --no-wait create
// (the operation ends once the engine process runs) followed at once by a
// delete, so 20 creates need no 20 guest boots.
//
// --vm-run times the whole `banger vm run --image X -- true` (the CLI: create,
// boot, agent ready, exec, delete) on the test image and on its opencode
// variant, alternating, and prints both side by side: vm run waits for the
// agent only, so the two should differ only by noise.
//
// --mode cold,fork,warm compares starting a VM three ways, interleaved run
// by run: cold (vm create --cold: a boot), fork (vm fork of one snapshot of
// a running parent, taken once) and warm (vm create of the test image after
// image warm: a restore). Per mode: create → agent ready (from the
// operation's stage timings), create → first command (vm exec … true
// answering) and, for cold and warm, a whole vm run -- true; p50/min/max
// side by side and the cold/fork and cold/warm ratios. --density N forks N
// idle VMs from the snapshot in one go (no more than MemAvailable allows),
// waits 10 s and reports each engine's PSS and private memory
// (/proc/<pid>/smaps_rollup), MemAvailable before and after and the time to
// fork them. Everything is deleted at the end, after a failure or Ctrl-C.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/testimage"
)

const nsEnv = "BANGER_BENCH_NS"

// benchExtraConfig is appended to the bench daemon's config (--tcg-fork-cache).
var benchExtraConfig string

func main() {
	runs := flag.Int("runs", 5, "number of creates")
	asJSON := flag.Bool("json", false, "print JSON instead of a table")
	noSSH := flag.Bool("no-ssh", false, "skip the create → SSH measurement")
	noBoot := flag.Bool("no-boot", false, "host side only: create --no-wait, delete at once (no guest boots)")
	vmRun := flag.Bool("vm-run", false, "time `banger vm run -- true` on the test image and its opencode variant, side by side")
	modeFlag := flag.String("mode", modeCold, "with cold,fork,warm: compare a boot, a fork of a snapshot and a warm image's restore, side by side")
	forkCache := flag.String("tcg-fork-cache", "", "the config's tcg_fork_cache for this run (e.g. 32MiB: smaller forks, slower first second)")
	density := flag.Int("density", 0, "fork N idle VMs from one snapshot and report each one's PSS/private memory and MemAvailable")
	flag.Parse()
	if *forkCache != "" {
		benchExtraConfig = fmt.Sprintf("tcg_fork_cache = %q\n", *forkCache)
	}
	if *runs < 1 {
		fail("--runs must be at least 1")
	}
	modes, err := parseModes(*modeFlag)
	if err != nil {
		fail(err.Error())
	}
	if *density < 0 || *density > api.MaxForkCount {
		fail(fmt.Sprintf("--density %d is not from 0 to %d", *density, api.MaxForkCount))
	}
	modeSet := false
	flag.Visit(func(f *flag.Flag) { modeSet = modeSet || f.Name == "mode" || f.Name == "density" })
	if os.Geteuid() != 0 {
		fail("bench-create needs root (it runs a daemon, taps and guests): sudo make bench-create")
	}
	if os.Getenv(nsEnv) == "" {
		os.Exit(reexecInNetns())
	}
	if *vmRun {
		if err := benchVMRun(*runs, *asJSON); err != nil {
			fail(err.Error())
		}
		return
	}
	if modeSet {
		res, err := benchModes(*runs, modes, *density)
		if err != nil {
			fail(err.Error())
		}
		if *asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			enc.Encode(res)
			return
		}
		printModes(os.Stdout, res)
		return
	}
	res, err := bench(*runs, !*noSSH && !*noBoot, *noBoot)
	if err != nil {
		fail(err.Error())
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
		return
	}
	printTable(res)
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench-create:", msg)
	os.Exit(1)
}

// reexecInNetns runs this program again inside a fresh network namespace
// (so the bench never touches the host's interfaces) and removes it after.
func reexecInNetns() int {
	b := make([]byte, 3)
	rand.Read(b)
	ns := "bgr-b" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		fail(fmt.Sprintf("ip netns add: %v %s", err, out))
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	self, _ := os.Executable()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, self}, os.Args[1:]...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), nsEnv+"="+ns)
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}

// Result is the --json output.
type Result struct {
	Host       string             `json:"host"`
	Engine     string             `json:"engine"`
	Accel      string             `json:"accel"`
	DiskDriver string             `json:"disk_driver"`
	Runs       int                `json:"runs"`
	NoBoot     bool               `json:"no_boot,omitempty"`
	Stages     map[string]Summary `json:"stages"`
	// HostOverhead: request received (the operation's start) → engine
	// process started (the end of the engine stage): validation, allocate,
	// system disk, work disk, network, engine.
	HostOverhead Summary `json:"host_overhead"`
	// CreateReady is the client's view: create request → operation done
	// (agent ready; with --no-boot, engine started).
	CreateReady Summary  `json:"create_to_agent_ready"`
	CreateSSH   Summary  `json:"create_to_ssh,omitzero"`
	Delete      Summary  `json:"delete"`
	StageOrder  []string `json:"stage_order"`
}

// Summary is min/p50/p95/max of a measurement, in milliseconds.
type Summary struct {
	Min float64 `json:"min_ms"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	Max float64 `json:"max_ms"`
	N   int     `json:"n"`
}

// benchEnv is a private daemon with the test images registered.
type benchEnv struct {
	c     *client.Client
	cfg   config.Config
	state string
	bin   string
}

// startBench starts a private daemon in a temp state dir and registers each
// image under its name. close removes everything.
func startBench(ctx context.Context, images map[string]api.Image) (*benchEnv, error) {
	state, err := os.MkdirTemp("/tmp", "bgr-bench-")
	if err != nil {
		return nil, err
	}
	root, _ := os.Getwd()
	bin := filepath.Join(root, "bin")
	cfgPath := filepath.Join(state, "config.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`state_dir = %q
socket_path = %q
tap_pool_size = 2
memory = "512MiB"
vcpus = 1
disk_size = "1GiB"
ready_timeout = "240s"
agent_bin = %q
ssh_key_path = %q
%s`, state, filepath.Join(state, "bangerd.sock"), filepath.Join(bin, "banger-agent"),
		testimage.KeyPath(testimage.CacheDir()), benchExtraConfig)), 0o600)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	os.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	c, err := client.EnsureDaemon(ctx, cfg, os.Stderr)
	if err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	b := &benchEnv{c: c, cfg: cfg, state: state, bin: bin}
	for name, img := range images {
		op, err := c.RegisterImage(ctx, api.ImageRegisterRequest{Name: name, Kernel: img.Kernel, Initrd: img.Initrd,
			Rootfs: img.Rootfs, WorkSeed: img.WorkSeed, Vmlinux: img.Vmlinux})
		if err == nil {
			_, err = c.Follow(ctx, op, nil)
		}
		if err != nil {
			b.close(ctx)
			return nil, fmt.Errorf("registering the test image as %s: %w", name, err)
		}
	}
	return b, nil
}

func (b *benchEnv) close(ctx context.Context) { cleanup(ctx, b.c, b.state) }

func bench(runs int, withSSH, noBoot bool) (*Result, error) {
	ctx := context.Background()
	img, err := testimage.Ensure(ctx, testimage.CacheDir(), nil)
	if err != nil {
		return nil, fmt.Errorf("test image: %w", err)
	}
	b, err := startBench(ctx, map[string]api.Image{"bench": img})
	if err != nil {
		return nil, err
	}
	defer b.close(ctx)
	c, cfg := b.c, b.cfg
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	res := &Result{Host: host, Engine: st.Engine, Accel: st.Accel, DiskDriver: st.DiskDriver, Runs: runs, NoBoot: noBoot, Stages: map[string]Summary{}}
	samples := map[string][]float64{}
	var overhead, ready, sshT, del []float64
	for i := 0; i < runs; i++ {
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		op, err := c.CreateVM(ctx, api.VMCreateRequest{Name: name, Image: "bench", NoWait: noBoot})
		if err == nil {
			op, err = c.Follow(ctx, op, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		ready = append(ready, ms(time.Since(start)))
		oh := -1.0
		for _, s := range op.Stages {
			if len(samples[s.Name]) == 0 && i == 0 {
				res.StageOrder = append(res.StageOrder, s.Name)
			}
			samples[s.Name] = append(samples[s.Name], ms(s.Duration))
			if s.Name == "engine" {
				oh = ms(s.Started.Add(s.Duration).Sub(op.Started))
			}
		}
		if oh < 0 {
			return nil, fmt.Errorf("create %s: no engine stage in %+v", name, op.Stages)
		}
		overhead = append(overhead, oh)
		if withSSH {
			d, err := c.GetVM(ctx, name)
			if err != nil {
				return nil, err
			}
			if err := waitSSH(ctx, cfg, d.VM, 120*time.Second); err != nil {
				return nil, fmt.Errorf("ssh to %s: %w", name, err)
			}
			sshT = append(sshT, ms(time.Since(start)))
		}
		ds := time.Now()
		dop, err := c.DeleteVM(ctx, name)
		if err == nil {
			_, err = c.Follow(ctx, dop, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("delete %s: %w", name, err)
		}
		del = append(del, ms(time.Since(ds)))
		fmt.Fprintf(os.Stderr, "run %d/%d: done in %.1fs, host overhead %.1fms\n", i+1, runs, ready[i]/1000, oh)
	}
	for k, v := range samples {
		res.Stages[k] = summarize(v)
	}
	res.HostOverhead, res.CreateReady, res.Delete = summarize(overhead), summarize(ready), summarize(del)
	if withSSH {
		res.CreateSSH = summarize(sshT)
	}
	return res, nil
}

func cleanup(ctx context.Context, c *client.Client, state string) {
	c.Shutdown(ctx)
	time.Sleep(500 * time.Millisecond)
	exec.Command("umount", "-l", filepath.Join(state, "pool")).Run()
	out, _ := exec.Command("losetup", "-j", filepath.Join(state, "pool.img")).Output()
	for _, line := range strings.Split(string(out), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok {
			exec.Command("losetup", "-d", dev).Run()
		}
	}
	os.RemoveAll(state)
}
