package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// testLogger discards logs unless BANGER_TEST_LOG is set.
func testLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if os.Getenv("BANGER_TEST_LOG") != "" {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// socketPair returns the two ends of a real unix stream socketpair.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

// newPair serves a Server on one end of a socketpair and returns a Client on
// the other; cleanup closes both and waits for the server to return.
func newPair(t *testing.T) *Client {
	t.Helper()
	host, guest := socketPair(t)
	srv := NewServer(testLogger(), "test-version")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, guest) }()
	c, err := NewClient(host)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("ServeConn did not return after the client closed")
		}
	})
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHealth(t *testing.T) {
	c := newPair(t)
	h, err := c.Health(testCtx(t))
	if err != nil {
		t.Fatalf("Health: %v", err)
	}
	host, _ := os.Hostname()
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if !h.OK || h.Version != "test-version" || h.Hostname != host || h.Uptime <= 0 ||
		h.BootID != strings.TrimSpace(string(bootID)) || h.Kernel == "" {
		t.Errorf("Health = %+v, want OK, version test-version, hostname %q, uptime > 0, boot id, kernel", h, host)
	}
}

func TestExec(t *testing.T) {
	tmp := t.TempDir()
	notExec := filepath.Join(tmp, "notexec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newPair(t)
	tests := []struct {
		name       string
		req        api.ExecRequest
		stdin      io.Reader
		wantCode   int
		wantOut    string
		wantErrSub string
	}{
		{"exit code and both streams", api.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}}, nil, 7, "out\n", "err\n"},
		{"stdin through cat", api.ExecRequest{Argv: []string{"cat"}}, strings.NewReader("hello\nworld"), 0, "hello\nworld", ""},
		{"no stdin is EOF", api.ExecRequest{Argv: []string{"cat"}}, nil, 0, "", ""},
		{"not found", api.ExecRequest{Argv: []string{"banger-no-such-command"}}, nil, 127, "", "executable file not found"},
		{"not executable", api.ExecRequest{Argv: []string{notExec}}, nil, 126, "", "permission denied"},
		{"killed by signal", api.ExecRequest{Argv: []string{"sh", "-c", "kill -KILL $$"}}, nil, 137, "", ""},
		{"dir", api.ExecRequest{Argv: []string{"pwd"}, Dir: tmp}, nil, 0, tmp + "\n", ""},
		{"missing dir", api.ExecRequest{Argv: []string{"pwd"}, Dir: filepath.Join(tmp, "nope")}, nil, 127, "", "no such file"},
		{"default dir and env", api.ExecRequest{Argv: []string{"sh", "-c", `echo "$PWD $HOME $FOO"`}, Env: map[string]string{"FOO": "bar"}}, nil, 0, "/root /root bar\n", ""},
		{"default path", api.ExecRequest{Argv: []string{"sh", "-c", `echo "$PATH"`}}, nil, 0, defaultPath + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code, err := c.Exec(testCtx(t), tt.req, tt.stdin, &out, &errb)
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if code != tt.wantCode || out.String() != tt.wantOut || !strings.Contains(errb.String(), tt.wantErrSub) {
				t.Errorf("Exec = %d, stdout %q, stderr %q; want %d, %q, stderr containing %q",
					code, out.String(), errb.String(), tt.wantCode, tt.wantOut, tt.wantErrSub)
			}
		})
	}
}

func TestExecLargeStdin(t *testing.T) {
	c := newPair(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB
	var out bytes.Buffer
	code, err := c.Exec(testCtx(t), api.ExecRequest{Argv: []string{"cat"}}, bytes.NewReader(data), &out, nil)
	if err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	if sha256.Sum256(out.Bytes()) != sha256.Sum256(data) {
		t.Errorf("cat returned %d bytes, want the %d sent", out.Len(), len(data))
	}
}

func TestExecInvalidRequest(t *testing.T) {
	c := newPair(t)
	_, err := c.Exec(testCtx(t), api.ExecRequest{}, nil, nil, nil)
	if !api.IsInvalid(err) {
		t.Errorf("Exec with empty argv: %v, want an Invalid error", err)
	}
}

// lineWriter reports each complete line written to it, with its arrival time.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan timedLine
}

type timedLine struct {
	text string
	at   time.Time
}

func newLineWriter() *lineWriter { return &lineWriter{lines: make(chan timedLine, 100)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf.Next(i + 1))
		w.lines <- timedLine{strings.TrimSpace(line), time.Now()}
	}
}

func (w *lineWriter) next(t *testing.T) timedLine {
	t.Helper()
	select {
	case l := <-w.lines:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no output line within 10s")
		return timedLine{}
	}
}

