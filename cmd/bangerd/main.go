// Command bangerd is banger's daemon: it serves the API on a Unix socket and
// does the VM and image work. It is usually started by the banger CLI
// (detached, in its own session) or by systemd. It ignores SIGHUP so that
// closing a terminal never stops it, and VM engines it starts are detached
// too, so VMs outlive it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/store"
	"banger/internal/wiring"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (default $"+config.EnvVar+" or "+config.DefaultPath+")")
	foreground := fs.Bool("foreground", false, "also log to stderr")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (bangerd takes only flags)", fs.Args())
	}
	if *version {
		fmt.Fprintln(stdout, "bangerd", buildinfo.String())
		return nil
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	opts := daemon.Options{
		Version: buildinfo.Version,
		Services: func(st *store.Store, log *slog.Logger) (daemon.Services, error) {
			return wiring.Func(cfg, wiring.Options{Hook: crashHook(log)})(st, log)
		},
		Web: wiring.WebUI(cfg),
	}
	if *foreground {
		opts.LogOutput = stderr
	}
	d, err := daemon.New(cfg, opts)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
