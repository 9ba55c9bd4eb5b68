package fctest

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
)

// The fake guest. It models what banger depends on in a real Firecracker
// guest on x86:
//
//   - Nothing reaches the serial console (the process's stdout) until
//     BootDelay after InstanceStart, when the kernel's first line appears —
//     unless Silent (a kernel that never boots).
//   - From then on an agent answers on the vsock port (hybrid vsock: the
//     host connects to uds_path and sends "CONNECT <port>"); before, the
//     connection is closed, as Firecracker does with no guest listener.
//     The agent answers health and clock, and exec of `systemctl poweroff`
//     / `systemctl reboot` (or plain `poweroff` / `reboot`): anything else
//     fails with exit code 127 (it runs nothing on the host).
//   - A shutdown (the agent's power-off or reboot, or SendCtrlAltDel:
//     systemd's ctrl-alt-del target reboots) takes ShutdownDelay, during
//     which the guest ignores SendCtrlAltDel (systemd's queued shutdown job
//     is irreversible).
//   - Power-off then halts the guest: Firecracker has no ACPI power-off,
//     so the process keeps running (its API still answers) until killed.
//   - A reboot ends the process when the boot args carry reboot=k (the
//     i8042 reset Firecracker catches); without it the guest halts. A
//     halted guest ignores SendCtrlAltDel.
//
// The agent protocol is internal/agent's (see its package doc): one yamux
// session per connection, a JSON request line per stream, binary frames
// for exec.

// Guest states.
const (
	guestOff       = "off"       // before InstanceStart
	guestBooting   = "booting"   // kernel not yet on the console
	guestUp        = "up"        // console active, agent answering
	guestStopping  = "stopping"  // shutting down (ShutdownDelay)
	guestHalted    = "halted"    // powered off: vCPUs halted, process alive
	guestRebooting = "rebooting" // reset with reboot=k: the process ends
)

// Exec frame types of the agent protocol (guest → host).
const (
	frameExit  = 7 // big-endian int32 exit code
	frameError = 8 // start failure text
)

// Default delays: the fake kernel's time to the console, and a shutdown's.
const (
	defaultBootDelay     = 300 * time.Millisecond
	defaultShutdownDelay = 200 * time.Millisecond
)

// startGuestLocked boots the fake guest after InstanceStart.
func (s *Server) startGuestLocked() {
	s.guest = guestBooting
	s.bootedAt = time.Now()
	if s.Silent {
		return
	}
	delay := s.BootDelay
	if delay == 0 {
		delay = defaultBootDelay
	}
	time.AfterFunc(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.guest != guestBooting {
			return
		}
		s.guest = guestUp
		fmt.Fprintf(s.Stdout, "[    0.000000] Linux version 6.1.0-fake (fctest) guest %s\n", s.id)
		fmt.Fprintf(s.Stdout, "[    0.400000] %s login: banger-agent ready\n", s.id)
	})
}

// GuestState reports the fake guest's state ("off", "booting", "up",
// "halted" or "rebooting").
func (s *Server) GuestState() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.guest
}

// shutdownLocked begins a shutdown ending in action ("poweroff" or
// "reboot"); a guest already shutting down, halted or off ignores it.
func (s *Server) shutdownLocked(action string) {
	if s.guest != guestUp && s.guest != guestBooting {
		return
	}
	s.guest = guestStopping
	delay := s.ShutdownDelay
	if delay == 0 {
		delay = defaultShutdownDelay
	}
	time.AfterFunc(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if action == "reboot" {
			s.rebootLocked()
		} else {
			s.poweroffLocked()
		}
	})
}

// poweroffLocked halts the guest; the process keeps running.
func (s *Server) poweroffLocked() {
	fmt.Fprintf(s.Stdout, "[   42.000000] reboot: Power down\n")
	s.guest = guestHalted
	s.dropAgentsLocked()
}

// rebootLocked resets the guest: with reboot=k the process ends (OnExit).
func (s *Server) rebootLocked() {
	fmt.Fprintf(s.Stdout, "[   42.000000] reboot: Restarting system\n")
	s.dropAgentsLocked()
	if !slices.Contains(strings.Fields(s.bootArgs), "reboot=k") {
		s.guest = guestHalted
		return
	}
	s.guest = guestRebooting
	if s.OnExit != nil {
		go s.OnExit()
	}
}

