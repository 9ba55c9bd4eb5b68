package main

import (
	"context"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
)

// TestCLIVMRun runs `vm run` end to end: the fake VM's Exec is a real guest
// agent (serving on this host) behind a yamux session over net.Pipe, piped
// through the daemon's hijacked exec connection.
func TestCLIVMRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	fake := &daemontest.VMs{ExecFunc: func(_ context.Context, name string) (net.Conn, error) {
		guest, host := net.Pipe()
		go agent.NewServer(nil, "test").ServeConn(ctx, guest)
		c, err := agent.NewClient(host)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		return c.OpenStream(ctx)
	}}
	cfgPath, st := startDaemonWith(t, fake)

	code, out, errOut := cli(t, cfgPath, "vm", "run", "--name", "job", "--",
		"sh", "-c", "echo out; echo err >&2; exit 3")
	if code != 3 {
		t.Fatalf("exit code = %d, want 3\nstderr: %s", code, errOut)
	}
	if out != "out\n" {
		t.Fatalf("stdout = %q (vm run must print nothing but the command's output)", out)
	}
	if !strings.Contains(errOut, "err\n") || !strings.Contains(errOut, "  ✓ allocate") {
		t.Fatalf("stderr = %q", errOut)
	}
	if _, err := st.GetVM(context.Background(), "job"); !api.IsNotFound(err) {
		t.Fatalf("vm run left the VM behind: %v", err)
	}

	code, _, errOut = cli(t, cfgPath, "vm", "run", "--name", "kept", "--keep", "--", "true")
	if code != 0 || !strings.Contains(errOut, "kept kept") {
		t.Fatalf("--keep: %d %q", code, errOut)
	}
	if _, err := st.GetVM(context.Background(), "kept"); err != nil {
		t.Fatalf("--keep deleted the VM: %v", err)
	}
}

func TestSSHArgv(t *testing.T) {
	cfg := config.Default()
	cfg.SSHKeyPath = "/k/id"
	vm := api.VM{Runtime: api.VMRuntime{GuestIP: "10.203.0.5", VMDir: "/s/vms/a"}}
	got := strings.Join(sshArgv(cfg, vm, []string{"uname", "-a"}), " ")
	want := "ssh -i /k/id -o UserKnownHostsFile=/s/vms/a/known_hosts -o StrictHostKeyChecking=yes -o LogLevel=ERROR root@10.203.0.5 uname -a"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestCLICtrlCCancels sends SIGINT while vm create runs: the CLI cancels the
// operation, waits for it to revert and exits 130.
func TestCLICtrlCCancels(t *testing.T) {
	// Keep SIGINT from ever killing the test binary.
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, os.Interrupt)
	defer signal.Stop(guard)

	started := make(chan struct{})
	reverted := make(chan struct{})
	fake := &daemontest.VMs{CreateFunc: func(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
		done := rep.Stage("boot")
		close(started)
		<-ctx.Done()
		done(ctx.Err())
		close(reverted)
		return api.VM{}, ctx.Err()
	}}
	cfgPath, _ := startDaemonWith(t, fake)
	go func() {
		<-started
		time.Sleep(200 * time.Millisecond) // let follow register its handler
		syscall.Kill(os.Getpid(), syscall.SIGINT)
	}()
	code, _, errOut := cli(t, cfgPath, "vm", "create", "--name", "slow")
	if code != exitInterrupted {
		t.Fatalf("exit code = %d, want %d\n%s", code, exitInterrupted, errOut)
	}
	select {
	case <-reverted:
	default:
		t.Fatal("operation was not cancelled")
	}
	if !strings.Contains(errOut, "cancelling vm.create") || !strings.Contains(errOut, "  ✗ boot") {
		t.Fatalf("stderr = %q", errOut)
	}
}