func TestExecStreamsOutput(t *testing.T) {
	c := newPair(t)
	w := newLineWriter()
	start := time.Now()
	code, err := c.Exec(testCtx(t), api.ExecRequest{Argv: []string{"sh", "-c", "echo first; sleep 1; echo second"}}, nil, w, nil)
	if err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	first, second := w.next(t), w.next(t)
	if first.text != "first" || second.text != "second" {
		t.Fatalf("lines %q, %q", first.text, second.text)
	}
	if gap := second.at.Sub(first.at); gap < 700*time.Millisecond {
		t.Errorf("first line arrived %v after start, only %v before the second: output is not streamed", first.at.Sub(start), gap)
	}
}

// liveGroupMembers lists the pids of group pgid that are not zombies
// (orphans wait for this machine's init to reap them).
func liveGroupMembers(t *testing.T, pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …; comm may contain spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pgroupGone waits until no live process is left in group pgid.
func pgroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		live := liveGroupMembers(t, pgid)
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			unix.Kill(-pgid, unix.SIGKILL)
			t.Errorf("process group %d still has live members %v 5s later", pgid, live)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecCancelSignalsGroup(t *testing.T) {
	c := newPair(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	w := newLineWriter()
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		// The background sleep shares the process group and must die too.
		code, err := c.Exec(ctx, api.ExecRequest{Argv: []string{"sh", "-c", "echo $$; sleep 100 & exec sleep 100"}}, nil, w, nil)
		res <- result{code, err}
	}()
	pgid, err := strconv.Atoi(w.next(t).text)
	if err != nil {
		t.Fatalf("pid line: %v", err)
	}
	cancel()
	r := <-res
	if r.code != 128+15 || !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled Exec = %d, %v; want 143, context.Canceled", r.code, r.err)
	}
	pgroupGone(t, pgid)
}

func TestExecStreamDropKillsGroup(t *testing.T) {
	for _, drop := range []string{"stream", "session"} {
		t.Run(drop, func(t *testing.T) {
			c := newPair(t)
			stream, err := c.OpenStream(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			req := Request{Op: OpExec, Exec: &api.ExecRequest{Argv: []string{"sh", "-c", "echo $$; sleep 100 & exec sleep 100"}}}
			if err := writeJSONLine(stream, req); err != nil {
				t.Fatal(err)
			}
			typ, payload, err := readFrame(stream)
			if err != nil || typ != frameStdout {
				t.Fatalf("first frame: %v %v", typ, err)
			}
			pgid, err := strconv.Atoi(strings.TrimSpace(string(payload)))
			if err != nil {
				t.Fatalf("pid frame %q: %v", payload, err)
			}
			if drop == "stream" {
				stream.Close()
			} else {
				c.Close()
			}
			pgroupGone(t, pgid)
		})
	}
}

func TestExecBackgroundChildDoesNotHang(t *testing.T) {
	c := newPair(t)
	start := time.Now()
	// The background sleep keeps stdout and stderr open after sh exits.
	code, err := c.Exec(testCtx(t), api.ExecRequest{Argv: []string{"sh", "-c", "sleep 3 & echo done"}}, nil, io.Discard, nil)
	if err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Exec took %v: it waited for the background child's pipes", took)
	}
}

