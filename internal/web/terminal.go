package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/coder/websocket"

	"banger/internal/agent"
	"banger/internal/api"
)

// TerminalShell is what the terminal runs in the guest: a login bash, or a
// login sh where bash is missing.
var TerminalShell = []string{"/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l"}

// TermMessage is a JSON text message on the terminal WebSocket. The
// browser sends {"type":"resize","rows":R,"cols":C}; the server sends
// {"type":"exit","code":N} when the shell ends and {"type":"error",
// "message":…,"fix":…} when it cannot start. Keystrokes (browser → server)
// and terminal output (server → browser) are binary messages.
type TermMessage struct {
	Type    string `json:"type"`
	Rows    uint16 `json:"rows,omitempty"`
	Cols    uint16 `json:"cols,omitempty"`
	Code    int    `json:"code"`
	Message string `json:"message,omitempty"`
	Fix     string `json:"fix,omitempty"`
	// Action is the fix as a banger command (api.Error.Action); the page
	// shows it in words.
	Action *api.Action `json:"action,omitempty"`
}

// terminal is GET /v1/vms/{name}/terminal?rows=R&cols=C: a WebSocket to a
// login shell under a pseudo-terminal in the guest (agent.ExecTTY over a
// fresh agent stream).
func (s *Server) terminal(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// requireToken has checked the Origin already; the library's own check
	// (Origin host == Host) is the same rule and stays on.
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		s.opts.Log.Debug("terminal upgrade failed", "vm", name, "err", err)
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	if s.opts.Exec == nil {
		sendTermError(ctx, c, api.Unavailable("this web UI has no terminal (web.Options.Exec is nil)"))
		return
	}
	stream, err := s.opts.Exec(ctx, name)
	if err != nil {
		sendTermError(ctx, c, err)
		return
	}
	s.opts.Log.Info("terminal opened", "vm", name)
	resize := make(chan [2]uint16, 8)
	resize <- [2]uint16{querySize(r, "rows", 24), querySize(r, "cols", 80)}
	stdinR, stdinW := io.Pipe()
	defer stdinR.Close()
	go readTerminal(ctx, cancel, c, stdinW, resize)

	out := &wsWriter{ctx: ctx, c: c}
	req := api.ExecRequest{Argv: TerminalShell, Env: map[string]string{"TERM": "xterm-256color"}}
	code, err := agent.ExecTTY(ctx, stream, req, stdinR, out, resize)
	if err != nil {
		if ctx.Err() == nil {
			sendTermError(ctx, c, err)
		}
		s.opts.Log.Info("terminal closed", "vm", name, "err", err)
		return
	}
	b, _ := json.Marshal(TermMessage{Type: "exit", Code: code})
	_ = c.Write(ctx, websocket.MessageText, b)
	_ = c.Close(websocket.StatusNormalClosure, "shell exited")
	s.opts.Log.Info("terminal closed", "vm", name, "code", code)
}

// readTerminal feeds binary messages to the shell's stdin and resize
// messages to resize, until the socket closes (which cancels the session).
func readTerminal(ctx context.Context, cancel context.CancelFunc, c *websocket.Conn, stdin *io.PipeWriter, resize chan<- [2]uint16) {
	defer cancel()
	defer stdin.Close()
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			if _, err := stdin.Write(data); err != nil {
				return
			}
			continue
		}
		var m TermMessage
		if json.Unmarshal(data, &m) != nil || m.Type != "resize" || m.Rows == 0 || m.Cols == 0 {
			continue
		}
		select {
		case resize <- [2]uint16{m.Rows, m.Cols}:
		default: // a burst of resizes: the next one wins
		}
	}
}

func sendTermError(ctx context.Context, c *websocket.Conn, err error) {
	e := api.AsError(err)
	b, _ := json.Marshal(TermMessage{Type: "error", Message: e.Message, Fix: e.Fix, Action: e.Action})
	_ = c.Write(ctx, websocket.MessageText, b)
	_ = c.Close(websocket.StatusNormalClosure, "terminal failed")
}

func querySize(r *http.Request, key string, def uint16) uint16 {
	n, err := strconv.Atoi(r.URL.Query().Get(key))
	if err != nil || n < 1 || n > 1000 {
		return def
	}
	return uint16(n)
}

// wsWriter sends each write as one binary message.
type wsWriter struct {
	ctx context.Context
	c   *websocket.Conn
}

func (w *wsWriter) Write(p []byte) (int, error) {
	if err := w.c.Write(w.ctx, websocket.MessageBinary, p); err != nil {
		return 0, errors.Join(errors.New("terminal socket closed"), err)
	}
	return len(p), nil
}
