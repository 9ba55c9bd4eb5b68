package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/files"
	"banger/internal/names"
)

func vmCpCmd(e *env) *cobra.Command {
	var maxSize sizeFlag
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files or directory trees between the host and a VM",
		Long: "Copies through the guest agent (no SSH): one side is VM:PATH, the other a host path, like docker cp.\n" +
			"Directories copy recursively with their modes and symlinks (kept as links). Into an existing\n" +
			"directory the source keeps its name; otherwise DST is the new name and its directory must exist.\n" +
			"Copies out of a VM never write outside DST: no '..', no absolute names, no following symlinks,\n" +
			"no devices and no setuid bits; --max-size bounds what the guest can send.",
		Example: "  banger vm cp ./src myvm:/root/src\n  banger vm cp myvm:/var/log/syslog .",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.vmCp(cmd.Context(), args[0], args[1], maxSize.bytes())
		},
	}
	cmd.Flags().Var(&maxSize, "max-size", "most bytes a copy out of a VM may write (default 16GiB)")
	return cmd
}

// splitVMPath splits "VM:PATH"; ok is false for a host path.
func splitVMPath(s string) (vm, p string, ok bool) {
	name, rest, found := strings.Cut(s, ":")
	if !found || strings.Contains(name, "/") || names.Validate(name) != nil {
		return "", "", false
	}
	return name, rest, true
}

// cpResult is what `vm cp --json` prints.
type cpResult struct {
	VM        string      `json:"vm"`
	Direction string      `json:"direction"` // "in" (host → VM) or "out"
	Source    string      `json:"source"`
	Dest      string      `json:"dest"`
	Stats     files.Stats `json:"stats"`
	Seconds   float64     `json:"seconds"`
}

func (e *env) vmCp(ctx context.Context, src, dst string, maxBytes int64) error {
	svm, spath, sIn := splitVMPath(src)
	dvm, dpath, dIn := splitVMPath(dst)
	if sIn == dIn {
		return api.Invalid("exactly one of %q and %q must be VM:PATH", src, dst).
			WithFix("banger vm cp ./local myvm:/root/  or  banger vm cp myvm:/root/file ./")
	}
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	res := cpResult{Source: src, Dest: dst}
	begin := time.Now()
	if dIn {
		res.VM, res.Direction = dvm, "in"
		res.Stats, err = files.CopyIn(ctx, execDialer(c, dvm), src, dpath)
	} else {
		lim := files.DefaultLimits
		if maxBytes > 0 {
			lim.MaxBytes = maxBytes
		}
		res.VM, res.Direction = svm, "out"
		res.Stats, err = files.CopyOut(ctx, execDialer(c, svm), spath, dst, lim)
	}
	if err != nil {
		return err
	}
	res.Seconds = time.Since(begin).Seconds()
	if e.jsonOut {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stderr, "copied %d files, %d directories, %d symlinks, %s in %.1fs\n",
		res.Stats.Files, res.Stats.Dirs, res.Stats.Symlinks, formatSize(res.Stats.Bytes), res.Seconds)
	if res.Stats.Skipped > 0 {
		fmt.Fprintf(e.stderr, "skipped %d devices, FIFOs or sockets\n", res.Stats.Skipped)
	}
	return nil
}

// execDialer opens agent streams through the daemon's exec upgrade.
func execDialer(c *client.Client, vm string) files.Dialer {
	return func(ctx context.Context) (net.Conn, error) { return c.Exec(ctx, vm) }
}
