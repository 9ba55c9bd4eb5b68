package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/feature"
	"banger/internal/termsafe"
)

func vmCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Manage VMs"}
	cmd.AddCommand(
		&cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List VMs", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return e.vmList(cmd.Context()) }},
		&cobra.Command{Use: "show NAME", Short: "Show a VM", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error { return e.vmShow(cmd.Context(), args[0]) }},
		vmCreateCmd(e),
		vmActionCmd(e, "start", "Start VMs", (*client.Client).StartVM),
		vmActionCmd(e, "stop", "Stop VMs", (*client.Client).StopVM),
		vmActionCmd(e, "restart", "Restart VMs", (*client.Client).RestartVM),
		vmActionCmd(e, "delete", "Delete VMs and their disks", (*client.Client).DeleteVM),
		vmEditCmd(e), vmLogsCmd(e), vmStatsCmd(e), vmSSHCmd(e), vmRunCmd(e), vmExecCmd(e),
		vmPolicyCmd(e), vmCpCmd(e), vmPortForwardCmd(e), vmLifetimeCmd(e), vmDiffCmd(e), vmForkCmd(e),
	)
	for _, d := range feature.All() { // `banger vm opencode NAME`
		cmd.AddCommand(vmFeatureCmd(e, d))
	}
	return cmd
}

// resources are the --vcpus/--memory/--disk flags shared by create, run and edit.
type resources struct {
	vcpus        int
	memory, disk sizeFlag
}

func (r *resources) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&r.vcpus, "vcpus", 0, "virtual CPUs (default from config)")
	cmd.Flags().Var(&r.memory, "memory", "memory, e.g. 2GiB (default from config)")
	cmd.Flags().Var(&r.disk, "disk", "work disk size, e.g. 8GiB (default from config)")
}

func (r *resources) check() (vcpus, memMiB int, disk int64, err error) {
	if r.vcpus < 0 {
		return 0, 0, 0, api.Invalid("--vcpus %d must be positive", r.vcpus)
	}
	if memMiB, err = r.memory.mib("memory"); err != nil {
		return 0, 0, 0, err
	}
	return r.vcpus, memMiB, r.disk.bytes(), nil
}

func vmCreateCmd(e *env) *cobra.Command {
	var (
		req api.VMCreateRequest
		res resources
		np  netPolicyFlags
		lf  lifetimeFlags
		ws  string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create and start a VM",
		Long: "Create and start a VM. An image with a warm snapshot (banger image warm) is restored from\n" +
			"it instead of booted when the engine and shape match (--cold boots anyway); --from starts\n" +
			"the VM from any snapshot, with that snapshot's image, engine and shape.",
		Example: "  banger vm create --name web --memory 2GiB\n" +
			"  banger vm create --from web-snap --name web2   # resume a snapshot (see banger snapshot list)\n" +
			"  banger vm create --image debian --cold         # boot even though debian is warm",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFrom(cmd, req); err != nil {
				return err
			}
			var err error
			if req.VCPUs, req.MemoryMiB, req.DiskBytes, err = res.check(); err != nil {
				return err
			}
			req.NetPolicy = np.policy()
			lf.apply(&req)
			repo, err := openWorkspace(cmd.Context(), ws)
			if err != nil {
				return err
			}
			c, err := e.client(cmd.Context())
			if err != nil {
				return err
			}
			if repo != nil && req.NoWait {
				return api.Invalid("--workspace needs the VM's agent: it cannot go with --no-wait")
			}
			vm, err := e.createVM(cmd.Context(), c, req)
			if err != nil {
				return err
			}
			if err := e.pushWorkspace(cmd.Context(), c, repo, vm.Name); err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(vm)
			}
			fmt.Fprintln(e.stdout, vm.Name)
			if req.NoWait {
				fmt.Fprintf(e.stderr, "booting in the background (state %s): banger vm show %s\n", vm.Runtime.State, vm.Name)
				return nil
			}
			fmt.Fprintf(e.stderr, "ssh into it: banger vm ssh %s\n", vm.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "VM name (generated when empty)")
	np.register(cmd)
	cmd.Flags().BoolVar(&req.NoWait, "no-wait", false, "return once the engine runs; the VM is starting until its agent answers")
	cmd.Flags().StringVar(&req.Image, "image", "", "image (default from config)")
	cmd.Flags().StringVar(&req.Engine, "engine", "", "engine: firecracker or qemu (default from config)")
	cmd.Flags().StringVar(&req.From, "from", "", "start from this snapshot (its image, engine and shape) instead of booting")
	cmd.Flags().BoolVar(&req.Cold, "cold", false, "boot even when the image has a warm snapshot")
	cmd.Flags().StringVar(&req.Wait, "wait", "",
		"what to wait for: agent (the guest agent only), or "+feature.Default.Names(", ")+" (default: every service the image serves)")
	res.register(cmd)
	lf.register(cmd)
	cmd.Flags().StringVar(&ws, "workspace", "", "put this git working tree (uncommitted and untracked files included) at /root/work; see vm diff")
	return cmd
}