func (s *Server) dropAgentsLocked() {
	for c := range s.agentConns {
		c.Close()
	}
	clear(s.agentConns)
}

// serveVsock accepts host connections on the vsock socket.
func (s *Server) serveVsock(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go s.serveAgentConn(c)
	}
}

// serveAgentConn answers CONNECT and serves one agent session while the
// guest is up.
func (s *Server) serveAgentConn(c net.Conn) {
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	c.SetReadDeadline(time.Time{})
	var port uint32
	if err != nil || !scanConnect(line, &port) {
		c.Close()
		return
	}
	s.mu.Lock()
	if s.guest != guestUp || port != agentPort {
		s.mu.Unlock()
		c.Close() // nothing listens in the guest (yet)
		return
	}
	s.agentConns[c] = true
	s.mu.Unlock()
	fmt.Fprintf(c, "OK %d\n", 1073741824+port)
	sess, err := yamux.Server(&bufConn{Conn: c, r: br}, nil)
	if err != nil {
		c.Close()
		return
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go s.serveStream(st)
	}
}

// agentPort is the vsock port banger's agent listens on (vmm.AgentPort).
const agentPort = 1024

func scanConnect(line string, port *uint32) bool {
	_, err := fmt.Sscanf(strings.TrimSpace(line), "CONNECT %d", port)
	return err == nil
}

// bufConn reads through the reader that consumed the CONNECT line.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// serveStream answers one agent request.
func (s *Server) serveStream(st net.Conn) {
	defer st.Close()
	line, err := bufio.NewReader(st).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	var req agent.Request
	if err := json.Unmarshal(line, &req); err != nil {
		writeLine(st, map[string]any{"ok": false, "error": "fctest guest: " + err.Error()})
		return
	}
	switch req.Op {
	case agent.OpHealth:
		s.mu.Lock()
		up := time.Since(s.bootedAt).Seconds()
		s.mu.Unlock()
		writeLine(st, agent.Health{OK: true, Version: "fctest", Hostname: s.id, Uptime: up,
			BootID: "00000000-0000-4000-8000-000000000001", Kernel: "6.1.0-fake"})
	case agent.OpClock:
		writeLine(st, map[string]any{"ok": true})
	case agent.OpExec, agent.OpPTY:
		s.exec(st, req)
	default:
		writeLine(st, map[string]any{"ok": false, "error": "fctest guest: unknown op " + req.Op})
	}
}

// exec runs one of the power commands the fake guest knows; it answers
// EXIT 0 first, like `systemctl --no-block`, then acts.
func (s *Server) exec(st net.Conn, req agent.Request) {
	var argv []string
	if req.Exec != nil {
		argv = req.Exec.Argv
	}
	action := powerAction(argv)
	if action == "" {
		msg := fmt.Sprintf("fctest guest: cannot run %q (only systemctl poweroff/reboot)", argv)
		writeFrame(st, frameError, []byte(msg))
		writeFrame(st, frameExit, binary.BigEndian.AppendUint32(nil, 127))
		return
	}
	writeFrame(st, frameExit, binary.BigEndian.AppendUint32(nil, 0))
	s.mu.Lock()
	s.shutdownLocked(action)
	s.mu.Unlock()
}

// powerAction maps a command line to "poweroff", "reboot" or "".
func powerAction(argv []string) string {
	var words []string
	for _, a := range argv {
		if !strings.HasPrefix(a, "-") {
			words = append(words, a)
		}
	}
	if len(words) > 0 && (words[0] == "systemctl" || strings.HasSuffix(words[0], "/systemctl")) {
		words = words[1:]
	}
	if len(words) != 1 {
		return ""
	}
	switch words[0] {
	case "poweroff", "halt":
		return "poweroff"
	case "reboot":
		return "reboot"
	}
	return ""
}

func writeLine(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

func writeFrame(w io.Writer, t byte, payload []byte) {
	hdr := []byte{t, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	w.Write(append(hdr, payload...))
}
