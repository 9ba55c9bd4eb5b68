package main

import (
	"context"
	"debug/elf"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
)

// TestStaticBinary builds banger-agent the way the Makefile must
// (CGO_ENABLED=0), checks that it is static, runs it on a unix socket and
// talks to it with the host client.
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "banger-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %v, %.1f MiB", time.Since(start).Round(time.Millisecond), float64(st.Size())/(1<<20))

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is not static", p.Type)
		}
	}
	f.Close()

	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command(bin, "--listen-unix", sock)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var c *agent.Client
	for c == nil {
		if c, err = agent.DialSerial(ctx, sock); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("agent never listened: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer c.Close()
	h, err := c.Health(ctx)
	if err != nil || !h.OK {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	var out strings.Builder
	code, err := c.Exec(ctx, api.ExecRequest{Argv: []string{"uname", "-r"}}, nil, &out, nil)
	if err != nil || code != 0 || strings.TrimSpace(out.String()) != h.Kernel {
		t.Errorf("Exec uname -r = %d, %q, %v; want the kernel %q", code, out.String(), err, h.Kernel)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("agent did not exit within 5s of SIGTERM")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind", sock)
	}
}

func TestPickChannels(t *testing.T) {
	srv := agent.NewServer(nil, "v")
	tests := []struct {
		name        string
		serial      string
		vsock       uint
		unix        string
		want        []string
		wantErr     string
		needsNoDevs bool
	}{
		{name: "serial flag", serial: "/dev/x", want: []string{"serial /dev/x"}},
		{name: "all flags", serial: "/dev/x", vsock: 5, unix: "/tmp/s", want: []string{"serial /dev/x", "vsock port 5", "unix /tmp/s"}},
		{name: "port out of range", vsock: 1 << 33, wantErr: "out of range"},
		{name: "nothing present", wantErr: "no agent channel", needsNoDevs: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needsNoDevs {
				for _, p := range []string{defaultSerialPath, "/dev/vsock"} {
					if _, err := os.Stat(p); err == nil {
						t.Skipf("%s exists on this machine", p)
					}
				}
			}
			chans, err := pickChannels(srv, tt.serial, tt.vsock, tt.unix)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("pickChannels = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range chans {
				names = append(names, c.name)
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Errorf("channels %v, want %v", names, tt.want)
			}
		})
	}
}

func TestServeAllKeepsHealthyChannels(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	healthyStopped := make(chan struct{})
	chans := []channel{
		{"broken", func(context.Context) error { return os.ErrPermission }},
		{"healthy", func(ctx context.Context) error { <-ctx.Done(); close(healthyStopped); return ctx.Err() }},
	}
	res := make(chan error, 1)
	go func() { res <- serveAll(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), chans) }()
	select {
	case err := <-res:
		t.Fatalf("serveAll returned %v while a channel was still serving", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	<-healthyStopped
	if err := <-res; err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("serveAll = %v, want the broken channel's error", err)
	}
}
