package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"banger/internal/api"
)

// The pure part of --mode and --density: parsing what the daemon and
// /proc report, and the figures; unit-tested on recorded JSON and text.

// Modes --mode accepts.
const (
	modeCold = "cold" // vm create --cold of the test image: a boot
	modeFork = "fork" // vm fork of one snapshot of a running VM
	modeWarm = "warm" // vm create of the test image once warmed: a restore
)

// Measures, in the order printed.
const (
	measureReady    = "create → agent ready"
	measureFirstCmd = "create → first command"
	measureVMRun    = "vm run -- true"
)

var measureOrder = []string{measureReady, measureFirstCmd, measureVMRun}

// parseModes reads --mode: a comma-separated list of cold, fork and warm.
func parseModes(s string) ([]string, error) {
	var modes []string
	seen := map[string]bool{}
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case modeCold, modeFork, modeWarm:
		case "":
			continue
		default:
			return nil, fmt.Errorf("--mode %q: unknown mode %q (use cold, fork and/or warm, e.g. --mode cold,fork)", s, m)
		}
		if !seen[m] {
			seen[m] = true
			modes = append(modes, m)
		}
	}
	if len(modes) == 0 {
		return nil, fmt.Errorf("--mode %q names no mode (use cold, fork and/or warm)", s)
	}
	return modes, nil
}

// readyMillis is create → agent ready from an operation's own stage
// timings: the end of its "agent ready" stage (for an operation starting
// several VMs, the one named "<vm>: agent ready", or whose detail names vm)
// after the operation began.
// Without such a stage it is the operation's whole duration and exact is
// false (a fork whose children are ready when restored may have none).
func readyMillis(op api.Operation, vm string) (ms float64, exact bool) {
	var found, match *api.Stage
	for i := range op.Stages {
		s := &op.Stages[i]
		// a fork of several VMs prefixes each child's stages: "kid-2: agent ready"
		child, _, prefixed := strings.Cut(s.Name, ": ")
		if (s.Name != "agent ready" && !strings.HasSuffix(s.Name, ": agent ready")) || s.Outcome != api.StageOK {
			continue
		}
		found = s // the last, unless one names vm
		if vm != "" && (s.Detail == vm || (prefixed && child == vm)) {
			match = s
		}
	}
	if match != nil {
		found = match
	}
	if found != nil {
		return msOf(found.Started.Add(found.Duration).Sub(op.Started)), true
	}
	if op.Finished.IsZero() {
		return 0, false
	}
	return msOf(op.Finished.Sub(op.Started)), false
}

// procMem is what /proc/<pid>/smaps_rollup says of one engine process.
type procMem struct {
	PSSKiB     int64 `json:"pss_kib"`
	PrivateKiB int64 `json:"private_kib"` // Private_Clean + Private_Dirty
	RSSKiB     int64 `json:"rss_kib"`
}

// parseSmapsRollup reads /proc/<pid>/smaps_rollup.
func parseSmapsRollup(r io.Reader) (procMem, error) {
	var m procMem
	var seen int
	err := eachKiB(r, func(key string, v int64) {
		switch key {
		case "Pss":
			m.PSSKiB, seen = v, seen|1
		case "Private_Clean", "Private_Dirty":
			m.PrivateKiB += v
			seen |= 2
		case "Rss":
			m.RSSKiB = v
		}
	})
	if err == nil && seen != 3 {
		err = fmt.Errorf("smaps_rollup has no Pss or Private_* line")
	}
	return m, err
}

// parseMemAvailable reads MemAvailable from /proc/meminfo, in KiB.
func parseMemAvailable(r io.Reader) (int64, error) {
	avail := int64(-1)
	err := eachKiB(r, func(key string, v int64) {
		if key == "MemAvailable" {
			avail = v
		}
	})
	if err == nil && avail < 0 {
		err = fmt.Errorf("meminfo has no MemAvailable line")
	}
	return avail, err
}

// eachKiB calls fn for every "Key:   123 kB" line.
func eachKiB(r io.Reader, fn func(key string, kib int64)) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		fn(strings.TrimSpace(key), v)
	}
	return sc.Err()
}

// densityReserveKiB is host memory the density run leaves alone.
const densityReserveKiB = 1 << 20

// densityCap bounds --density: no more children than fit in MemAvailable
// (less a 1 GiB reserve) if each touched all its memory, nor than one fork
// may start. It returns the count and why it was lowered ("" if not).
func densityCap(want int, availKiB int64, memMiB int) (int, string) {
	n, why := want, ""
	if memMiB > 0 {
		fit := int((availKiB - densityReserveKiB) / (int64(memMiB) << 10))
		if fit < n {
			n, why = max(fit, 0), fmt.Sprintf("memory: %d MiB available, %d MiB a VM, 1 GiB kept", availKiB>>10, memMiB)
		}
	}
	if n > api.MaxForkCount {
		n, why = api.MaxForkCount, fmt.Sprintf("one fork starts at most %d VMs", api.MaxForkCount)
	}
	return n, why
}

// MemSummary is min/p50/p95/max of a memory figure, in KiB.
type MemSummary struct {
	Min float64 `json:"min_kib"`
	P50 float64 `json:"p50_kib"`
	P95 float64 `json:"p95_kib"`
	Max float64 `json:"max_kib"`
	N   int     `json:"n"`
}

func summarizeKiB(v []float64) MemSummary {
	s := summarize(v)
	return MemSummary{Min: s.Min, P50: s.P50, P95: s.P95, Max: s.Max, N: s.N}
}

// ratio is a's p50 over b's (0 when either is missing).
func ratio(a, b Summary) float64 {
	if a.N == 0 || b.N == 0 || b.P50 == 0 {
		return 0
	}
	return a.P50 / b.P50
}
