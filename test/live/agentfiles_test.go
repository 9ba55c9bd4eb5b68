package live

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
)

// TestIntegrationLiveAgentFiles drives one guest through the MCP server
// (the SDK's client over the real `banger mcp` stdio pipe), vm cp both ways
// and vm port-forward, then deletes it through MCP.
func TestIntegrationLiveAgentFiles(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	sess := e.mcpSession(ctx)
	name := "af-" + randHex(2)

	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MCP tools/list: %d tools", len(tools.Tools))
	for _, tl := range tools.Tools {
		t.Logf("  %s: %.70s…", tl.Name, tl.Description)
	}
	call(t, ctx, sess, "create_vm", map[string]any{"name": name})
	out := call(t, ctx, sess, "exec", map[string]any{"vm": name, "command": "echo hi from $(hostname); echo oops >&2; exit 3"})
	if !strings.Contains(out, `"exit_code":3`) || !strings.Contains(out, "hi from "+name) || !strings.Contains(out, "oops") {
		t.Errorf("exec result: %s", out)
	}
	call(t, ctx, sess, "write_file", map[string]any{"vm": name, "path": "/root/notes/a.txt", "content": "hello\nworld\n", "mode": "600"})
	if out := call(t, ctx, sess, "read_file", map[string]any{"vm": name, "path": "notes/a.txt"}); !strings.Contains(out, `hello\nworld\n`) {
		t.Errorf("read_file: %s", out)
	}
	var ls struct {
		Entries []struct {
			Name, Type, Mode string
			Size             int64
		}
	}
	json.Unmarshal([]byte(call(t, ctx, sess, "list_files", map[string]any{"vm": name, "path": "/root/notes"})), &ls)
	if len(ls.Entries) != 1 || ls.Entries[0].Name != "a.txt" || ls.Entries[0].Type != "file" || ls.Entries[0].Mode != "600" || ls.Entries[0].Size != 12 {
		t.Errorf("list_files: %+v", ls)
	}

	t.Logf("test image rootfs %s; agent in the guest: %s", e.image.Rootfs,
		strings.TrimSpace(e.must("vm", "exec", name, "--", "sha256sum", "/usr/local/bin/banger-agent")))
	e.checkCp(name)
	e.checkCpBadInput(name)
	e.checkPortForward(name)

	// fork_vm from the running VM: the child has its files, its own name.
	var fk struct {
		Snapshot string
		VMs      []struct{ Name, IP string }
	}
	json.Unmarshal([]byte(call(t, ctx, sess, "fork_vm", map[string]any{"source": name, "name": name + "-f"})), &fk)
	if len(fk.VMs) != 1 || fk.VMs[0].Name != name+"-f" || fk.Snapshot == "" {
		t.Fatalf("fork_vm: %+v", fk)
	}
	if out := call(t, ctx, sess, "exec", map[string]any{"vm": name + "-f", "command": "hostname; cat /root/notes/a.txt"}); !strings.Contains(out, name+`-f\nhello\nworld`) {
		t.Errorf("exec in the fork: %s", out)
	}
	call(t, ctx, sess, "delete_vm", map[string]any{"vm": name + "-f"})
	call(t, ctx, sess, "delete_snapshot", map[string]any{"snapshot": fk.Snapshot})

	call(t, ctx, sess, "delete_vm", map[string]any{"vm": name})
	var vms []api.VM
	e.mustJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Errorf("VMs left after delete_vm: %+v", vms)
	}
	e.assertNoLeaks()
}

// mcpSession starts `banger mcp` in the env's namespace and connects the
// MCP Go SDK's client to its stdio.
func (e *env) mcpSession(ctx context.Context) *sdk.ClientSession {
	cmd := exec.Command("ip", "netns", "exec", e.ns, filepath.Join(binDir, "banger"), "--config", e.config, "mcp")
	c := sdk.NewClient(&sdk.Implementation{Name: "live-test", Version: "1"}, nil)
	sess, err := c.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		e.t.Fatalf("connecting to banger mcp: %v", err)
	}
	e.t.Cleanup(func() { sess.Close() })
	return sess
}

