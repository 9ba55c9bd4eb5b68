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
)

// Main runs a fake `firecracker` process: `--api-sock PATH --id ID`. It
// serves the fake API on PATH, prints the guest "serial console" to
// stdout, and exits 0 shortly after SendCtrlAltDel (the guest powered off)
// or when killed. It returns the exit code. Tests call it from TestMain
// when their binary is re-executed as the engine.
func Main(args []string) int {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	sock := fs.String("api-sock", "/run/firecracker.socket", "API socket path")
	id := fs.String("id", "anonymous-instance", "microVM id")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	srv, err := NewServer(*id)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv.Stdout = os.Stdout
	// Like Firecracker: an existing socket path is an error.
	l, err := net.Listen("unix", *sock)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Failed to open the API socket at %s: %v\n", *sock, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "fctest: API server listening on %s (id %s)\n", *sock, *id)
	done := make(chan struct{})
	var once sync.Once
	ignore := os.Getenv(EnvIgnoreCtrlAltDel) != ""
	srv.OnAction = func(action string) {
		if action == "SendCtrlAltDel" && !ignore {
			// Power off after the 204 is on its way.
			time.AfterFunc(50*time.Millisecond, func() { once.Do(func() { close(done) }) })
		}
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
