package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/logcap"
)

// DaemonBinary is the daemon's executable name.
const DaemonBinary = "bangerd"

// StartTimeout bounds how long EnsureDaemon waits for a started daemon.
var StartTimeout = 60 * time.Second

// OutputFile is where a daemon started by EnsureDaemon writes its stdout
// and stderr (appended), inside the state dir.
func OutputFile(cfg config.Config) string { return filepath.Join(cfg.StateDir, "bangerd.out") }

// EnsureDaemon returns a client for cfg's daemon, starting bangerd first when
// the socket does not answer: bangerd next to the running executable, else on
// PATH, detached (own session, stdin /dev/null, output appended to
// OutputFile) so it outlives this process. It waits up to StartTimeout for
// /v1/status; if the daemon dies first, the error carries its output tail.
func EnsureDaemon(ctx context.Context, cfg config.Config, stderr io.Writer, opts ...Option) (*Client, error) {
	c := New(cfg.SocketPath, opts...)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := c.Status(pctx)
	timedOut := pctx.Err() != nil && ctx.Err() == nil
	cancel()
	if timedOut {
		// A daemon holds the socket but has not answered yet: it is still
		// starting (its start-up steps run before it serves, and queued
		// connections wait in the socket's backlog). Wait for it; starting a
		// second one could not take its state dir anyway.
		return c, waitAnswer(ctx, c, cfg, nil)
	}
	if err == nil || !api.IsUnavailable(err) {
		return c, err
	}
	if errors.Is(err, fs.ErrPermission) {
		// The socket exists but its mode refuses this user: starting a
		// second daemon would not help (and could not take the state dir).
		return nil, err
	}
	bin, err := findDaemon()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "starting bangerd (socket %s did not answer)…\n", cfg.SocketPath)
	exited, err := startDetached(cfg, bin)
	if err != nil {
		return nil, err
	}
	if err := waitAnswer(ctx, c, cfg, exited); err != nil {
		return nil, err
	}
	return c, nil
}

// waitAnswer polls the daemon's status until it answers, it exits (exited,
// when this process started it), or StartTimeout passes. A status call that
// times out counts as "still starting", like a refused connection.
func waitAnswer(ctx context.Context, c *Client, cfg config.Config, exited <-chan error) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Status(pctx)
		timedOut := pctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if !api.IsUnavailable(err) && !timedOut {
			return err
		}
		select {
		case werr := <-exited:
			return api.Unavailable("bangerd exited while starting (%v):\n%s", werr, tail(cfg, 20)).
				WithFix("fix the problem above, then run `banger daemon start`; `banger doctor` checks the host")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return api.Unavailable("bangerd did not answer on %s within %s:\n%s", cfg.SocketPath, StartTimeout, tail(cfg, 20)).
				WithFix("see " + cfg.LogPath() + " and " + OutputFile(cfg))
		}
	}
}

// findDaemon looks for bangerd next to the running executable, then on PATH.
func findDaemon() (string, error) {
	var looked []string
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), DaemonBinary)
		looked = append(looked, p)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	looked = append(looked, "$PATH")
	if p, err := exec.LookPath(DaemonBinary); err == nil {
		return p, nil
	}
	return "", api.FailedPrecondition("cannot find %s (looked in %s)", DaemonBinary, strings.Join(looked, ", ")).
		WithFix("run `make install`, or put bangerd on your PATH")
}

// startDetached starts bangerd in its own session and returns a channel
// that receives its exit.
func startDetached(cfg config.Config, bin string) (<-chan error, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, api.FailedPrecondition("creating state dir %s: %w", cfg.StateDir, err).
			WithFix("check state_dir in your config and its parent's permissions")
	}
	out, err := os.OpenFile(OutputFile(cfg), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", OutputFile(cfg), err)
	}
	defer out.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	var args []string
	if cfg.Path != "" {
		args = append(args, "--config", cfg.Path)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return exited, nil
}

// tail returns the last n lines of the daemon's output file and log, read
// from their ends (bangerd.log is not capped: never read it whole).
func tail(cfg config.Config, n int) string {
	var b strings.Builder
	for _, p := range []string{OutputFile(cfg), cfg.LogPath()} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			continue
		}
		text := logcap.Tail(p, n, 64<<10)
		if strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", p, text)
	}
	if b.Len() == 0 {
		return "(no output)"
	}
	return b.String()
}