// checkFrom refuses flags that contradict --from (the snapshot fixes the
// image, engine and shape), before any request.
func checkFrom(cmd *cobra.Command, req api.VMCreateRequest) error {
	if req.From == "" {
		return nil
	}
	for _, f := range []string{"image", "engine", "vcpus", "memory", "cold"} {
		if cmd.Flags().Changed(f) {
			return api.Invalid("--from %s and --%s cannot go together: the VM gets the snapshot's image, engine and shape", req.From, f).
				WithFix("leave out --" + f + ", or leave out --from to create a VM of your own choosing")
		}
	}
	return nil
}

// createVM begins vm.create, follows it and returns the created VM.
func (e *env) createVM(ctx context.Context, c *client.Client, req api.VMCreateRequest) (api.VM, error) {
	op, err := c.CreateVM(ctx, req)
	if err != nil {
		return api.VM{}, err
	}
	name := req.Name
	if name == "" {
		name = "(new VM)"
	}
	fmt.Fprintf(e.stderr, "creating %s\n", name)
	var vm api.VM
	if err := e.followResult(ctx, c, op, &vm); err != nil {
		return api.VM{}, err
	}
	return vm, nil
}

type vmActionFunc func(c *client.Client, ctx context.Context, name string) (api.Operation, error)

func vmActionCmd(e *env, verb, short string, begin vmActionFunc) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NAME...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.vmAction(cmd.Context(), verb, args, begin)
		},
	}
}

// vmAction runs one operation per VM in turn; it goes on after a failure
// and fails at the end if any did.
func (e *env) vmAction(ctx context.Context, verb string, names []string, begin vmActionFunc) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	var finals []api.Operation
	var failed []error
	for _, name := range names {
		op, err := begin(c, ctx, name)
		if err == nil {
			fmt.Fprintf(e.stderr, "%s %s\n", verb, name)
			op, err = e.follow(ctx, c, op)
			finals = append(finals, op)
		}
		var ee exitError
		if errors.As(err, &ee) {
			return err
		}
		if err != nil {
			if len(names) == 1 {
				return err
			}
			printError(e.stderr, fmt.Errorf("%s %s: %w", verb, name, err))
			failed = append(failed, err)
		}
	}
	if e.jsonOut {
		if err := e.printJSON(finals); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return exitError{1}
	}
	return nil
}

func (e *env) vmList(ctx context.Context) error {
	return show(ctx, e, func(c *client.Client) ([]api.VM, error) { return c.ListVMs(ctx) }, vmTable)
}

func (e *env) vmShow(ctx context.Context, name string) error {
	return show(ctx, e, func(c *client.Client) (api.VMDetail, error) { return c.GetVM(ctx, name) }, vmFields)
}

func vmEditCmd(e *env) *cobra.Command {
	var res resources
	cmd := &cobra.Command{
		Use:   "edit NAME",
		Short: "Change a stopped VM's CPUs, memory or disk size",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.VMEditRequest
			var err error
			if req.VCPUs, req.MemoryMiB, req.DiskBytes, err = res.check(); err != nil {
				return err
			}
			if req == (api.VMEditRequest{}) {
				return api.Invalid("nothing to change").WithFix("pass --vcpus, --memory or --disk")
			}
			return show(cmd.Context(), e,
				func(c *client.Client) (api.VM, error) { return c.EditVM(cmd.Context(), args[0], req) },
				func(w io.Writer, vm api.VM) { vmTable(w, []api.VM{vm}) })
		},
	}
	res.register(cmd)
	return cmd
}