func TestExecConcurrent(t *testing.T) {
	c := newPair(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out, errb bytes.Buffer
			id := strconv.Itoa(i)
			code, err := c.Exec(testCtx(t), api.ExecRequest{Argv: []string{"sh", "-c", "echo out$0; echo err$0 >&2; exit $0", id}}, nil, &out, &errb)
			if err != nil || code != i || out.String() != "out"+id+"\n" || errb.String() != "err"+id+"\n" {
				errs <- fmt.Errorf("exec %d = %d, %q, %q, %v", i, code, out.String(), errb.String(), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestExecDoesNotLeak(t *testing.T) {
	c := newPair(t)
	ctx := testCtx(t)
	run := func() {
		if _, err := c.Exec(ctx, api.ExecRequest{Argv: []string{"sh", "-c", "echo x; echo y >&2"}}, strings.NewReader("in"), io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		c.Exec(ctx, api.ExecRequest{Argv: []string{"banger-no-such-command"}}, nil, nil, nil)
		c.Exec(ctx, api.ExecRequest{Argv: []string{"true"}, TTY: true}, nil, io.Discard, nil)
	}
	run() // warm up lazily created goroutines and fds
	time.Sleep(100 * time.Millisecond)
	fds, gs := countFDs(t), runtime.NumGoroutine()
	for range 10 {
		run()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		nfds, ngs := countFDs(t), runtime.NumGoroutine()
		if nfds <= fds && ngs <= gs+2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 execs: %d fds (was %d), %d goroutines (was %d)", nfds, fds, ngs, gs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestExecTTY(t *testing.T) {
	c := newPair(t)
	t.Run("initial size", func(t *testing.T) {
		stream, err := c.OpenStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		resize := make(chan [2]uint16, 1)
		resize <- [2]uint16{30, 100}
		var out bytes.Buffer
		code, err := ExecTTY(testCtx(t), stream, api.ExecRequest{Argv: []string{"sh", "-c", `stty size; test -t 0 && echo "tty $TERM"`}}, nil, &out, resize)
		if err != nil || code != 0 {
			t.Fatalf("ExecTTY = %d, %v (output %q)", code, err, out.String())
		}
		if got := out.String(); !strings.Contains(got, "30 100") || !strings.Contains(got, "tty xterm-256color") {
			t.Errorf("output %q, want the size 30 100 and a terminal", got)
		}
	})
	t.Run("resize", func(t *testing.T) {
		stream, err := c.OpenStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		resize := make(chan [2]uint16)
		stdinR, stdinW := io.Pipe()
		defer stdinW.Close()
		w := newLineWriter()
		res := make(chan error, 1)
		go func() {
			_, err := ExecTTY(testCtx(t), stream, api.ExecRequest{Argv: []string{"sh", "-c", "echo ready; read x; stty size"}}, stdinR, w, resize)
			res <- err
		}()
		if l := w.next(t); l.text != "ready" {
			t.Fatalf("first line %q", l.text)
		}
		resize <- [2]uint16{40, 120}
		time.Sleep(200 * time.Millisecond) // the RESIZE frame goes out before the newline
		stdinW.Write([]byte("\n"))
		w.next(t) // the echoed newline
		if l := w.next(t); l.text != "40 120" {
			t.Errorf("size after resize %q, want 40 120", l.text)
		}
		if err := <-res; err != nil {
			t.Errorf("ExecTTY: %v", err)
		}
	})
}

func TestSetClock(t *testing.T) {
	var mu sync.Mutex
	var got []time.Time
	var fail error
	old := setClock
	setClock = func(t time.Time) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, t)
		return fail
	}
	t.Cleanup(func() { setClock = old })
	c := newPair(t)

	want := time.Date(2031, 2, 3, 4, 5, 6, 789, time.UTC)
	if err := c.SetClock(testCtx(t), want); err != nil {
		t.Fatalf("SetClock: %v", err)
	}
	mu.Lock()
	if len(got) != 1 || !got[0].Equal(want) {
		t.Errorf("setter got %v, want [%v]", got, want)
	}
	fail = errors.New("operation not permitted")
	mu.Unlock()
	if err := c.SetClock(testCtx(t), want); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Errorf("SetClock with a failing setter: %v, want the setter's error", err)
	}
	if err := c.SetClock(testCtx(t), time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "positive unix_nano") {
		t.Errorf("SetClock(epoch): %v, want a refusal", err)
	}
}

func TestIntegrationSetClock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting the clock needs root: run the tests as root")
	}
	c := newPair(t)
	// Setting the clock to the current time is harmless.
	if err := c.SetClock(testCtx(t), time.Now()); err != nil {
		t.Fatalf("SetClock(now): %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	c := newPair(t)
	tests := []struct {
		name, line, wantSub string
	}{
		{"not json", "hello", "malformed request"},
		{"no op", "{}", `without "op"`},
		{"unknown op", `{"op":"reboot"}`, "unknown op"},
		{"exec without exec", `{"op":"exec"}`, `without "exec"`},
		{"empty argv", `{"op":"exec","exec":{"argv":[]}}`, "empty argv"},
		{"bad env", `{"op":"pty","exec":{"argv":["sh"],"env":{"A=B":"c"}}}`, "invalid environment"},
		{"negative clock", `{"op":"clock","unix_nano":-5}`, "positive unix_nano"},
		{"too long", `{"op":"health","x":"` + strings.Repeat("a", maxRequestLine) + `"}`, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := c.OpenStream(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			go stream.Write([]byte(tt.line + "\n"))
			line, err := readLine(bufio.NewReader(stream), maxRequestLine)
			if err != nil {
				t.Fatalf("reading reply: %v", err)
			}
			if err := decodeReplyError(line); err == nil || !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("reply %s: want an error containing %q", line, tt.wantSub)
			}
		})
	}
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Errorf("Health after bad requests: %v", err)
	}
}

func TestExecRefusedByAgent(t *testing.T) {
	host, guest := net.Pipe()
	go func() {
		br := bufio.NewReader(guest)
		readLine(br, maxRequestLine)
		writeJSONLine(guest, reply{Error: "boom"})
		guest.Close()
	}()
	_, err := Exec(testCtx(t), host, api.ExecRequest{Argv: []string{"true"}}, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Exec against a refusal: %v, want the agent's error", err)
	}
}

func TestExecStreamEndsEarly(t *testing.T) {
	host, guest := net.Pipe()
	go func() {
		br := bufio.NewReader(guest)
		readLine(br, maxRequestLine)
		guest.Write(appendFrame(nil, frameStdout, []byte("partial")))
		guest.Close()
	}()
	var out bytes.Buffer
	_, err := Exec(testCtx(t), host, api.ExecRequest{Argv: []string{"true"}}, nil, &out, nil)
	if !api.IsUnavailable(err) || out.String() != "partial" {
		t.Errorf("Exec on a stream that ends before EXIT: %v (out %q), want Unavailable", err, out.String())
	}
}
