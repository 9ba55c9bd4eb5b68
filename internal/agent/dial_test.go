package agent

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"

	"banger/internal/api"
)

func TestDial(t *testing.T) {
	c := newPair(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		s, err := l.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(io.LimitReader(s, 4))
		s.Write(append([]byte("echo:"), b...))
		s.Close()
	}()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	stream, err := c.OpenStream(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := Dial(testCtx(t), stream, port)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	conn.Write([]byte("ping"))
	got, _ := io.ReadAll(conn)
	if string(got) != "echo:ping" {
		t.Errorf("through the dial: %q, want echo:ping", got)
	}

	// nothing listening: an Unavailable error naming the port
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	free := uint16(l2.Addr().(*net.TCPAddr).Port)
	l2.Close()
	stream, _ = c.OpenStream(testCtx(t))
	if _, err := Dial(testCtx(t), stream, free); !api.IsUnavailable(err) || !strings.Contains(err.Error(), "nothing listens") {
		t.Errorf("dial to a closed port: %v, want Unavailable naming it", err)
	}
	stream, _ = c.OpenStream(testCtx(t))
	if _, err := Dial(testCtx(t), stream, 0); !api.IsInvalid(err) {
		t.Errorf("dial port 0: %v, want Invalid", err)
	}
}

// TestDialOldAgent: an agent from before the dial op refuses it as an
// unknown op; the error says the image is too old, not "start a server".
func TestDialOldAgent(t *testing.T) {
	host, guest := net.Pipe()
	go func() {
		br := bufio.NewReader(guest)
		br.ReadString('\n')
		guest.Write([]byte(`{"ok":false,"error":"unknown op \"dial\" (want health, exec, pty or clock)"}` + "\n"))
		guest.Close()
	}()
	_, err := Dial(testCtx(t), host, 8080)
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "older banger") {
		t.Errorf("dial through an old agent: %v", err)
	}
}
