package mcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/agent"
	"banger/internal/api"
)

const (
	// maxOutput bounds stdout and stderr each as returned to the model.
	maxOutput = 64 << 10
	// defaultTimeout and maxTimeout bound an exec.
	defaultTimeout = 2 * time.Minute
	maxTimeout     = 30 * time.Minute
)

type execIn struct {
	VM             string            `json:"vm" jsonschema:"the VM's name"`
	Argv           []string          `json:"argv,omitempty" jsonschema:"the command and its arguments, run without a shell; give this or command"`
	Command        string            `json:"command,omitempty" jsonschema:"a shell command line run with sh -c (pipes, redirections, &&); give this or argv"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"working directory in the guest; /root when empty"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"extra environment variables"`
	Stdin          string            `json:"stdin,omitempty" jsonschema:"text fed to the command's standard input"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds (default 120, at most 1800)"`
}

// ExecOut is the result of exec.
type ExecOut struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

func (s *Server) addExecTools(srv *sdk.Server) {
	sdk.AddTool(srv, &sdk.Tool{Name: "exec",
		Description: "Run a command in a running VM as root and wait for it: returns exit_code, stdout and stderr " +
			"(each cut to 64 KiB with a marker saying how much was dropped). Give argv for one program, or command for a " +
			"shell line. Non-zero exit codes are results, not errors. For long jobs raise timeout_seconds or run them in " +
			"the background with nohup and poll.",
	}, s.exec)
}

func (s *Server) exec(ctx context.Context, _ *sdk.CallToolRequest, in execIn) (*sdk.CallToolResult, ExecOut, error) {
	if err := needVM(in.VM); err != nil {
		return nil, ExecOut{}, err
	}
	argv := in.Argv
	switch {
	case len(argv) > 0 && in.Command != "":
		return nil, ExecOut{}, api.Invalid("give argv or command, not both")
	case in.Command != "":
		argv = []string{"sh", "-c", in.Command}
	case len(argv) == 0:
		return nil, ExecOut{}, api.Invalid("nothing to run").WithFix("pass argv, e.g. [\"ls\",\"-l\"], or command, e.g. \"ls -l | head\"")
	}
	timeout := defaultTimeout
	if in.TimeoutSeconds < 0 {
		return nil, ExecOut{}, api.Invalid("timeout_seconds must not be negative")
	} else if in.TimeoutSeconds > 0 {
		timeout = min(time.Duration(in.TimeoutSeconds)*time.Second, maxTimeout)
	}
	dir := in.Cwd
	if dir == "" {
		dir = "/root"
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, ExecOut{}, err
	}
	conn, err := c.Exec(ctx, in.VM)
	if err != nil {
		return nil, ExecOut{}, err
	}
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stdout, stderr := newCapped(maxOutput), newCapped(maxOutput)
	var stdin *strings.Reader
	if in.Stdin != "" {
		stdin = strings.NewReader(in.Stdin)
	}
	req := api.ExecRequest{Argv: argv, Dir: dir, Env: in.Env}
	var code int
	if stdin != nil {
		code, err = agent.Exec(ectx, conn, req, stdin, stdout, stderr)
	} else {
		code, err = agent.Exec(ectx, conn, req, nil, stdout, stderr)
	}
	out := ExecOut{ExitCode: code, Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		out.TimedOut = true
		out.Stderr += fmt.Sprintf("\n[banger: killed after the %s timeout]", timeout)
		return nil, out, nil
	}
	if err != nil {
		return nil, ExecOut{}, err
	}
	return nil, out, nil
}

// capped keeps the first n bytes written and counts the rest.
type capped struct {
	buf     bytes.Buffer
	n       int
	dropped int64
}

func newCapped(n int) *capped { return &capped{n: n} }

func (c *capped) Write(p []byte) (int, error) {
	room := c.n - c.buf.Len()
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		c.buf.Write(p[:room])
	}
	c.dropped += int64(len(p) - max(room, 0))
	return len(p), nil
}

// String is the kept text (invalid UTF-8 shown as U+FFFD) and the marker.
func (c *capped) String() string {
	s := strings.ToValidUTF8(c.buf.String(), "\uFFFD")
	if c.dropped > 0 {
		s += fmt.Sprintf("\n[banger: output truncated, %d more bytes not shown]", c.dropped)
	}
	return s
}
