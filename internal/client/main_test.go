package client

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
)

// testDaemonEnv makes this test binary act as bangerd (for EnsureDaemon).
const testDaemonEnv = "BANGER_CLIENT_TEST_DAEMON"

func TestMain(m *testing.M) {
	if os.Getenv(testDaemonEnv) == "1" {
		os.Exit(runTestDaemon())
	}
	os.Exit(m.Run())
}

// runTestDaemon is a minimal bangerd: --config, no services.
func runTestDaemon() int {
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	path := fs.String("config", "", "")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := daemon.New(cfg, daemon.Options{Version: "test-daemon", Services: daemontest.Services(nil, nil)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
