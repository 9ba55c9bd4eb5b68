package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/testimage"
)

// ModeResult is the --mode/--density --json output.
type ModeResult struct {
	Host       string   `json:"host"`
	Engine     string   `json:"engine"`
	Accel      string   `json:"accel"`
	DiskDriver string   `json:"disk_driver"`
	Runs       int      `json:"runs"`
	Modes      []string `json:"modes"`
	// Measures: mode → measure → summary (ms). "create → agent ready" is
	// read from the operation's stage timings; Exact says whether every
	// sample had an agent-ready stage (else the operation's duration).
	Measures map[string]map[string]Summary `json:"measures"`
	Exact    map[string]bool               `json:"ready_from_stages"`
	// Ratios: measure → cold p50 / fork p50 (and cold / warm).
	Ratios map[string]map[string]float64 `json:"ratios,omitempty"`
	// The one-off setups: snapshot create (and how long the parent was
	// paused), image warm.
	SnapshotMillis float64        `json:"snapshot_create_ms,omitempty"`
	PausedMillis   int64          `json:"snapshot_paused_ms,omitempty"`
	SnapshotBytes  int64          `json:"snapshot_size_bytes,omitempty"`
	WarmMillis     float64        `json:"image_warm_ms,omitempty"`
	Density        *DensityResult `json:"density,omitempty"`
}

// DensityResult is --density: N idle forks of one snapshot.
type DensityResult struct {
	Requested  int     `json:"requested"`
	Forked     int     `json:"forked"`
	CappedBy   string  `json:"capped_by,omitempty"`
	ForkMillis float64 `json:"fork_ms"`
	// MemAvailable (KiB) before the fork and after the 10 s idle.
	AvailBeforeKiB int64      `json:"mem_available_before_kib"`
	AvailAfterKiB  int64      `json:"mem_available_after_kib"`
	VMs            []vmMem    `json:"vms"`
	PSS            MemSummary `json:"pss"`
	Private        MemSummary `json:"private"`
}

type vmMem struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	procMem
}

// modeBench is one run of the modes: a private daemon, what was made (for
// the cleanup) and the samples.
type modeBench struct {
	*benchEnv
	ctx     context.Context
	samples map[string]map[string][]float64
	inexact map[string]bool
}

// benchModes runs cold/fork/warm side by side (interleaved run by run, so
// host noise falls on all alike) and --density. Everything it creates is
// deleted at the end, on failure and on Ctrl-C.
func benchModes(runs int, modes []string, density int) (*ModeResult, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	img, err := testimage.Ensure(ctx, testimage.CacheDir(), nil)
	if err != nil {
		return nil, fmt.Errorf("test image: %w", err)
	}
	b, err := startBench(ctx, map[string]api.Image{"bench": img})
	if err != nil {
		return nil, err
	}
	defer b.close(context.Background())
	defer deleteAll(b.c) // before close: engines outlive their daemon
	m := &modeBench{benchEnv: b, ctx: ctx, samples: map[string]map[string][]float64{}, inexact: map[string]bool{}}
	st, err := b.c.Status(ctx)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	res := &ModeResult{Host: host, Engine: st.Engine, Accel: st.Accel, DiskDriver: st.DiskDriver, Runs: runs, Modes: modes,
		Measures: map[string]map[string]Summary{}, Exact: map[string]bool{}}

	const snap = "bench-snap"
	if has(modes, modeFork) || density > 0 {
		if err := m.createVM(api.VMCreateRequest{Name: "bench-parent", Image: "bench", Cold: true}); err != nil {
			return nil, fmt.Errorf("parent VM: %w", err)
		}
		start := time.Now()
		var s api.Snapshot
		if err := m.opResult(func() (api.Operation, error) {
			return b.c.CreateSnapshot(ctx, api.SnapshotCreateRequest{VM: "bench-parent", Name: snap})
		}, &s); err != nil {
			return nil, fmt.Errorf("snapshot create: %w", err)
		}
		res.SnapshotMillis, res.PausedMillis, res.SnapshotBytes = ms(time.Since(start)), s.PausedMillis, s.SizeBytes
		fmt.Fprintf(os.Stderr, "snapshot %s: %.1fs (paused %dms, %d MiB)\n", snap, res.SnapshotMillis/1000, s.PausedMillis, s.SizeBytes>>20)
	}
	if has(modes, modeWarm) {
		start := time.Now()
		if err := m.opResult(func() (api.Operation, error) {
			return b.c.WarmImage(ctx, api.ImageWarmRequest{Image: "bench"})
		}, &api.Snapshot{}); err != nil {
			return nil, fmt.Errorf("image warm: %w", err)
		}
		res.WarmMillis = ms(time.Since(start))
		fmt.Fprintf(os.Stderr, "image warm: %.1fs\n", res.WarmMillis/1000)
	}
	for i := 0; i < runs; i++ {
		for _, mode := range modes {
			if err := m.run(mode, snap, i); err != nil {
				return nil, fmt.Errorf("%s run %d: %w", mode, i+1, err)
			}
		}
	}
	for mode, ms := range m.samples {
		res.Measures[mode] = map[string]Summary{}
		for measure, v := range ms {
			res.Measures[mode][measure] = summarize(v)
		}
		res.Exact[mode] = !m.inexact[mode]
	}
	if cold, ok := res.Measures[modeCold]; ok {
		res.Ratios = map[string]map[string]float64{}
		for _, other := range []string{modeFork, modeWarm} {
			o, ok := res.Measures[other]
			if !ok {
				continue
			}
			res.Ratios["cold/"+other] = map[string]float64{}
			for _, measure := range measureOrder {
				if r := ratio(cold[measure], o[measure]); r > 0 {
					res.Ratios["cold/"+other][measure] = r
				}
			}
		}
	}
	if density > 0 {
		if res.Density, err = m.density(snap, density); err != nil {
			return nil, fmt.Errorf("density: %w", err)
		}
	}
	return res, nil
}

