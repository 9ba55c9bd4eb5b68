package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/testimage"
)

// VMRunResult is the --vm-run --json output: `banger vm run -- true` wall
// times per image, in milliseconds.
type VMRunResult struct {
	Engine string             `json:"engine"`
	Accel  string             `json:"accel"`
	Runs   int                `json:"runs"`
	Images map[string]Summary `json:"images"`
}

// benchVMRun runs the real CLI's vm run on the base and opencode test
// images, alternating so that host noise falls on both alike.
func benchVMRun(runs int, asJSON bool) error {
	ctx := context.Background()
	base, err := testimage.Ensure(ctx, testimage.CacheDir(), nil)
	if err != nil {
		return fmt.Errorf("test image: %w", err)
	}
	oc, err := testimage.EnsureOpencode(ctx, testimage.CacheDir(), nil)
	if err != nil {
		return fmt.Errorf("opencode test image: %w", err)
	}
	b, err := startBench(ctx, map[string]api.Image{"base": base, "opencode": oc})
	if err != nil {
		return err
	}
	defer b.close(ctx)
	st, err := b.c.Status(ctx)
	if err != nil {
		return err
	}
	order := []string{"base", "opencode"}
	times := map[string][]float64{}
	for i := 0; i < runs; i++ {
		for _, image := range order {
			start := time.Now()
			cmd := exec.Command(filepath.Join(b.bin, "banger"), "--config", b.cfg.Path, "vm", "run", "--image", image, "--", "true")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("vm run on %s: %v\n%s", image, err, out)
			}
			times[image] = append(times[image], ms(time.Since(start)))
			fmt.Fprintf(os.Stderr, "run %d/%d %-8s %.1fs\n", i+1, runs, image, ms(time.Since(start))/1000)
		}
	}
	res := VMRunResult{Engine: st.Engine, Accel: st.Accel, Runs: runs, Images: map[string]Summary{}}
	for _, image := range order {
		res.Images[image] = summarize(times[image])
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Printf("banger vm run -- true, %d runs each (engine %s, accel %s)\n", runs, res.Engine, res.Accel)
	fmt.Printf("%-10s %10s %10s %10s\n", "image", "p50", "p95", "max")
	for _, image := range order {
		s := res.Images[image]
		fmt.Printf("%-10s %9.1fs %9.1fs %9.1fs\n", image, s.P50/1000, s.P95/1000, s.Max/1000)
	}
	return nil
}
