package attack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/daemontest"
	"banger/internal/progress"
)

// A member of the socket's group who is not root (uid 65534 with the
// socket's gid as a supplementary group — the banger group's shape, without
// adding a group to this machine) asks the root daemon to build an image
// with a root-only file copied in (an old client's host-path request, made
// with curl) and to register one as a kernel. Both are refused before the
// image service is called, and the file's atime shows nobody opened it.
// The image service stands in for the real one by doing what the real
// one does first with such a request: it opens the named files (image/
// build's copy stage, image/register's copy stage) and keeps what it read.
// The same requests from root (this process) still reach the service.
func TestAttackHostFilesNeedRootPeer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon runs as root and the attacker as uid 65534")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl: apt-get install curl")
	}
	const groupGID = 4242 // the socket's group; the attacker is a member
	dir := openDir(t)
	secret := filepath.Join(dir, "shadow")
	if err := os.WriteFile(secret, []byte("root:TOPSECRET:19000::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(secret, old, old); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var leaked []string // what the image service read, per request
	readAll := func(paths []string) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				leaked = append(leaked, string(b))
			}
		}
	}
	images := &daemontest.Images{
		BuildFunc: func(_ context.Context, req api.ImageBuildRequest, _ progress.Reporter) (api.Image, error) {
			readAll(req.HostPaths())
			return api.Image{}, api.Unavailable("test: stop here")
		},
		RegisterFunc: func(_ context.Context, req api.ImageRegisterRequest, _ progress.Reporter) (api.Image, error) {
			readAll(req.HostPaths())
			return api.Image{}, api.Unavailable("test: stop here")
		},
	}
	cfg := config.Default()
	cfg.StateDir, cfg.SocketPath, cfg.Path = dir+"/state", dir+"/run/bangerd.sock", dir+"/config.toml"
	d, err := daemon.New(cfg, daemon.Options{Services: daemontest.Services(nil, images), ShutdownGrace: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// The socket as the banger group has it: 0660, group-owned.
	for _, p := range []string{dir + "/run"} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(cfg.SocketPath, 0, groupGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.SocketPath, 0o660); err != nil {
		t.Fatal(err)
	}

	asMember := func(path string, body any) (int, string) {
		t.Helper()
		j, _ := json.Marshal(body)
		cmd := exec.Command(curl, "-sS", "--unix-socket", cfg.SocketPath, "-X", "POST",
			"-H", "Content-Type: application/json", "--data-binary", "@-",
			"-w", "\n%{http_code}", "http://banger"+path)
		cmd.Stdin = strings.NewReader(string(j))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{groupGID}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl as uid 65534: %v: %s", err, out)
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndex(s, "\n")
		var code int
		fmt.Sscan(s[i+1:], &code)
		return code, s[:max(i, 0)]
	}

	build := api.ImageBuildRequest{Name: "pwn", From: "base", Copy: []api.ImageCopy{{Src: secret, Dst: "/root/shadow"}}}
	register := api.ImageRegisterRequest{Name: "pwn2", Kernel: secret, Initrd: secret, Rootfs: secret}
	for _, c := range []struct {
		path string
		body any
	}{{"/v1/images/build", build}, {"/v1/images/register", register},
		{"/v1/images/build", api.ImageBuildRequest{Name: "pwn3", From: "base", Script: secret}}} {
		code, body := asMember(c.path, c.body)
		time.Sleep(200 * time.Millisecond) // an operation begun would have run by now
		mu.Lock()
		got := append([]string(nil), leaked...)
		mu.Unlock()
		if len(got) > 0 {
			t.Fatalf("POST %s as uid 65534: the daemon opened %s for it and read %q (answer %d %s)", c.path, secret, got, code, body)
		}
		if code != 400 || !strings.Contains(body, `"kind":"Invalid"`) || !strings.Contains(body, "uid 65534 may not") {
			t.Fatalf("POST %s as uid 65534: %d %s, want 400 Invalid naming the refusal", c.path, code, body)
		}
		t.Logf("POST %s as uid 65534: %d %s", c.path, code, body)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(secret, &st); err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(st.Atim.Unix()); !at.Equal(old) {
		t.Fatalf("%s was read (atime %s, was %s)", secret, at, old)
	}

	// Root (this process, through the typed client) may still name host
	// paths: the request reaches the image service.
	c := client.New(cfg.SocketPath)
	if _, err := c.BuildImage(ctx, build); err != nil {
		t.Fatalf("build as root: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(leaked)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a root peer's build never reached the image service")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openDir is a temp dir the attacker's uid may traverse (t.TempDir is 0700).
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
