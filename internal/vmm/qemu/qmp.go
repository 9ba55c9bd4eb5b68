package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// qmpConn is one QMP session: JSON messages, one per line, over the QMP
// Unix socket. QEMU serves one session at a time; callers open a session
// per operation and close it.
type qmpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// qmpError is an {"error": {...}} answer.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

// qmpDefaultTimeout bounds a session when ctx has no deadline.
const qmpDefaultTimeout = 5 * time.Second

// dialQMP connects, reads the greeting and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmpConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to qmp %s: %w", path, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(qmpDefaultTimeout)
	}
	_ = conn.SetDeadline(deadline)
	q := &qmpConn{conn: conn, r: bufio.NewReader(conn)}
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	if err := q.read(&greeting); err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading qmp greeting: %w", err)
	}
	if greeting.QMP == nil {
		conn.Close()
		return nil, errors.New("qmp: no greeting from the socket (not a QMP monitor?)")
	}
	if err := q.execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) Close() error { return q.conn.Close() }

func (q *qmpConn) read(v any) error {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// execute runs one command and decodes its "return" into out (may be nil).
// Asynchronous events arriving in between are skipped.
func (q *qmpConn) execute(cmd string, out any) error { return q.call(cmd, nil, nil, out) }

// call runs cmd with arguments (nil: none), handing QEMU f with the
// request (SCM_RIGHTS; nil: no file), and decodes its "return" into out.
func (q *qmpConn) call(cmd string, args any, f *os.File, out any) error {
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	req, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	req = append(req, '\n')
	if f != nil {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("qmp %s: passing a file needs a Unix socket", cmd)
		}
		_, _, err = uc.WriteMsgUnix(req, unix.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = q.conn.Write(req)
	}
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	return q.answer(cmd, out)
}

// answer reads until cmd's answer, skipping events.
func (q *qmpConn) answer(cmd string, out any) error {
	for {
		var msg struct {
			Event  string          `json:"event"`
			Return json.RawMessage `json:"return"`
			Error  *qmpError       `json:"error"`
		}
		if err := q.read(&msg); err != nil {
			return fmt.Errorf("qmp %s: reading answer: %w", cmd, err)
		}
		switch {
		case msg.Event != "":
			continue
		case msg.Error != nil:
			return fmt.Errorf("qmp %s: %w", cmd, msg.Error)
		case msg.Return == nil:
			return fmt.Errorf("qmp %s: answer without return or error", cmd)
		case out != nil:
			if err := json.Unmarshal(msg.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decoding answer: %w", cmd, err)
			}
		}
		return nil
	}
}

// qmpDo opens a session, runs cmd and closes it.
func qmpDo(ctx context.Context, path, cmd string, out any) error {
	q, err := dialQMP(ctx, path)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.execute(cmd, out)
}

// queryStatus returns QEMU's run state ("running", "paused", "shutdown"…).
func queryStatus(ctx context.Context, path string) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := qmpDo(ctx, path, "query-status", &st); err != nil {
		return "", err
	}
	return st.Status, nil
}