func vmLogsCmd(e *env) *cobra.Command {
	var raw bool
	var opt api.LogOptions
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console",
		Long: "Print a VM's serial console (--tail N: its last N lines, read from the log's end). On a\n" +
			"terminal, control characters the guest wrote (escape sequences) are shown as visible escapes\n" +
			"such as \\x1b; --raw prints them as written. --json prints {\"vm\",\"lines\"}, or with --follow\n" +
			"one {\"vm\",\"line\"} object a line.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opt.Tail < 0 || opt.Tail > api.MaxLogTail {
				return api.Invalid("--tail %d is not a line count from 0 to %d", opt.Tail, api.MaxLogTail).WithFix("--tail 100")
			}
			return e.vmLogs(cmd.Context(), args[0], opt, raw)
		},
	}
	cmd.Flags().BoolVarP(&opt.Follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().IntVarP(&opt.Tail, "tail", "n", 0, "start at the last N lines (0: the whole log)")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the guest's bytes unchanged, terminal control included")
	return cmd
}

func (e *env) vmLogs(ctx context.Context, name string, opt api.LogOptions, raw bool) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	if e.jsonOut {
		jw := &logJSONWriter{vm: name, out: e.stdout, stream: opt.Follow}
		if err := c.Logs(ctx, name, opt, jw); err != nil {
			return err
		}
		return jw.close()
	}
	if raw || !termsafe.IsTerminal(e.stdout) {
		return c.Logs(ctx, name, opt, e.stdout)
	}
	tw := termsafe.NewWriter(e.stdout)
	err = c.Logs(ctx, name, opt, tw)
	if ferr := tw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// logJSONWriter turns the serial console into JSON: with stream, one
// {"vm","line"} object a complete line as it arrives; else every line
// kept for one {"vm","lines"} document at close. JSON escapes the guest's
// control characters.
type logJSONWriter struct {
	vm     string
	out    io.Writer
	stream bool
	part   []byte
	lines  []string
}

func (w *logJSONWriter) Write(p []byte) (int, error) {
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		if err := w.line(string(w.part[:i])); err != nil {
			return 0, err
		}
		w.part = w.part[i+1:]
	}
}

func (w *logJSONWriter) line(l string) error {
	if !w.stream {
		w.lines = append(w.lines, l)
		return nil
	}
	return json.NewEncoder(w.out).Encode(struct {
		VM   string `json:"vm"`
		Line string `json:"line"`
	}{w.vm, l})
}

func (w *logJSONWriter) close() error {
	if len(w.part) > 0 {
		if err := w.line(string(w.part)); err != nil {
			return err
		}
		w.part = nil
	}
	if w.stream {
		return nil
	}
	if w.lines == nil {
		w.lines = []string{}
	}
	enc := json.NewEncoder(w.out)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		VM    string   `json:"vm"`
		Lines []string `json:"lines"`
	}{w.vm, w.lines})
}

func vmStatsCmd(e *env) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show a VM's CPU, memory, disk and network counters",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.vmStats(cmd.Context(), args[0], watch)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing every 2s")
	return cmd
}

func (e *env) vmStats(ctx context.Context, name string, watch bool) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	header := true
	for {
		s, err := c.Stats(ctx, name)
		if err != nil {
			return err
		}
		if e.jsonOut {
			if err := json.NewEncoder(e.stdout).Encode(s); err != nil {
				return err
			}
		} else {
			statsTable(e.stdout, s, header)
			header = false
		}
		if !watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

func statsTable(w interface{ Write([]byte) (int, error) }, s api.VMStats, header bool) {
	row := []string{fmt.Sprintf("%.1f%%", s.CPUPercent), formatSize(s.RSSBytes),
		formatSize(s.DiskRead), formatSize(s.DiskWrite), formatSize(s.NetRxBytes), formatSize(s.NetTxBytes)}
	if header {
		fmt.Fprintf(w, "%-8s %-10s %-10s %-10s %-10s %-10s\n", "CPU", "RSS", "DISK-R", "DISK-W", "NET-RX", "NET-TX")
	}
	fmt.Fprintf(w, "%-8s %-10s %-10s %-10s %-10s %-10s\n", row[0], row[1], row[2], row[3], row[4], row[5])
}
