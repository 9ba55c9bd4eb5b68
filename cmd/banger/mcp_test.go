package main

import (
	"context"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
)

// mcpSession runs `banger mcp` (the real command tree) on a pipe pair and
// connects the SDK's client to it.
func mcpSession(t *testing.T, cfgPath string) *sdk.ClientSession {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		var stderr strings.Builder
		code := execute(context.Background(), []string{"--config", cfgPath, "mcp"}, inR, outW, &stderr)
		if code != 0 {
			t.Errorf("banger mcp: exit %d: %s", code, stderr.String())
		}
		outW.Close()
		done <- code
	}()
	c := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := c.Connect(ctx, &sdk.IOTransport{Reader: outR, Writer: inW}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sess.Close()
		inW.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("banger mcp did not end when its stdin closed")
		}
	})
	return sess
}

func TestMCPAgainstDaemon(t *testing.T) {
	cfgPath, st := startDaemon(t)
	ctx := context.Background()
	if err := st.CreateImage(ctx, &api.Image{Name: "deb", Source: "register", Engines: []string{"qemu"}}); err != nil {
		t.Fatal(err)
	}
	sess := mcpSession(t, cfgPath)

	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if len(tl.Description) < 40 {
			t.Errorf("tool %s has a thin description: %q", tl.Name, tl.Description)
		}
	}
	sort.Strings(names)
	want := "copy_in copy_out create_vm delete_snapshot delete_vm diff exec fork_vm list_files list_vms port_forward read_file remove_port_forward snapshot_vm write_file"
	if strings.Join(names, " ") != want {
		t.Errorf("tools %v, want %s", names, want)
	}

	res, err := sess.CallTool(ctx, &sdk.CallToolParams{Name: "list_vms", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("list_vms: %v %+v", err, res)
	}

	// a VM that does not exist: a tool error carrying the fix
	res, err = sess.CallTool(ctx, &sdk.CallToolParams{Name: "port_forward", Arguments: map[string]any{"vm": "nope", "guest_port": 80}})
	if err != nil || !res.IsError {
		t.Fatalf("port_forward to a missing VM: err %v, result %+v; want a tool error", err, res)
	}
	if text := res.Content[0].(*sdk.TextContent).Text; !strings.Contains(text, "nope") {
		t.Errorf("missing-VM error %q does not name the VM", text)
	}
	// bad input: tool errors or protocol errors, never a dead server
	bad := []sdk.CallToolParams{
		{Name: "no_such_tool", Arguments: map[string]any{}},
		{Name: "exec", Arguments: map[string]any{"vm": 42}},
		{Name: "exec", Arguments: map[string]any{"vm": "x"}},
		{Name: "exec", Arguments: map[string]any{"vm": "x", "argv": []string{"a"}, "command": "b"}},
		{Name: "read_file", Arguments: map[string]any{}},
		{Name: "write_file", Arguments: map[string]any{"vm": "x", "path": "/a", "content": "c", "mode": "999"}},
		{Name: "port_forward", Arguments: map[string]any{"vm": "nope", "guest_port": "eighty"}},
		{Name: "create_vm", Arguments: map[string]any{"vcpus": -1}},
		{Name: "create_vm", Arguments: map[string]any{"workspace": "/nonexistent", "ttl_seconds": -5}},
		{Name: "diff", Arguments: map[string]any{"vm": "x", "repo": "/"}},
		{Name: "diff", Arguments: map[string]any{}},
		{Name: "fork_vm", Arguments: map[string]any{}},
		{Name: "fork_vm", Arguments: map[string]any{"source": "nope", "count": 65}},
		{Name: "fork_vm", Arguments: map[string]any{"source": "nope"}},
		{Name: "snapshot_vm", Arguments: map[string]any{"vm": "nope"}},
		{Name: "delete_snapshot", Arguments: map[string]any{"snapshot": "nope"}},
	}
	for _, p := range bad {
		res, err := sess.CallTool(ctx, &p)
		if err == nil && !res.IsError {
			t.Errorf("%s %v: accepted", p.Name, p.Arguments)
		}
		t.Logf("%s %v: err=%v result=%v", p.Name, p.Arguments, err, res != nil && res.IsError)
	}
	if _, err := sess.CallTool(ctx, &sdk.CallToolParams{Name: "list_vms", Arguments: map[string]any{}}); err != nil {
		t.Errorf("the server is gone after bad input: %v", err)
	}
}
