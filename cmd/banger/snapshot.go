package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func snapshotCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save running VMs (memory, devices, disks) to fork new VMs from",
		Long: "A snapshot is a running VM saved whole: its memory, device state and disks. New VMs start\n" +
			"from it in a fraction of a cold boot (banger vm fork, banger vm create --from), with the\n" +
			"processes, files and page cache the VM had. An image's warm snapshot (banger image warm)\n" +
			"is listed here too, as kind warm.",
		Example: "  banger snapshot create web web-snap # snapshot VM web as web-snap; web runs on\n" +
			"  banger vm fork web-snap --count 3   # three VMs from it\n" +
			"  banger snapshot list\n" +
			"  banger snapshot delete web-snap     # once no VM forked from it is left",
	}
	cmd.AddCommand(snapshotCreateCmd(e),
		&cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List snapshots", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ctx := cmd.Context()
				return show(ctx, e, func(c *client.Client) ([]api.Snapshot, error) { return c.ListSnapshots(ctx) }, snapshotTable)
			}},
		&cobra.Command{Use: "show NAME", Short: "Show a snapshot: what it was taken from, its files and the VMs started from it",
			Args: exactArgs(1, "banger snapshot show NAME (see banger snapshot list)"),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx := cmd.Context()
				return show(ctx, e, func(c *client.Client) (api.Snapshot, error) { return c.GetSnapshot(ctx, args[0]) }, snapshotFields)
			}},
		snapshotDeleteCmd(e),
	)
	return cmd
}

// exactArgs is cobra.ExactArgs with the usage as the fix.
func exactArgs(n int, usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return api.Invalid("%s takes %d argument(s), got %d", cmd.CommandPath(), n, len(args)).WithFix(usage)
		}
		return nil
	}
}

func snapshotCreateCmd(e *env) *cobra.Command {
	var req api.SnapshotCreateRequest
	cmd := &cobra.Command{
		Use:   "create VM [NAME] [--stop]",
		Short: "Snapshot a running VM (it pauses for the save, then runs on)",
		Long: "Snapshot a running VM: it is paused while its memory, device state and disks are saved,\n" +
			"then resumed (or stopped, with --stop). NAME defaults to the VM's name and a random suffix.",
		Example: "  banger snapshot create web\n  banger snapshot create web web-ready --stop",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return api.Invalid("snapshot create takes a VM and an optional snapshot name, got %d arguments", len(args)).
					WithFix("banger snapshot create VM [NAME] (see banger vm list)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req.VM = args[0]
			if len(args) == 2 {
				req.Name = args[1]
			}
			ctx := cmd.Context()
			c, op, err := e.startOp(ctx, "snapshotting "+req.VM, func(c *client.Client) (api.Operation, error) {
				return c.CreateSnapshot(ctx, req)
			})
			if err != nil {
				return err
			}
			var s api.Snapshot
			if err := e.followResult(ctx, c, op, &s); err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(s)
			}
			fmt.Fprintln(e.stdout, s.Name)
			fmt.Fprintf(e.stderr, "fork it: banger vm fork %s\n", s.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&req.Stop, "stop", false, "stop the VM after the snapshot instead of resuming it")
	return cmd
}

func snapshotDeleteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete a snapshot (refused while VMs started from it are alive)",
		Example: "  banger snapshot delete web-snap",
		Args:    exactArgs(1, "banger snapshot delete NAME (see banger snapshot list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if _, err := call(ctx, e, func(c *client.Client) (struct{}, error) {
				return struct{}{}, c.DeleteSnapshot(ctx, args[0])
			}); err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(struct {
					Deleted string `json:"deleted"`
				}{args[0]})
			}
			fmt.Fprintf(e.stderr, "deleted snapshot %s\n", args[0])
			return nil
		},
	}
}