func has(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (m *modeBench) add(mode, measure string, v float64) {
	if m.samples[mode] == nil {
		m.samples[mode] = map[string][]float64{}
	}
	m.samples[mode][measure] = append(m.samples[mode][measure], v)
}

// run is one sample of a mode: start a VM, time agent ready (from the
// operation's stages) and the first command, delete it; cold and warm also
// time a whole `vm run -- true`.
func (m *modeBench) run(mode, snap string, i int) error {
	name := fmt.Sprintf("bench-%s-%d", mode, i)
	start := time.Now()
	var op api.Operation
	var err error
	switch mode {
	case modeCold:
		op, err = m.c.CreateVM(m.ctx, api.VMCreateRequest{Name: name, Image: "bench", Cold: true})
	case modeWarm:
		op, err = m.c.CreateVM(m.ctx, api.VMCreateRequest{Name: name, Image: "bench"})
	case modeFork:
		op, err = m.c.ForkVM(m.ctx, api.VMForkRequest{Source: snap, Name: name})
	}
	if err == nil {
		op, err = m.c.Follow(m.ctx, op, nil)
	}
	if err != nil {
		return err
	}
	ready, exact := readyMillis(op, name)
	if !exact {
		m.inexact[mode] = true
	}
	m.add(mode, measureReady, ready)
	if err := m.cli(90*time.Second, "vm", "exec", name, "--", "true"); err != nil {
		return fmt.Errorf("first command in %s: %w", name, err)
	}
	first := ms(time.Since(start))
	m.add(mode, measureFirstCmd, first)
	if err := m.deleteVM(name); err != nil {
		return err
	}
	line := fmt.Sprintf("%-5s %d: agent ready %.2fs, first command %.2fs", mode, i+1, ready/1000, first/1000)
	if mode != modeFork {
		args := []string{"vm", "run", "--image", "bench"}
		if mode == modeCold {
			args = append(args, "--cold")
		}
		start := time.Now()
		if err := m.cli(5*time.Minute, append(args, "--", "true")...); err != nil {
			return fmt.Errorf("vm run (%s): %w", mode, err)
		}
		m.add(mode, measureVMRun, ms(time.Since(start)))
		line += fmt.Sprintf(", vm run %.2fs", ms(time.Since(start))/1000)
	}
	fmt.Fprintln(os.Stderr, line)
	return nil
}

// cli runs the real banger CLI against the private daemon; exec retries
// until the guest answers or timeout.
func (m *modeBench) cli(timeout time.Duration, args ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		cmd := exec.CommandContext(m.ctx, filepath.Join(m.bin, "banger"), append([]string{"--config", m.cfg.Path}, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if args[1] != "exec" || time.Now().After(deadline) || m.ctx.Err() != nil {
			return fmt.Errorf("banger %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *modeBench) opResult(begin func() (api.Operation, error), out any) error {
	op, err := begin()
	if err == nil {
		op, err = m.c.Follow(m.ctx, op, nil)
	}
	if err != nil {
		return err
	}
	if op.State != api.OpSucceeded {
		return fmt.Errorf("%s %s", op.Kind, op.State)
	}
	return json.Unmarshal(op.Result, out)
}

func (m *modeBench) createVM(req api.VMCreateRequest) error {
	return m.opResult(func() (api.Operation, error) { return m.c.CreateVM(m.ctx, req) }, &api.VM{})
}

func (m *modeBench) deleteVM(name string) error {
	op, err := m.c.DeleteVM(m.ctx, name)
	if err == nil {
		_, err = m.c.Follow(m.ctx, op, nil)
	}
	return err
}

// density forks n idle VMs from snap in one operation, lets them idle 10 s
// and reads each engine's memory from /proc, then deletes them.
func (m *modeBench) density(snap string, want int) (*DensityResult, error) {
	s, err := m.c.GetSnapshot(m.ctx, snap)
	if err != nil {
		return nil, err
	}
	before, err := memAvailable()
	if err != nil {
		return nil, err
	}
	n, why := densityCap(want, before, s.MemoryMiB)
	d := &DensityResult{Requested: want, Forked: n, CappedBy: why, AvailBeforeKiB: before}
	if n < 1 {
		return d, fmt.Errorf("no room for a single fork (%s)", why)
	}
	if why != "" {
		fmt.Fprintf(os.Stderr, "density: forking %d, not %d (%s)\n", n, want, why)
	}
	start := time.Now()
	var fr api.VMForkResult
	if err := m.opResult(func() (api.Operation, error) {
		return m.c.ForkVM(m.ctx, api.VMForkRequest{Source: snap, Count: n, Name: "bench-dense"})
	}, &fr); err != nil {
		return d, err
	}
	d.ForkMillis = ms(time.Since(start))
	fmt.Fprintf(os.Stderr, "density: %d forks in %.1fs; idling 10s\n", len(fr.VMs), d.ForkMillis/1000)
	select {
	case <-time.After(10 * time.Second):
	case <-m.ctx.Done():
		return d, m.ctx.Err()
	}
	var pss, priv []float64
	for _, vm := range fr.VMs {
		det, err := m.c.GetVM(m.ctx, vm.Name)
		if err != nil {
			return d, err
		}
		if det.Handles == nil || det.Handles.PID <= 0 {
			return d, fmt.Errorf("vm %s has no engine pid in vm show", vm.Name)
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", det.Handles.PID))
		if err != nil {
			return d, err
		}
		pm, err := parseSmapsRollup(f)
		f.Close()
		if err != nil {
			return d, fmt.Errorf("pid %d: %w", det.Handles.PID, err)
		}
		d.VMs = append(d.VMs, vmMem{Name: vm.Name, PID: det.Handles.PID, procMem: pm})
		pss, priv = append(pss, float64(pm.PSSKiB)), append(priv, float64(pm.PrivateKiB))
	}
	if d.AvailAfterKiB, err = memAvailable(); err != nil {
		return d, err
	}
	d.PSS, d.Private = summarizeKiB(pss), summarizeKiB(priv)
	for _, vm := range fr.VMs {
		if err := m.deleteVM(vm.Name); err != nil {
			return d, err
		}
	}
	return d, nil
}

func memAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseMemAvailable(f)
}

// deleteAll deletes every VM, snapshot and warm snapshot of the private
// daemon (it holds nothing else), with a fresh context: it runs after a
// failure or Ctrl-C too.
func deleteAll(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vms, _ := c.ListVMs(ctx)
	for _, vm := range vms {
		if op, err := c.DeleteVM(ctx, vm.Name); err == nil {
			_, _ = c.Follow(ctx, op, nil)
		}
	}
	imgs, _ := c.ListImages(ctx)
	for _, img := range imgs {
		if img.Warm != nil {
			_ = c.UnwarmImage(ctx, img.Name)
		}
	}
	snaps, _ := c.ListSnapshots(ctx)
	for _, s := range snaps {
		if err := c.DeleteSnapshot(ctx, s.Name); err != nil {
			fmt.Fprintf(os.Stderr, "bench-create: deleting snapshot %s: %v\n", s.Name, err)
		}
	}
}

// printModes writes the side-by-side table: per measure, each mode's
// p50/min/max, then the cold/fork (cold/warm) ratios of the p50s.
func printModes(w io.Writer, r *ModeResult) {
	accel := r.Accel
	if accel == "tcg" {
		accel = "tcg (software emulation — not comparable with KVM hosts)"
	}
	fmt.Fprintf(w, "bench-create --mode %s on %s: engine %s, accel %s, disk %s, %d runs\n", strings.Join(r.Modes, ","),
		r.Host, r.Engine, accel, r.DiskDriver, r.Runs)
	if r.SnapshotMillis > 0 {
		fmt.Fprintf(w, "snapshot create %s (parent paused %dms, %s on disk)\n", fmtMS(r.SnapshotMillis), r.PausedMillis, fmtMiB(r.SnapshotBytes>>10))
	}
	if r.WarmMillis > 0 {
		fmt.Fprintf(w, "image warm %s\n", fmtMS(r.WarmMillis))
	}
	fmt.Fprintln(w)
	head := fmt.Sprintf("%-24s", "measure")
	for _, mode := range r.Modes {
		head += fmt.Sprintf(" %-26s", mode+" p50 (min–max)")
	}
	var ratioKeys []string
	for _, other := range []string{modeFork, modeWarm} {
		if _, ok := r.Ratios["cold/"+other]; ok {
			ratioKeys = append(ratioKeys, "cold/"+other)
			head += fmt.Sprintf(" %10s", "cold/"+other)
		}
	}
	fmt.Fprintln(w, strings.TrimRight(head, " "))
	for _, measure := range measureOrder {
		line := fmt.Sprintf("%-24s", measure)
		any := false
		for _, mode := range r.Modes {
			s, ok := r.Measures[mode][measure]
			cell := "-"
			if ok && s.N > 0 {
				cell, any = fmt.Sprintf("%s (%s–%s)", fmtMS(s.P50), fmtMS(s.Min), fmtMS(s.Max)), true
			}
			line += fmt.Sprintf(" %-26s", cell)
		}
		for _, k := range ratioKeys {
			cell := "-"
			if v := r.Ratios[k][measure]; v > 0 {
				cell = fmt.Sprintf("%.1f×", v)
			}
			line += fmt.Sprintf(" %10s", cell)
		}
		if any {
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
	}
	for _, mode := range r.Modes {
		if !r.Exact[mode] {
			fmt.Fprintf(w, "(%s: no agent-ready stage reported; create → agent ready is the whole operation)\n", mode)
		}
	}
	if d := r.Density; d != nil {
		fmt.Fprintf(w, "\ndensity: %d idle forks (asked %d", d.Forked, d.Requested)
		if d.CappedBy != "" {
			fmt.Fprintf(w, "; capped by %s", d.CappedBy)
		}
		fmt.Fprintf(w, ") started in %s\n", fmtMS(d.ForkMillis))
		fmt.Fprintf(w, "  per VM after 10s idle: PSS p50 %s (min %s, max %s), private p50 %s (min %s, max %s)\n",
			fmtMiB(int64(d.PSS.P50)), fmtMiB(int64(d.PSS.Min)), fmtMiB(int64(d.PSS.Max)),
			fmtMiB(int64(d.Private.P50)), fmtMiB(int64(d.Private.Min)), fmtMiB(int64(d.Private.Max)))
		fmt.Fprintf(w, "  host MemAvailable %s before, %s after (%s used)\n",
			fmtMiB(d.AvailBeforeKiB), fmtMiB(d.AvailAfterKiB), fmtMiB(d.AvailBeforeKiB-d.AvailAfterKiB))
	}
}

// fmtMiB prints KiB as MiB.
func fmtMiB(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }
