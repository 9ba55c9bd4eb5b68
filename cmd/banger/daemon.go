package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/vmm/proc"
)

func daemonCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "daemon", Short: "Start, stop and inspect bangerd"}
	cmd.AddCommand(
		noArgsCmd("start", "Start bangerd if it is not running", e.daemonStatus),
		noArgsCmd("stop", "Shut bangerd down cleanly (VMs keep running)", e.daemonStop),
		noArgsCmd("status", "Show the daemon's status", e.daemonStatus),
	)
	var follow bool
	logs := &cobra.Command{Use: "logs", Short: "Print the daemon's log", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return e.daemonLogs(cmd.Context(), follow) }}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.AddCommand(logs, daemonMetricsCmd(e))
	return cmd
}

// daemonStatus starts the daemon if needed (so it is also `daemon start`)
// and prints its status.
func (e *env) daemonStatus(ctx context.Context) error {
	return show(ctx, e, func(c *client.Client) (api.DaemonStatus, error) { return c.Status(ctx) }, statusFields)
}

func statusFields(w io.Writer, st api.DaemonStatus) {
	fields(w, [][2]string{
		{"version", st.Version}, {"pid", fmt.Sprint(st.PID)}, {"socket", st.SocketPath},
		{"state dir", st.StateDir}, {"config", orDash(st.ConfigPath)},
		{"started", st.StartedAt.Local().Format(time.RFC3339)},
		{"vms", fmt.Sprintf("%d (%d running)", st.VMs, st.Running)}, {"images", fmt.Sprint(st.Images)},
		{"engine", st.Engine}, {"accel", st.Accel}, {"disk driver", st.DiskDriver},
	})
}

// daemonStop asks the daemon to shut down and waits for its socket to go.
func (e *env) daemonStop(ctx context.Context) error {
	cfg, err := e.config()
	if err != nil {
		return err
	}
	c := client.New(cfg.SocketPath)
	// The pid, so that "stopped" means the process is gone (and its state-dir
	// lock free), not only its socket: the socket goes first, while the
	// daemon still closes its services, store and lock.
	pid := 0
	if st, err := c.Status(ctx); err == nil {
		pid = st.PID
	}
	if err := c.Shutdown(ctx); err != nil {
		if api.IsUnavailable(err) {
			fmt.Fprintln(e.stderr, "bangerd is not running")
			return nil
		}
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := os.Stat(cfg.SocketPath)
		if errors.Is(err, fs.ErrNotExist) && !proc.Alive(pid, client.DaemonBinary) {
			fmt.Fprintln(e.stderr, "bangerd stopped")
			return nil
		}
		if time.Now().After(deadline) {
			return api.Unavailable("bangerd (pid %d) did not exit and remove %s within 30s", pid, cfg.SocketPath).
				WithFix("see its log").WithAction("daemon logs")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// daemonLogs prints the daemon's log file; with follow it keeps printing.
func (e *env) daemonLogs(ctx context.Context, follow bool) error {
	cfg, err := e.config()
	if err != nil {
		return err
	}
	f, err := os.Open(cfg.LogPath())
	if err != nil {
		return api.NotFound("opening daemon log: %w", err).WithFix("start the daemon").WithAction("daemon start")
	}
	defer f.Close()
	for {
		if _, err := io.Copy(e.stdout, f); err != nil {
			return fmt.Errorf("reading %s: %w", cfg.LogPath(), err)
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}
