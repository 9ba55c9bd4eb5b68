package forward

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
)

func TestParseSpec(t *testing.T) {
	good := map[string]api.ForwardRequest{
		"8080:80":         {HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80},
		"0:3000":          {HostAddr: "127.0.0.1", HostPort: 0, GuestPort: 3000},
		"0.0.0.0:8080:80": {HostAddr: "0.0.0.0", HostPort: 8080, GuestPort: 80},
		"[::1]:8080:80":   {HostAddr: "::1", HostPort: 8080, GuestPort: 80},
	}
	for in, want := range good {
		if got, err := ParseSpec(in); err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "80", "x:80", "8080:0", "8080:70000", "host:8080:80", "-1:80", "8080:"} {
		if _, err := ParseSpec(in); !api.IsInvalid(err) {
			t.Errorf("ParseSpec(%q) = %v, want Invalid", in, err)
		}
	}
}

// agentDialer serves a real agent server on a socketpair-like pipe.
func agentDialer(t *testing.T) Dialer {
	h, g := net.Pipe()
	srv := agent.NewServer(nil, "test")
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ServeConn(ctx, g)
	c, err := agent.NewClient(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); cancel() })
	return c.OpenStream
}

func TestServeForwardsAndSurvivesAClosedGuestPort(t *testing.T) {
	dial := agentDialer(t)
	// the "guest" HTTP server (the agent server dials 127.0.0.1 here)
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(gl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	guestPort := gl.Addr().(*net.TCPAddr).Port
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()

	for _, tc := range []struct {
		port int
		ok   bool
	}{{deadPort, false}, {guestPort, true}} {
		l, err := Listen(api.ForwardRequest{HostAddr: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errs := make(chan error, 4)
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, l, dial, tc.port, func(err error) { errs <- err }) }()
		url := "http://" + l.Addr().String()
		for i := 0; i < 2; i++ { // the forward stays up after a failed connection
			cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := cl.Get(url)
			if tc.ok {
				if err != nil {
					t.Fatalf("GET through the forward: %v", err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "hello" {
					t.Errorf("body %q", b)
				}
				continue
			}
			if err == nil {
				resp.Body.Close()
				t.Error("GET to a closed guest port succeeded")
			}
			select {
			case e := <-errs:
				if !strings.Contains(e.Error(), "nothing listens") {
					t.Errorf("error %v, want it to say nothing listens", e)
				}
			case <-time.After(10 * time.Second):
				t.Error("no error reported for the closed guest port")
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func TestListenPortInUse(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	_, err := Listen(api.ForwardRequest{HostAddr: "127.0.0.1", HostPort: l.Addr().(*net.TCPAddr).Port})
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("Listen on a used port: %v", err)
	}
}
