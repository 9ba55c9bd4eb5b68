package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"banger/internal/api"
)

// formatDuration prints 12ms, 2.1s, 1m05s.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		m := int(d / time.Minute)
		s := int((d % time.Minute) / time.Second)
		return fmt.Sprintf("%dm%02ds", m, s)
	}
}

// formatSize prints bytes in IEC units: 512B, 1.5KiB, 2.0GiB.
func formatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// stageLine formats one finished stage:
//
//	✓ allocate        12ms
//	✗ boot            2.1s: <error>
func stageLine(s api.Stage) string {
	switch s.Outcome {
	case api.StageFailed:
		return fmt.Sprintf("  ✗ %-15s %s: %s", s.Name, formatDuration(s.Duration), s.Detail)
	case api.StageSkipped:
		line := fmt.Sprintf("  - %-15s skipped", s.Name)
		if s.Detail != "" {
			line += " (" + s.Detail + ")"
		}
		return line
	default:
		line := fmt.Sprintf("  ✓ %-15s %s", s.Name, formatDuration(s.Duration))
		if s.Detail != "" {
			line += "  " + s.Detail
		}
		return line
	}
}

// stagePrinter prints each stage once, when it finishes, in finishing order.
type stagePrinter struct {
	w       io.Writer
	printed map[int]bool
}

func newStagePrinter(w io.Writer) *stagePrinter {
	return &stagePrinter{w: w, printed: map[int]bool{}}
}

func (p *stagePrinter) update(op api.Operation) {
	for i, s := range op.Stages {
		if s.Outcome == api.StageRunning || p.printed[i] {
			continue
		}
		p.printed[i] = true
		fmt.Fprintln(p.w, stageLine(s))
	}
}

// table writes aligned columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func vmTable(w io.Writer, vms []api.VM) { vmTableAt(w, vms, time.Now()) }

// vmTableAt is vmTable with the LIFETIME column (time left) computed at
// now; the column is there only when a VM has a lifetime.
func vmTableAt(w io.Writer, vms []api.VM, now time.Time) {
	withLife := slices.ContainsFunc(vms, func(vm api.VM) bool { return vm.Lifetime != nil })
	rows := make([][]string, 0, len(vms))
	for _, vm := range vms {
		row := []string{
			vm.Name, string(vm.Runtime.State), orDash(vm.ImageName), orDash(vm.Runtime.GuestIP),
			fmt.Sprint(vm.VCPUs), formatSize(int64(vm.MemoryMiB) << 20), formatSize(vm.DiskBytes),
			orDash(vm.Runtime.Engine),
		}
		if withLife {
			row = append(row, lifetimeCell(vm.Lifetime, now))
		}
		rows = append(rows, row)
	}
	head := []string{"NAME", "STATE", "IMAGE", "IP", "VCPUS", "MEMORY", "DISK", "ENGINE"}
	if withLife {
		head = append(head, "LIFETIME")
	}
	table(w, head, rows)
}

func imageTable(w io.Writer, imgs []api.Image) {
	rows := make([][]string, 0, len(imgs))
	for _, img := range imgs {
		rows = append(rows, []string{
			img.Name, orDash(img.Parent), orDash(img.Source), orDash(img.KernelVersion), formatSize(img.RootfsSize),
			orDash(strings.Join(img.Engines, ",")), orDash(strings.Join(img.Features, ",")), warmCell(img.Warm),
			img.CreatedAt.Local().Format("2006-01-02 15:04"),
		})
	}
	table(w, []string{"NAME", "PARENT", "SOURCE", "KERNEL", "ROOTFS", "ENGINES", "FEATURES", "WARM", "CREATED"}, rows)
}

// fields writes "key: value" lines, aligned, skipping empty values.
func fields(w io.Writer, kv [][2]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, f := range kv {
		if f[1] == "" {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	_ = tw.Flush()
}

func vmFields(w io.Writer, d api.VMDetail) {
	vm, rt := d.VM, d.VM.Runtime
	kv := [][2]string{
		{"name", vm.Name}, {"id", vm.ID}, {"state", string(rt.State)}, {"image", vm.ImageName},
		{"vcpus", fmt.Sprint(vm.VCPUs)}, {"memory", formatSize(int64(vm.MemoryMiB) << 20)},
		{"disk", formatSize(vm.DiskBytes)}, {"ip", rt.GuestIP}, {"dns", rt.DNSName}, {"mac", rt.MAC},
		{"engine", rt.Engine}, {"accel", rt.Accel}, {"dir", rt.VMDir}, {"last error", rt.LastError},
		{"created", vm.CreatedAt.Local().Format(time.RFC3339)},
	}
	kv = append(kv, [2]string{"ttl", ttlLeft(vm.Lifetime, time.Now())}, [2]string{"idle-stop", idleStop(vm.Lifetime)})
	if !d.IdleStopAt.IsZero() {
		kv = append(kv, [2]string{"idle-stop at", fmt.Sprintf("%s if it stays idle", d.IdleStopAt.Local().Format(time.RFC3339))})
	}
	if vm.Lifetime != nil && vm.Lifetime.Run {
		kv = append(kv, [2]string{"owned by", "a vm run (deleted when it ends)"})
	}
	if d.Handles != nil && d.Handles.PID > 0 {
		kv = append(kv, [2]string{"pid", fmt.Sprint(d.Handles.PID)})
	}
	for _, f := range d.Forwards {
		kv = append(kv, [2]string{"forward", fmt.Sprintf("%s -> guest port %d", f.URL, f.GuestPort)})
	}
	if len(d.URLs) > 0 {
		kv = append(kv, [2]string{"urls", strings.Join(d.URLs, " ")})
	}
	if d.Net != nil {
		kv = append(kv, netStatusKV(*d.Net)...)
	}
	if len(d.HostCAs) > 0 {
		kv = append(kv, [2]string{"host CAs trusted", strings.Join(d.HostCAs, " ")})
	}
	for _, a := range d.Access {
		switch {
		case a.Warning != "":
			kv = append(kv, [2]string{a.Feature + " password", "NONE: " + a.Warning})
		case a.Password != "":
			kv = append(kv, [2]string{a.Feature + " password", "per VM (banger vm " + a.Feature + " " + vm.Name + " prints the URL with it)"})
		}
	}
	fields(w, kv)
}

func imageFields(w io.Writer, img api.Image) {
	fields(w, [][2]string{
		{"name", img.Name}, {"id", img.ID}, {"source", img.Source}, {"parent", img.Parent},
		{"kernel version", img.KernelVersion}, {"engines", strings.Join(img.Engines, ",")},
		{"features", strings.Join(img.Features, ",")}, {"dir", img.Dir},
		{"kernel", img.Kernel}, {"vmlinux", img.Vmlinux}, {"initrd", img.Initrd},
		{"rootfs", fmt.Sprintf("%s (%s)", img.Rootfs, formatSize(img.RootfsSize))},
		{"work seed", img.WorkSeed}, {"fingerprint", img.Fingerprint}, {"warm", warmField(img.Warm)},
		{"created", img.CreatedAt.Local().Format(time.RFC3339)},
	})
}
