package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"banger/internal/api"
)

// statSample is the latest counters of one VM.
type statSample struct {
	at       time.Time
	cpuTicks uint64
	stats    api.VMStats
}

const clockTicks = 100 // USER_HZ on Linux

// StartStats starts the poll loop that keeps per-VM counters, the one
// that keeps VMs' logs under their caps (capLogs, every logCapEvery), and
// the one that carries out lifetimes (checkLifetimes, every lifetimeEvery).
func (m *Manager) StartStats(ctx context.Context) {
	ctx, m.stopStats = context.WithCancel(ctx)
	every := time.Duration(m.cfg.StatsPollInterval)
	if every <= 0 {
		every = 5 * time.Second
	}
	m.every(ctx, every, m.pollStats)
	m.every(ctx, logCapEvery, m.capLogs)
	m.every(ctx, lifetimeEvery, m.checkLifetimes)
}

// every runs f now and then each interval until ctx ends, in a goroutine
// Close waits for.
func (m *Manager) every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			f(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (m *Manager) pollStats(ctx context.Context) {
	vms, err := m.st.ListVMs(ctx)
	if err != nil {
		return
	}
	for _, v := range vms {
		if v.Runtime.State != api.VMRunning {
			continue
		}
		if s, err := m.sample(v); err == nil {
			m.mu.Lock()
			prev := m.stats[v.ID]
			m.stats[v.ID] = s
			m.mu.Unlock()
			m.noteSample(v.ID, prev, s)
		}
	}
}

// sample reads a VM's counters from /proc and the tap's statistics.
func (m *Manager) sample(v api.VM) (*statSample, error) {
	h, alive := m.vmAlive(v)
	if !alive {
		return nil, fmt.Errorf("vm %s is not running", v.Name)
	}
	pid := h.VMM.PID
	ticks, err := procCPUTicks(pid)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s := &statSample{at: now, cpuTicks: ticks}
	s.stats = api.VMStats{Name: v.Name, CPUSeconds: float64(ticks) / clockTicks, SampledAt: now.UTC().Format(time.RFC3339Nano)}
	m.mu.Lock()
	prev := m.stats[v.ID]
	m.mu.Unlock()
	if prev != nil && now.Sub(prev.at) > 0 && ticks >= prev.cpuTicks {
		s.stats.CPUPercent = float64(ticks-prev.cpuTicks) / clockTicks / now.Sub(prev.at).Seconds() * 100
	}
	s.stats.RSSBytes = procStatusKB(pid, "VmRSS") * 1024
	s.stats.DiskRead, s.stats.DiskWrite = procIO(pid)
	if h.Tap != "" {
		// the tap's rx is what the guest sent, its tx what the guest received
		if rx, tx, err := m.net.TapStats(h.Tap); err == nil {
			s.stats.NetTxBytes, s.stats.NetRxBytes = rx, tx
		}
	}
	if g, ok := m.net.(netGuard); ok {
		if st, err := g.GuestStatus(v.Name); err == nil {
			s.stats.NetDenied = int64(st.Denied)
		}
	}
	return s, nil
}

// LatestStats returns the poll loop's latest sample of every VM it has
// sampled, without sampling (the metrics scrape reads it; it keeps only the
// VMs the store says are running).
func (m *Manager) LatestStats() []api.VMStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.VMStats, 0, len(m.stats))
	for _, s := range m.stats {
		out = append(out, s.stats)
	}
	return out
}

// Stats returns a VM's latest counters, sampling now when the poll loop has
// none yet.
func (m *Manager) Stats(ctx context.Context, name string) (api.VMStats, error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return api.VMStats{}, err
	}
	m.mu.Lock()
	s := m.stats[v.ID]
	m.mu.Unlock()
	if s == nil {
		if s, err = m.sample(v); err != nil {
			return api.VMStats{}, api.FailedPrecondition("vm %q is %s: no stats", v.Name, v.Runtime.State).
				WithAction("vm start", v.Name)
		}
		m.mu.Lock()
		m.stats[v.ID] = s
		m.mu.Unlock()
	}
	return s.stats, nil
}

func procCPUTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// fields after the command name (which may hold spaces) start after ")"
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ut + st, nil
}

func procStatusKB(pid int, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, rest, ok := strings.Cut(sc.Text(), ":"); ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func procIO(pid int) (read, write int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, val, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(val, 10, 64)
		switch k {
		case "rchar":
			read = n
		case "wchar":
			write = n
		}
	}
	return read, write
}

func hostMemMiB() int { return meminfoMiB("MemTotal") }

// hostMemAvailableMiB is the host's MemAvailable in MiB (0 when unknown).
func hostMemAvailableMiB() int { return meminfoMiB("MemAvailable") }

func meminfoMiB(key string) int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, rest, ok := strings.Cut(sc.Text(), ":"); ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n / 1024
		}
	}
	return 0
}
