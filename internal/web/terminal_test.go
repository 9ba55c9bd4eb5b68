package web

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/api"
)

// agentExec serves a real guest agent on one end of a socketpair (running
// commands on this host) and returns an ExecFunc opening streams to it.
func agentExec(t *testing.T) ExecFunc {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	host, guest := conn(fds[0]), conn(fds[1])
	ctx, cancel := context.WithCancel(context.Background())
	srv := agent.NewServer(slog.New(slog.DiscardHandler), "test")
	go srv.ServeConn(ctx, guest)
	c, err := agent.NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); cancel() })
	return func(ctx context.Context, name string) (net.Conn, error) {
		if name != "box" {
			return nil, api.NotFound("vm %q not found", name).WithFix("see banger vm list")
		}
		return c.OpenStream(ctx)
	}
}

func dialTerminal(t *testing.T, s *Server, name, origin string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	tk, err := s.tickets.issue(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return websocket.Dial(ctx, "ws://"+s.Addr().String()+"/v1/vms/"+name+"/terminal?rows=30&cols=100&ticket="+tk,
		&websocket.DialOptions{HTTPHeader: h})
}

// The terminal runs a shell under a PTY through the real agent protocol:
// keystrokes in, output out, resize honoured, exit code reported.
func TestTerminalShell(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	s, _ := newTestServer(t, Options{Exec: agentExec(t)})
	c, _, err := dialTerminal(t, s, "box", "http://"+s.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resize, _ := json.Marshal(TermMessage{Type: "resize", Rows: 40, Cols: 123})
	c.Write(ctx, websocket.MessageText, resize)
	c.Write(ctx, websocket.MessageBinary, []byte("stty size; echo mark-$((6*7)); exit 3\n"))
	var out strings.Builder
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("reading terminal: %v; output so far:\n%s", err, out.String())
		}
		if typ == websocket.MessageBinary {
			out.Write(data)
			continue
		}
		var m TermMessage
		json.Unmarshal(data, &m)
		if m.Type != "exit" {
			t.Fatalf("unexpected message %s", data)
		}
		if m.Code != 3 {
			t.Errorf("exit code %d, want 3", m.Code)
		}
		break
	}
	if !strings.Contains(out.String(), "mark-42") {
		t.Errorf("terminal output lacks the command's output:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "40 123") {
		t.Errorf("resize to 40x123 not seen by stty:\n%s", out.String())
	}
}

func TestTerminalErrorsAndOrigin(t *testing.T) {
	s, _ := newTestServer(t, Options{Exec: agentExec(t)})
	if _, resp, err := dialTerminal(t, s, "box", "http://evil.example"); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("cross-origin terminal: %v %v, want 403", err, resp)
	}
	if _, resp, err := dialTerminal(t, s, "box", ""); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("terminal without Origin: %v %v, want 403", err, resp)
	}
	c, _, err := dialTerminal(t, s, "ghost", "http://"+s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m TermMessage
	json.Unmarshal(data, &m)
	if m.Type != "error" || !strings.Contains(m.Message, `"ghost" not found`) || (m.Fix == "" && m.Action == nil) {
		t.Fatalf("terminal to a missing VM: %s, want the daemon's error with its fix", data)
	}
}
