package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"banger/internal/api"
)

// vmStates are reported even when no VM is in them, so that a state's
// series never vanishes and reappears.
var vmStates = []api.VMState{api.VMCreating, api.VMStarting, api.VMRunning, api.VMStopping,
	api.VMStopped, api.VMFailed, api.VMDeleting}

// vmCollector reads VMs by state from the store and per-VM counters from the
// stats loop at scrape time.
type vmCollector struct {
	vms     VMLister
	stats   StatsSource // nil: no per-VM series
	timeout time.Duration

	byState   *prometheus.Desc
	cpu       *prometheus.Desc
	rss       *prometheus.Desc
	diskRead  *prometheus.Desc
	diskWrite *prometheus.Desc
	netRx     *prometheus.Desc
	netTx     *prometheus.Desc
	denied    *prometheus.Desc
}

var _ prometheus.Collector = (*vmCollector)(nil)

func newVMCollector(vms VMLister, stats StatsSource, timeout time.Duration) *vmCollector {
	perVM := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "vm", name), help, []string{"vm"}, nil)
	}
	return &vmCollector{
		vms: vms, stats: stats, timeout: timeout,
		byState: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "vms"),
			"VMs by state, read from the store at scrape time.", []string{"state"}, nil),
		cpu:       perVM("cpu_seconds_total", "CPU time used by a running VM's engine process (user + system)."),
		rss:       perVM("memory_rss_bytes", "Resident memory of a running VM's engine process."),
		diskRead:  perVM("disk_read_bytes_total", "Bytes a running VM's engine process read (rchar: disk I/O and more)."),
		diskWrite: perVM("disk_written_bytes_total", "Bytes a running VM's engine process wrote (wchar: disk I/O and more)."),
		netRx:     perVM("network_receive_bytes_total", "Bytes the guest received on its tap."),
		netTx:     perVM("network_transmit_bytes_total", "Bytes the guest sent on its tap."),
		denied:    perVM("network_denied_packets_total", "Packets the VM's egress policy dropped since it started."),
	}
}

func (c *vmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.byState, c.cpu, c.rss, c.diskRead, c.diskWrite, c.netRx, c.netTx, c.denied} {
		ch <- d
	}
}

func (c *vmCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	vms, err := c.vms.ListVMs(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.byState, err)
		return
	}
	count := make(map[api.VMState]int, len(vmStates))
	for _, s := range vmStates {
		count[s] = 0
	}
	running := map[string]bool{}
	for _, v := range vms {
		count[v.Runtime.State]++
		if v.Runtime.State == api.VMRunning {
			running[v.Name] = true
		}
	}
	for s, n := range count {
		ch <- prometheus.MustNewConstMetric(c.byState, prometheus.GaugeValue, float64(n), string(s))
	}
	if c.stats == nil {
		return
	}
	for _, s := range c.stats.LatestStats() {
		if !running[s.Name] {
			continue // stopped or deleted since its last sample: no series
		}
		counter := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, s.Name)
		}
		counter(c.cpu, s.CPUSeconds)
		ch <- prometheus.MustNewConstMetric(c.rss, prometheus.GaugeValue, float64(s.RSSBytes), s.Name)
		counter(c.diskRead, float64(s.DiskRead))
		counter(c.diskWrite, float64(s.DiskWrite))
		counter(c.netRx, float64(s.NetRxBytes))
		counter(c.netTx, float64(s.NetTxBytes))
		counter(c.denied, float64(s.NetDenied))
	}
}