// call calls a tool and returns its text; a tool error fails the test.
func call(t *testing.T, ctx context.Context, sess *sdk.ClientSession, tool string, args map[string]any) string {
	t.Helper()
	begin := time.Now()
	res, err := sess.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("MCP %s: %v", tool, err)
	}
	text := res.Content[0].(*sdk.TextContent).Text
	if res.IsError {
		t.Fatalf("MCP %s: tool error: %s", tool, text)
	}
	a, _ := json.Marshal(args)
	t.Logf("MCP tools/call %s %s (%.1fs) → %.300s", tool, a, time.Since(begin).Seconds(), text)
	return text
}

// checkCp copies a tree in and out with modes and symlinks, a guest
// symlink pointing out of the destination, and 100 MiB both ways.
func (e *env) checkCp(vm string) {
	t := e.t
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o700)
	os.Chmod(filepath.Join(tree, "sub"), 0o710)
	os.WriteFile(filepath.Join(tree, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o750)
	os.Chmod(filepath.Join(tree, "run.sh"), 0o750)
	os.WriteFile(filepath.Join(tree, "sub", "secret"), []byte("s"), 0o600)
	os.Symlink("../run.sh", filepath.Join(tree, "sub", "link"))
	e.must("vm", "cp", tree, vm+":/root/")
	got := e.must("vm", "exec", vm, "--", "sh", "-c", "cd /root/tree && stat -c '%n %a %F' run.sh sub sub/secret && readlink sub/link && sub/link")
	for _, want := range []string{"run.sh 750 regular file", "sub 710 directory", "sub/secret 600 regular file", "../run.sh", "ran"} {
		if !strings.Contains(got, want) {
			t.Errorf("in the guest after cp in, missing %q:\n%s", want, got)
		}
	}
	// a guest symlink pointing out of the destination comes back as a link
	e.must("vm", "exec", vm, "--", "ln", "-s", "/etc", "/root/tree/etc-link")
	back := filepath.Join(dir, "back")
	e.must("vm", "cp", vm+":/root/tree", back)
	for p, mode := range map[string]os.FileMode{"run.sh": 0o750, "sub": 0o710 | os.ModeDir, "sub/secret": 0o600} {
		if fi, err := os.Lstat(filepath.Join(back, p)); err != nil || fi.Mode() != mode {
			t.Errorf("%s after the round trip: %v (%v), want %v", p, fi.Mode(), err, mode)
		}
	}
	if l, _ := os.Readlink(filepath.Join(back, "sub", "link")); l != "../run.sh" {
		t.Errorf("sub/link -> %q after the round trip", l)
	}
	if l, _ := os.Readlink(filepath.Join(back, "etc-link")); l != "/etc" {
		t.Errorf("etc-link -> %q, want the link kept (not followed)", l)
	}
	if _, err := os.Stat(filepath.Join(back, "etc-link", "hostname.banger-test")); err == nil {
		t.Error("the copy wrote through the guest's symlink")
	}

	// throughput: 100 MiB in and out
	big := filepath.Join(dir, "big")
	os.MkdirAll(big, 0o755)
	f, _ := os.Create(filepath.Join(big, "data"))
	io.CopyN(f, rand.Reader, 100<<20)
	f.Close()
	for _, dirn := range []struct{ src, dst, what string }{
		{big, vm + ":/root/", "in"}, {vm + ":/root/big", filepath.Join(dir, "big-back"), "out"},
	} {
		var res struct {
			Stats   struct{ Bytes int64 } `json:"stats"`
			Seconds float64               `json:"seconds"`
		}
		e.mustJSON(&res, "vm", "cp", dirn.src, dirn.dst)
		t.Logf("cp %s of a 100 MiB tree: %d bytes in %.1fs = %.1f MiB/s", dirn.what, res.Stats.Bytes, res.Seconds,
			float64(res.Stats.Bytes)/(1<<20)/res.Seconds)
	}
	a, _ := os.ReadFile(filepath.Join(big, "data"))
	b, _ := os.ReadFile(filepath.Join(dir, "big-back", "data"))
	if len(a) != 100<<20 || string(a) != string(b) {
		t.Errorf("the 100 MiB file changed on its round trip (%d → %d bytes)", len(a), len(b))
	}
}

