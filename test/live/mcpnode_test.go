package live

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/testimage"
)

// mcpSDKVersion pins the MCP TypeScript SDK the node client test installs.
const mcpSDKVersion = "1.32.2"

// nodeMCPDir installs the MCP TypeScript SDK from npm into the test cache
// (not the repository) once, and copies the client script beside it.
func nodeMCPDir(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: sudo apt-get install nodejs npm (make deps installs the test packages)", tool)
		}
	}
	dir := filepath.Join(testimage.CacheDir(), "npm-mcp-"+mcpSDKVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules/@modelcontextprotocol/sdk/package.json")); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--prefix", dir,
			"@modelcontextprotocol/sdk@"+mcpSDKVersion)
		cmd.Env = append(os.Environ(), nodeCAEnv()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install @modelcontextprotocol/sdk@%s: %v\n%s", mcpSDKVersion, err, out)
		}
	}
	script, err := os.ReadFile("testdata/mcp-node-client.mjs")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "client.mjs"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nodeCAEnv trusts the host's extra CAs (a TLS proxy in front of npm).
func nodeCAEnv() []string {
	const bundle = "/etc/ssl/certs/ca-certificates.crt"
	if _, err := os.Stat(bundle); err != nil {
		return nil
	}
	return []string{"NODE_EXTRA_CA_CERTS=" + bundle, "npm_config_cafile=" + bundle}
}

// TestIntegrationLiveMCPNodeClient drives `banger mcp` with the MCP
// TypeScript SDK's client from npm: tools listed, a VM created (with a TTL),
// a command run, a file written and read, a diff (when the server has the
// tool), a tool error for a missing VM, the VM deleted. The transcript goes
// to the test log.
func TestIntegrationLiveMCPNodeClient(t *testing.T) {
	e := newEnv(t)
	dir := nodeMCPDir(t)
	vm := "mcp-node-" + randHex(2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "client.mjs"),
		"ip", "netns", "exec", e.ns, filepath.Join(binDir, "banger"), "--config", e.config, "mcp")
	cmd.Dir = dir
	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"config", "user.email", "t@example.com"}, {"config", "user.name", "t"}} {
		run(t, "git", append([]string{"-C", repo}, args...)...)
	}
	os.WriteFile(filepath.Join(repo, "a.txt"), []byte("committed\n"), 0o644)
	run(t, "git", "-C", repo, "add", "-A")
	run(t, "git", "-C", repo, "commit", "-q", "-m", "first")
	os.WriteFile(filepath.Join(repo, "dirty.txt"), []byte("uncommitted\n"), 0o644)
	cmd.Env = append(os.Environ(), "MCP_TEST_VM="+vm, "MCP_TEST_REPO="+repo)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("MCP transcript (TypeScript SDK client):\n%s", stdout.String())
	if err != nil {
		t.Fatalf("node client: %v\nstderr:\n%s", err, stderr.String())
	}
	var tr struct {
		Server struct{ Name, Version string }
		Tools  []struct{ Name string }
		Calls  []struct {
			Name              string
			IsError           bool
			Skipped           string
			Text              string
			StructuredContent json.RawMessage
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &tr); err != nil {
		t.Fatalf("transcript: %v", err)
	}
	if tr.Server.Name != "banger" || len(tr.Tools) < 8 {
		t.Errorf("server %+v with %d tools", tr.Server, len(tr.Tools))
	}
	want := []struct {
		name, has string
		isErr     bool
	}{
		{"create_vm", `"expires_at"`, false},
		{"exec", `"exit_code":7`, false},
		{"write_file", "", false},
		{"read_file", "written by the TypeScript SDK", false},
		{"read_file", "from-node", false},
		{"diff", `"branch":"banger/` + vm + `"`, false},
		{"exec", "not found", true},
		{"delete_vm", "", false},
		{"list_vms", `"vms":[]`, false},
	}
	if len(tr.Calls) != len(want) {
		t.Fatalf("%d calls in the transcript, want %d", len(tr.Calls), len(want))
	}
	for i, w := range want {
		c := tr.Calls[i]
		if c.Skipped != "" {
			t.Logf("%s skipped: %s", c.Name, c.Skipped)
			continue
		}
		body := c.Text + string(c.StructuredContent)
		if c.Name != w.name || c.IsError != w.isErr || !strings.Contains(body, w.has) {
			t.Errorf("call %d %s: isError=%v %s; want %s isError=%v containing %q", i, c.Name, c.IsError, body, w.name, w.isErr, w.has)
		}
	}
	if got := run(t, "git", "-C", repo, "diff", "--name-status", "main", "banger/"+vm); got != "M\ta.txt\nA\tadded.txt\nA\tdirty.txt\n" {
		t.Errorf("branch banger/%s against main:\n%s", vm, got)
	}
	if got := run(t, "git", "-C", repo, "status", "--porcelain"); got != "?? dirty.txt\n" {
		t.Errorf("the user's working tree changed: %q", got)
	}
	var vms []api.VM
	e.mustJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Errorf("VMs left: %+v", vms)
	}
	e.assertNoLeaks()
}
