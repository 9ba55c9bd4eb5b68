package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/api"
)

// TestServeReopen drives the serial loop with socketpairs standing in for
// the port: after the host disconnects (EOF) the loop must open the port
// again and serve a fresh session, and it must survive a failed open.
func TestServeReopen(t *testing.T) {
	srv := NewServer(testLogger(), "v")
	hosts := make(chan net.Conn)
	var opens atomic.Int32
	open := func() (io.ReadWriteCloser, error) {
		n := opens.Add(1)
		if n == 2 {
			return nil, errors.New("device or resource busy") // transient: retried
		}
		host, guest := socketPair(t)
		hosts <- host
		return guest, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serveReopen(ctx, open) }()

	for i := range 3 {
		var host net.Conn
		select {
		case host = <-hosts:
		case <-time.After(5 * time.Second):
			t.Fatalf("session %d: the port was not reopened", i)
		}
		c, err := NewClient(host)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Health(testCtx(t)); err != nil {
			t.Fatalf("session %d: Health: %v", i, err)
		}
		c.Close() // the guest reads EOF
	}
	cancel()
	// The loop may be blocked handing out a port nobody takes.
	go func() {
		for h := range hosts {
			h.Close()
		}
	}()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("serveReopen = %v, want context.Canceled", err)
	}
	close(hosts)
	if n := opens.Load(); n < 4 {
		t.Errorf("port opened %d times, want at least 4 (3 sessions and one failure)", n)
	}
}

func TestServeSerialMissingDevice(t *testing.T) {
	srv := NewServer(testLogger(), "v")
	err := srv.ServeSerial(testCtx(t), filepath.Join(t.TempDir(), "org.banger.agent"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ServeSerial on a missing device = %v, want a not-exist error", err)
	}
}

// serveUnix serves the agent on a unix listener (like QEMU's chardev
// socket) and returns its path.
func serveUnix(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(testLogger(), "v").ServeListener(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("ServeListener = %v, want context.Canceled", err)
		}
	})
	return path
}

func TestDialSerial(t *testing.T) {
	path := serveUnix(t)
	c, err := DialSerial(testCtx(t), path)
	if err != nil {
		t.Fatalf("DialSerial: %v", err)
	}
	defer c.Close()
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Errorf("Health: %v", err)
	}
	var out strings.Builder
	if code, err := c.Exec(testCtx(t), api.ExecRequest{Argv: []string{"echo", "hi"}}, nil, &out, nil); err != nil || code != 0 || out.String() != "hi\n" {
		t.Errorf("Exec = %d, %q, %v", code, out.String(), err)
	}
	c.Close()
	select {
	case <-c.Closed():
	case <-time.After(time.Second):
		t.Error("Closed() not closed after Close")
	}

	_, err = DialSerial(testCtx(t), filepath.Join(t.TempDir(), "nope.sock"))
	if !api.IsUnavailable(err) {
		t.Errorf("DialSerial to a missing socket = %v, want Unavailable", err)
	}
}

// fakeFirecracker is a Firecracker-style hybrid vsock socket: it reads the
// CONNECT line and answers with answer(line); "" closes the connection.
func fakeFirecracker(t *testing.T, answer func(line string) string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vsock.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := NewServer(testLogger(), "v")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				// Byte-wise, as Firecracker does: nothing after the line is consumed.
				var line []byte
				b := make([]byte, 1)
				for {
					if _, err := conn.Read(b); err != nil {
						conn.Close()
						return
					}
					if b[0] == '\n' {
						break
					}
					line = append(line, b[0])
				}
				a := answer(string(line))
				if a == "" {
					conn.Close()
					return
				}
				if a == "hang" {
					<-ctx.Done()
					conn.Close()
					return
				}
				conn.Write([]byte(a))
				srv.ServeConn(ctx, conn)
			}()
		}
	}()
	t.Cleanup(func() { cancel(); l.Close(); <-done })
	return path
}

func TestDialHybridVsock(t *testing.T) {
	okIf1024 := func(line string) string {
		if line == "CONNECT 1024" {
			return "OK 1073741824\n"
		}
		return ""
	}
	t.Run("ok", func(t *testing.T) {
		c, err := DialHybridVsock(testCtx(t), fakeFirecracker(t, okIf1024), 1024)
		if err != nil {
			t.Fatalf("DialHybridVsock: %v", err)
		}
		defer c.Close()
		if _, err := c.Health(testCtx(t)); err != nil {
			t.Errorf("Health: %v", err)
		}
	})
	tests := []struct {
		name    string
		answer  func(string) string
		timeout time.Duration
		wantSub string
	}{
		{"refused", okIf1024, 0, "connection closed without an answer"}, // asks port 1025
		{"garbage", func(string) string { return "NOPE\n" }, 0, `unexpected answer to CONNECT: "NOPE"`},
		{"no answer", func(string) string { return "hang" }, 200 * time.Millisecond, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			c, err := DialHybridVsock(ctx, fakeFirecracker(t, tt.answer), 1025)
			if err == nil {
				c.Close()
				t.Fatal("DialHybridVsock succeeded")
			}
			if !api.IsUnavailable(err) || !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("DialHybridVsock = %v, want Unavailable containing %q", err, tt.wantSub)
			}
		})
	}
	if _, err := DialHybridVsock(testCtx(t), filepath.Join(t.TempDir(), "none.sock"), 1024); !api.IsUnavailable(err) {
		t.Errorf("DialHybridVsock to a missing socket = %v, want Unavailable", err)
	}
}

func TestHealthHonoursContext(t *testing.T) {
	// A guest that never answers: the host connects before the agent runs.
	host, guest := socketPair(t)
	defer guest.Close()
	go io.Copy(io.Discard, bufio.NewReader(guest))
	c, err := NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Health(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Health against a silent guest = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Health took %v past its 200ms deadline", took)
	}
}

// TestIntegrationVsockLoopback serves and dials AF_VSOCK through the local
// loopback transport (CID 1).
func TestIntegrationVsockLoopback(t *testing.T) {
	if _, err := os.Stat("/sys/module/vsock_loopback"); err != nil {
		t.Skip("no vsock loopback transport: modprobe vsock_loopback")
	}
	const port = 47_000
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(testLogger(), "v").ServeVsock(ctx, port) }()
	t.Cleanup(func() { cancel(); <-done })
	var c *Client
	var err error
	for range 50 {
		if c, err = DialVsock(testCtx(t), 1, port); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("DialVsock: %v", err)
	}
	defer c.Close()
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Errorf("Health over vsock: %v", err)
	}
}
