package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/feature"
	"banger/internal/workspace"
)

func vmSSHCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "Open an SSH session (or run CMD) in a VM",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.vmSSH(cmd.Context(), args[0], args[1:])
		},
	}
}

// sshArgv builds the ssh command line for a VM.
func sshArgv(cfg config.Config, vm api.VM, command []string) []string {
	argv := []string{"ssh",
		"-i", cfg.KeyPath(),
		"-o", "UserKnownHostsFile=" + filepath.Join(vm.Runtime.VMDir, "known_hosts"),
		"-o", "StrictHostKeyChecking=yes",
		"-o", "LogLevel=ERROR",
		"root@" + vm.Runtime.GuestIP,
	}
	return append(argv, command...)
}

// vmSSH replaces this process with the system ssh so the terminal passes
// straight through; the exit code is ssh's.
func (e *env) vmSSH(ctx context.Context, name string, command []string) error {
	cfg, err := e.config()
	if err != nil {
		return err
	}
	d, err := call(ctx, e, func(c *client.Client) (api.VMDetail, error) { return c.GetVM(ctx, name) })
	if err != nil {
		return err
	}
	if d.VM.Runtime.State != api.VMRunning || d.VM.Runtime.GuestIP == "" {
		return api.FailedPrecondition("vm %s is %s, not running", name, d.VM.Runtime.State).
			WithAction("vm start", name)
	}
	bin, err := exec.LookPath("ssh")
	if err != nil {
		return api.FailedPrecondition("ssh not found on PATH").WithFix("sudo apt-get install openssh-client")
	}
	if err := waitPort(ctx, d.VM.Runtime.GuestIP, "22", sshWait, e.stderr); err != nil {
		return api.Unavailable("sshd in vm %s did not answer on %s:22 within %s: %w", name, d.VM.Runtime.GuestIP, sshWait, err).
			WithFix("see the guest's console").WithAction("vm logs", name)
	}
	// banger writes known_hosts from the key the guest's agent reports:
	// strict from the first connection, no trust on first use.
	if _, err := call(ctx, e, func(c *client.Client) (api.KnownHosts, error) { return c.KnownHosts(ctx, name) }); err != nil {
		return fmt.Errorf("learning the ssh host key of vm %s: %w", name, err)
	}
	argv := sshArgv(cfg, d.VM, command)
	if err := syscall.Exec(bin, argv, os.Environ()); err != nil {
		return fmt.Errorf("running %s: %w", bin, err)
	}
	return nil
}

func vmRunCmd(e *env) *cobra.Command {
	var (
		req  api.VMCreateRequest
		res  resources
		lf   lifetimeFlags
		keep bool
		ws   string
	)
	cmd := &cobra.Command{
		Use:   "run [--image I] [--name N] [--keep] -- CMD...",
		Short: "Run a command in a fresh VM, then delete it",
		Long: "Run a command in a fresh VM, then delete it. The daemon owns the VM: it deletes it when\n" +
			"the command ends or this CLI goes away (even killed), unless --keep.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.VCPUs, req.MemoryMiB, req.DiskBytes, err = res.check(); err != nil {
				return err
			}
			lf.apply(&req)
			req.Run = !keep
			return e.vmRun(cmd.Context(), req, args, keep, ws)
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "VM name (generated when empty)")
	cmd.Flags().StringVar(&req.Image, "image", "", "image (default from config)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the VM after the command ends")
	cmd.Flags().BoolVar(&req.Cold, "cold", false, "boot even when the image has a warm snapshot (see banger image warm)")
	cmd.Flags().StringVar(&req.Wait, "wait", api.WaitAgent,
		"what to wait for before running CMD: agent (the guest agent only), or "+feature.Default.Names(", ")+" (its server too)")
	res.register(cmd)
	lf.register(cmd)
	cmd.Flags().StringVar(&ws, "workspace", "", "put this git working tree at /root/work and run CMD there (see vm diff; use --keep to diff afterwards)")
	return cmd
}

// vmRun creates a VM, runs argv in it through the daemon's exec stream,
// deletes the VM (unless keep) and exits with the command's exit code. The
// VM is created run-owned (req.Run): should this process die, the daemon
// deletes it once the exec stream is gone (vm/lifetime.go).
func (e *env) vmRun(ctx context.Context, req api.VMCreateRequest, argv []string, keep bool, ws string) error {
	repo, err := openWorkspace(ctx, ws)
	if err != nil {
		return err
	}
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	vm, err := e.createVM(ctx, c, req)
	if err != nil {
		return err
	}
	dir := ""
	if repo != nil {
		if err := e.pushWorkspace(ctx, c, repo, vm.Name); err != nil {
			return err
		}
		dir = workspace.GuestDir
	}
	code, runErr := e.execIn(ctx, vm.Name, argv, dir)
	if keep {
		fmt.Fprintf(e.stderr, "kept %s (delete it: banger vm delete %s)\n", vm.Name, vm.Name)
	} else {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		op, err := c.DeleteVM(dctx, vm.Name)
		if err == nil {
			_, err = c.Follow(dctx, op, nil)
		}
		if err != nil && !api.IsNotFound(err) { // the daemon may have deleted it first
			fmt.Fprintf(e.stderr, "warning: deleting %s: %v\n", vm.Name, err)
		}
	}
	if runErr != nil {
		return runErr
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// execIn runs argv in the VM with this process's stdio; SIGINT/SIGTERM
// signal the command (then drop it after a grace period).
func (e *env) execIn(ctx context.Context, name string, argv []string, dir string) (int, error) {
	c, err := e.client(ctx)
	if err != nil {
		return -1, err
	}
	conn, err := c.Exec(ctx, name)
	if err != nil {
		return -1, err
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ectx.Done():
		}
	}()
	code, err := agent.Exec(ectx, conn, api.ExecRequest{Argv: argv, Dir: dir}, e.stdin, e.stdout, e.stderr)
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return exitInterrupted, nil
	}
	return code, err
}

func vmExecCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "exec NAME -- CMD...",
		Short: "Run a command in a running VM through its guest agent",
		Long: "Runs CMD in the VM through the guest agent (no SSH needed): stdin, stdout and stderr are\n" +
			"streamed, and banger exits with the command's exit code.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := e.execIn(cmd.Context(), args[0], args[1:], "")
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
}

// sshWait bounds how long vm ssh waits for a just-booted guest's sshd: the
// agent (readiness) comes up a little before sshd does.
const sshWait = 60 * time.Second

// waitPort waits until host:port accepts a TCP connection.
func waitPort(ctx context.Context, host, port string, limit time.Duration, stderr io.Writer) error {
	deadline := time.Now().Add(limit)
	said := false
	for {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if !said {
			fmt.Fprintf(stderr, "waiting for sshd on %s:%s…\n", host, port)
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