func vmForkCmd(e *env) *cobra.Command {
	var (
		req api.VMForkRequest
		np  netPolicyFlags
		lf  lifetimeFlags
	)
	cmd := &cobra.Command{
		Use:   "fork VM|SNAPSHOT [--count N] [--name NAME|PREFIX]",
		Short: "Start new VMs from a snapshot, or from a running VM (snapshotted first)",
		Long: "Start new VMs from a snapshot: each restores the snapshot's memory and devices and gets its\n" +
			"own copy-on-write disks, so it resumes where the snapshot was taken instead of booting.\n" +
			"Given a running VM, it is snapshotted first (a short pause) and that snapshot is kept.\n\n" +
			"What a fork gets of its own: its name and hostname, machine-id, SSH host key, MAC, IP and\n" +
			"DNS name, copy-on-write disks, and its clock set from the host after the restore. What it keeps from the parent: processes, files,\n" +
			"and everything in memory (keys and secrets included): do not fork a VM holding secrets\n" +
			"you would not hand to every child.\n\n" +
			"With --count 1 (default) --name is the VM's name; with more it is a prefix: PREFIX-1, PREFIX-2…\n" +
			"Prints each new VM's name and IP.",
		Example: "  banger vm fork web                       # one VM from running VM web\n" +
			"  banger vm fork web-snap --count 4 --name worker   # worker-1 … worker-4\n" +
			"  banger vm fork web-snap --net-mode none --ttl 1h",
		Args: exactArgs(1, "banger vm fork VM|SNAPSHOT [--count N] (see banger snapshot list, banger vm list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Count < 1 || req.Count > api.MaxForkCount {
				return api.Invalid("--count %d is not from 1 to %d", req.Count, api.MaxForkCount).
					WithFix(fmt.Sprintf("fork 1 to %d VMs at a time, e.g. --count 4", api.MaxForkCount))
			}
			req.Source = args[0]
			req.NetPolicy = np.policy()
			var cr api.VMCreateRequest
			lf.apply(&cr)
			req.TTLSeconds, req.TTLAction, req.IdleStopSeconds = cr.TTLSeconds, cr.TTLAction, cr.IdleStopSeconds
			return e.vmFork(cmd.Context(), req)
		},
	}
	cmd.Flags().IntVar(&req.Count, "count", 1, fmt.Sprintf("how many VMs to start (1 to %d)", api.MaxForkCount))
	cmd.Flags().StringVar(&req.Name, "name", "", "the VM's name, or with --count > 1 the names' prefix (default: SOURCE-fork)")
	np.register(cmd)
	lf.register(cmd)
	return cmd
}

func (e *env) vmFork(ctx context.Context, req api.VMForkRequest) error {
	what := "forking " + req.Source
	if req.Count > 1 {
		what = fmt.Sprintf("forking %d VMs from %s", req.Count, req.Source)
	}
	c, op, err := e.startOp(ctx, what, func(c *client.Client) (api.Operation, error) { return c.ForkVM(ctx, req) })
	if err != nil {
		return err
	}
	var res api.VMForkResult
	if err := e.followResult(ctx, c, op, &res); err != nil {
		return err
	}
	if e.jsonOut {
		return e.printJSON(res)
	}
	forkTable(e.stdout, res)
	fmt.Fprintf(e.stderr, "from snapshot %s; ssh into one: banger vm ssh %s\n", res.Snapshot, firstName(res.VMs))
	return nil
}

func firstName(vms []api.VM) string {
	if len(vms) == 0 {
		return "NAME"
	}
	return vms[0].Name
}

func forkTable(w io.Writer, res api.VMForkResult) {
	rows := make([][]string, 0, len(res.VMs))
	for _, vm := range res.VMs {
		rows = append(rows, []string{vm.Name, orDash(vm.Runtime.GuestIP)})
	}
	table(w, []string{"NAME", "IP"}, rows)
}

func imageWarmCmd(e *env) *cobra.Command {
	var req api.ImageWarmRequest
	cmd := &cobra.Command{
		Use:   "warm IMAGE [--engine E]",
		Short: "Boot an image once and keep that snapshot: later vm create/run of it restore instead of booting",
		Long: "Boot the image once, wait for its agent (and feature servers), and save that running VM\n" +
			"as the image's warm snapshot (replacing an older one). From then on vm create and vm run\n" +
			"of the image restore it instead of booting, when the engine and shape (vCPUs, memory) match\n" +
			"the snapshot; otherwise, or with --cold, they boot cold. image show says whether it is usable.",
		Example: "  banger image warm debian\n  banger image warm debian --engine qemu\n  banger vm run --image debian -- uname -a   # restores",
		Args:    exactArgs(1, "banger image warm IMAGE (see banger image list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Image = args[0]
			ctx := cmd.Context()
			c, op, err := e.startOp(ctx, "warming image "+req.Image, func(c *client.Client) (api.Operation, error) {
				return c.WarmImage(ctx, req)
			})
			if err != nil {
				return err
			}
			var s api.Snapshot
			if err := e.followResult(ctx, c, op, &s); err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(s)
			}
			fmt.Fprintln(e.stdout, s.Name)
			fmt.Fprintf(e.stderr, "image %s is warm (%s, %d vCPU, %s): vm create --image %s restores it\n",
				req.Image, s.Engine, s.VCPUs, formatSize(int64(s.MemoryMiB)<<20), req.Image)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Engine, "engine", "", "engine the snapshot is for: qemu or firecracker (default from config)")
	return cmd
}

func imageUnwarmCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "unwarm IMAGE",
		Short:   "Delete an image's warm snapshot (its VMs boot cold again)",
		Example: "  banger image unwarm debian",
		Args:    exactArgs(1, "banger image unwarm IMAGE (see banger image list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if _, err := call(ctx, e, func(c *client.Client) (struct{}, error) {
				return struct{}{}, c.UnwarmImage(ctx, args[0])
			}); err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(struct {
					Unwarmed string `json:"unwarmed"`
				}{args[0]})
			}
			fmt.Fprintf(e.stderr, "image %s is no longer warm\n", args[0])
			return nil
		},
	}
}

// shape is "2 vCPU 1.0GiB".
func shape(vcpus, memMiB int) string {
	return fmt.Sprintf("%d vCPU %s", vcpus, formatSize(int64(memMiB)<<20))
}

// formatAge prints how long ago t was: 45s, 12m, 3h, 2d.
func formatAge(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(int(d.Seconds()), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func snapshotTable(w io.Writer, snaps []api.Snapshot) { snapshotTableAt(w, snaps, time.Now()) }

func snapshotTableAt(w io.Writer, snaps []api.Snapshot, now time.Time) {
	rows := make([][]string, 0, len(snaps))
	for _, s := range snaps {
		rows = append(rows, []string{s.Name, s.Kind, orDash(s.VMName), orDash(s.ImageName), orDash(s.Engine),
			shape(s.VCPUs, s.MemoryMiB), formatSize(s.SizeBytes), fmt.Sprint(len(s.Children)), formatAge(s.CreatedAt, now)})
	}
	table(w, []string{"NAME", "KIND", "VM", "IMAGE", "ENGINE", "SHAPE", "SIZE", "CHILDREN", "AGE"}, rows)
}

func snapshotFields(w io.Writer, s api.Snapshot) {
	kv := [][2]string{
		{"name", s.Name}, {"id", s.ID}, {"kind", s.Kind}, {"vm", s.VMName}, {"image", s.ImageName},
		{"engine", strings.TrimSpace(s.Engine + " " + s.EngineVersion)}, {"accel", s.Accel},
		{"shape", shape(s.VCPUs, s.MemoryMiB)}, {"disk", formatSize(s.DiskBytes)},
		{"features", strings.Join(s.Features, ",")}, {"dir", s.Dir}, {"size", formatSize(s.SizeBytes)},
		{"created", s.CreatedAt.Local().Format(time.RFC3339)},
	}
	if s.PausedMillis > 0 {
		kv = append(kv, [2]string{"paused for", formatDuration(time.Duration(s.PausedMillis) * time.Millisecond)})
	}
	for _, f := range s.Files {
		kv = append(kv, [2]string{f.Role, fmt.Sprintf("%s (%s)", f.Path, formatSize(f.Size))})
	}
	children := "none"
	if len(s.Children) > 0 {
		children = strings.Join(s.Children, " ")
	}
	kv = append(kv, [2]string{"children", children})
	fields(w, kv)
}

// warmCell is the image list's WARM column.
func warmCell(wi *api.WarmInfo) string {
	switch {
	case wi == nil:
		return "-"
	case !wi.Usable:
		return "unusable"
	}
	return wi.Engine
}

// warmField is image show's "warm" line.
func warmField(wi *api.WarmInfo) string {
	if wi == nil {
		return "no (banger image warm to make one)"
	}
	s := fmt.Sprintf("%s (%s, %s, %s)", wi.Snapshot, wi.Engine, shape(wi.VCPUs, wi.MemoryMiB), wi.CreatedAt.Local().Format(time.RFC3339))
	if !wi.Usable {
		s += "; not usable, VMs boot cold: " + wi.Reason
	}
	return s
}
