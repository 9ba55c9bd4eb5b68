package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Server is the guest side of the agent. Each channel connection gets its
// own yamux server session (ServeConn); ServeSerial and ServeVsock wrap that
// for the two channel kinds. A Server holds no per-connection state and may
// serve several channels at once.
type Server struct {
	log     *slog.Logger
	version string
	// ident is what identity requests act on (the guest; tests swap it).
	ident *identityEnv
}

// NewServer returns a guest agent server that reports version in Health.
func NewServer(log *slog.Logger, version string) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{log: log, version: version, ident: guestIdentityEnv()}
}

const (
	// requestTimeout bounds the wait for a stream's request line.
	requestTimeout = 30 * time.Second
	// Serial reopen backoff: the port reads EOF at once while no host is
	// connected, so the loop polls at most every maxReopenBackoff.
	minReopenBackoff = 50 * time.Millisecond
	maxReopenBackoff = 500 * time.Millisecond
)

// ServeConn serves one yamux server session over conn and returns when the
// connection ends (nil), or ctx is cancelled (ctx's error). It closes conn
// and waits for the session's requests to finish; running commands are
// killed when their streams drop.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	return s.serveSession(ctx, conn)
}

func (s *Server) serveSession(ctx context.Context, rwc io.ReadWriteCloser) error {
	sess, err := yamux.Server(rwc, sessionConfig(s.log))
	if err != nil {
		rwc.Close()
		return fmt.Errorf("starting agent session: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer sess.Close()
	for {
		stream, err := sess.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("accepting agent stream: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handleStream(stream)
		}()
	}
}

// ServeListener serves a session on every connection l accepts until ctx is
// cancelled; it closes l and waits for the sessions before returning.
func (s *Server) ServeListener(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			l.Close()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("accepting agent connection on %s: %w", l.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, conn); err != nil && ctx.Err() == nil {
				s.log.Warn("agent session failed", "remote", fmt.Sprint(conn.RemoteAddr()), "err", err)
			}
		}()
	}
}

// ServeVsock listens on AF_VSOCK port and serves every connection.
func (s *Server) ServeVsock(ctx context.Context, port uint32) error {
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return fmt.Errorf("listening on vsock port %d: %w", port, err)
	}
	s.log.Info("serving agent on vsock", "port", port)
	return s.ServeListener(ctx, l)
}

// ServeSerial serves the virtio-serial port at path: it opens the port once
// read-write, serves one session until the host disconnects (EOF), then
// closes and reopens it. It returns ctx's error when cancelled, and an error
// if path does not exist (it never spins on a missing device).
func (s *Server) ServeSerial(ctx context.Context, path string) error {
	s.log.Info("serving agent on virtio-serial", "path", path)
	return s.serveReopen(ctx, func() (io.ReadWriteCloser, error) {
		return os.OpenFile(path, os.O_RDWR, 0)
	})
}

// serveReopen is ServeSerial's loop over any port opener.
func (s *Server) serveReopen(ctx context.Context, open func() (io.ReadWriteCloser, error)) error {
	backoff := minReopenBackoff
	for {
		port, err := open()
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("opening agent port: %w", err)
		case err != nil:
			s.log.Warn("opening agent port failed", "err", err, "retry_in", backoff)
		default:
			began := time.Now()
			err := s.serveSession(ctx, port)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lasted := time.Since(began)
			if err != nil {
				s.log.Warn("agent session failed", "err", err)
			}
			if lasted > time.Second {
				s.log.Info("agent session ended", "lasted", lasted.Round(time.Millisecond))
				backoff = minReopenBackoff
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxReopenBackoff)
	}
}

// handleStream answers one request. A panic is logged, never fatal.
func (s *Server) handleStream(stream net.Conn) {
	defer stream.Close()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("agent request panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	br := bufio.NewReaderSize(stream, 64<<10)
	stream.SetReadDeadline(time.Now().Add(requestTimeout))
	req, err := readRequest(br)
	stream.SetReadDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, io.EOF) {
			return
		}
		s.log.Warn("bad agent request", "err", err)
		writeJSONLine(stream, reply{Error: err.Error()})
		return
	}
	switch req.Op {
	case OpHealth:
		writeJSONLine(stream, s.health())
	case OpClock:
		t := time.Unix(0, req.UnixNano)
		if err := setClock(t); err != nil {
			s.log.Warn("setting clock failed", "time", t, "err", err)
			writeJSONLine(stream, reply{Error: fmt.Sprintf("setting clock to %s: %v", t.UTC().Format(time.RFC3339Nano), err)})
			return
		}
		s.log.Info("clock set", "time", t.UTC())
		writeJSONLine(stream, reply{OK: true})
	case OpExec, OpPTY:
		s.serveExec(stream, br, req)
	case OpDial:
		s.serveDial(stream, br, req.Port)
	case OpIdentity:
		s.serveIdentity(stream, *req.Identity)
	}
}

// serveIdentity applies a validated identity and answers its steps.
func (s *Server) serveIdentity(stream net.Conn, id Identity) {
	ctx, cancel := context.WithTimeout(context.Background(), identityTimeout)
	defer cancel()
	res := s.ident.apply(ctx, id)
	if res.OK {
		s.log.Info("identity applied", "hostname", id.Hostname, "address", id.Address, "steps", fmt.Sprint(res.Steps))
	} else {
		s.log.Warn("identity failed", "step", res.Step, "err", res.Error, "steps", fmt.Sprint(res.Steps))
	}
	writeJSONLine(stream, res)
}

// setClock sets the realtime clock; tests replace it.
var setClock = func(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// health gathers the guest's Health; missing facts are left empty.
func (s *Server) health() Health {
	h := Health{OK: true, Version: s.version}
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			h.Uptime, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		h.BootID = strings.TrimSpace(string(b))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return h
}
