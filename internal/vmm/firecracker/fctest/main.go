package fctest

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Environment variables read by Main.
const (
	// EnvRequestLog names a file Main appends each request to (JSON lines).
	EnvRequestLog = "FCTEST_REQUEST_LOG"
	// EnvIgnoreCtrlAltDel makes the fake guest ignore SendCtrlAltDel (it
	// answers 204 and keeps running), like a guest that will not shut down.
	EnvIgnoreCtrlAltDel = "FCTEST_IGNORE_CTRLALTDEL"
	// EnvBootDelay is the guest's time from InstanceStart to its first
	// console line (a Go duration; default 300ms).
	EnvBootDelay = "FCTEST_BOOT_DELAY"
	// EnvSilentGuest makes the guest never write to its console nor answer
	// its agent (a kernel that hangs early).
	EnvSilentGuest = "FCTEST_SILENT_GUEST"
)

// Main runs a fake `firecracker` process: `--api-sock PATH --id ID
// [--log-path FILE --level LEVEL] [--metrics-path FILE]`; any other
// argument is an error, as with Firecracker. It logs its banner and each
// request to stdout until a logger is set, serves the fake API on PATH,
// prints the guest's "serial console" to stdout, and exits 0 when the
// guest reboots with reboot=k on its command line (the agent's `systemctl
// reboot`, or SendCtrlAltDel) or when killed; a guest that powers off only
// halts. It returns the exit code. Tests call it from TestMain when their
// binary is re-executed as the engine.
func Main(args []string) int {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	sock := fs.String("api-sock", "/run/firecracker.socket", "API socket path")
	id := fs.String("id", "anonymous-instance", "microVM id")
	logPath := fs.String("log-path", "", "logger output file (must exist)")
	level := fs.String("level", "Info", "logger level")
	metricsPath := fs.String("metrics-path", "", "metrics output file (must exist)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "Arguments parsing error: unexpected %q\n", fs.Args())
		return 1
	}
	switch *level {
	case "Off", "Error", "Warning", "Info", "Debug", "Trace":
	default:
		fmt.Fprintf(os.Stderr, "Invalid value for --level: %s\n", *level)
		return 1
	}
	srv, err := NewServer(*id)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv.Stdout = os.Stdout
	srv.Root = os.Getenv(EnvChroot)
	for _, p := range []string{*logPath, *metricsPath} {
		if p == "" {
			continue
		}
		f, err := os.OpenFile(srv.HostPath(p), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "Failed to open %s: %v\n", p, err)
			return 1
		}
		defer f.Close()
		if p == *logPath {
			srv.SetLogger(f)
		}
	}
	srv.Logf("Running Firecracker v%s", Version)
	// Like Firecracker: an existing socket path is an error.
	l, err := net.Listen("unix", srv.HostPath(*sock))
	if err != nil {
		fmt.Fprintf(os.Stderr, "Failed to open the API socket at %s: %v\n", *sock, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "fctest: API server listening on %s (id %s)\n", *sock, *id)
	done := make(chan struct{})
	var once sync.Once
	srv.IgnoreCtrlAltDel = os.Getenv(EnvIgnoreCtrlAltDel) != ""
	srv.Silent = os.Getenv(EnvSilentGuest) != ""
	if d, err := time.ParseDuration(os.Getenv(EnvBootDelay)); err == nil {
		srv.BootDelay = d
	}
	srv.OnExit = func() {
		// The guest reset: exit after the answer in flight is on its way.
		time.AfterFunc(50*time.Millisecond, func() { once.Do(func() { close(done) }) })
	}
	if path := os.Getenv(EnvRequestLog); path != "" {
		srv.OnRequest = logRequest(path)
	}
	go func() {
		if err := http.Serve(l, srv); err != nil && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-sig:
	}
	l.Close() // removes the socket file
	srv.Close()
	return 0
}

// logRequest returns a hook appending each request to path (JSON lines).
func logRequest(path string) func(Request) {
	var mu sync.Mutex
	return func(r Request) {
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return
		}
		defer f.Close()
		_ = json.NewEncoder(f).Encode(r)
	}
}