// checkCpBadInput: a missing VM, a missing guest path, a host file where a
// directory is needed, a missing guest directory.
func (e *env) checkCpBadInput(vm string) {
	file := filepath.Join(e.t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "cp", "nosuchvm:/etc/hostname", "/tmp"}, "not found"},
		{[]string{"vm", "cp", vm + ":/root/nope", "/tmp"}, "no /root/nope in the guest"},
		{[]string{"vm", "cp", vm + ":/etc/hostname", file + "/x"}, "does not exist"},
		{[]string{"vm", "cp", file, vm + ":/no/such/dir/x"}, "no directory /no/such/dir in the guest"},
		{[]string{"vm", "cp", file, "/tmp/x"}, "exactly one of"},
	} {
		r := e.banger(c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			e.t.Errorf("banger %v: exit %d, stderr %q; want an error with %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(file)); len(ents) != 1 {
		e.t.Errorf("partial files left: %v", ents)
	}
}

const guestHTTPServer = `use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "listen: $!";
while (my $c = $s->accept) { my $l = <$c>; print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello-from-guest\n"; close $c }`

// checkPortForward forwards to a tiny HTTP server in the guest, detached and
// in the foreground, and checks the bad inputs.
func (e *env) checkPortForward(vm string) {
	t := e.t
	e.must("vm", "exec", vm, "--", "sh", "-c", "nohup perl -e '"+guestHTTPServer+"' >/tmp/httpd.log 2>&1 & sleep 1")
	curl := func(url string) (string, error) {
		out, err := exec.Command("ip", "netns", "exec", e.ns, "curl", "-sS", "--max-time", "20", url).CombinedOutput()
		return string(out), err
	}
	var f api.Forward
	e.mustJSON(&f, "vm", "port-forward", "--detach", vm, "0:8080")
	if !strings.HasPrefix(f.URL, "http://127.0.0.1:") {
		t.Fatalf("detached forward URL %q is not on loopback", f.URL)
	}
	if out, err := curl(f.URL); err != nil || out != "hello-from-guest\n" {
		t.Errorf("curl %s: %q %v", f.URL, out, err)
	}
	var dead api.Forward
	e.mustJSON(&dead, "vm", "port-forward", "--detach", vm, "0:9")
	if out, err := curl(dead.URL); err == nil {
		t.Errorf("curl through a forward to a closed guest port worked: %q", out)
	}
	if out, err := curl(f.URL); err != nil || out != "hello-from-guest\n" {
		t.Errorf("the forward broke after another one failed: %q %v", out, err)
	}
	var d api.VMDetail
	e.mustJSON(&d, "vm", "show", vm)
	if len(d.Forwards) != 2 {
		t.Errorf("vm show lists %d forwards, want 2: %+v", len(d.Forwards), d.Forwards)
	}
	port := strings.TrimPrefix(f.URL, "http://127.0.0.1:")
	if r := e.banger("vm", "port-forward", "--detach", vm, port+":8080"); r.code == 0 || !strings.Contains(r.stderr, "already in use") {
		t.Errorf("a second forward on host port %s: exit %d %q", port, r.code, r.stderr)
	}
	e.must("vm", "port-forward", "--remove", vm, strings.TrimPrefix(dead.URL, "http://127.0.0.1:"))

	// the foreground form, until SIGINT
	cmd := exec.Command("ip", "netns", "exec", e.ns, filepath.Join(binDir, "banger"), "--config", e.config, "vm", "port-forward", vm, "0:8080")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	url, _ := bufio.NewReader(stdout).ReadString('\n')
	if out, err := curl(strings.TrimSpace(url)); err != nil || out != "hello-from-guest\n" {
		t.Errorf("foreground forward %s: %q %v", url, out, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("port-forward after SIGINT: %v", err)
	}
}
