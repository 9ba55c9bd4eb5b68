package vm

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/logcap"
	"banger/internal/progress"
)

// Diagnostics returns a readable dump of what is known about a VM: its
// record, handles, serial console tail, engine log tail, tap state and
// sockets. It is printed when a guest never becomes ready, and by scripts.
func (m *Manager) Diagnostics(v api.VM, h *Handles) string {
	var b strings.Builder
	rec, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintf(&b, "== vm record\n%s\n", rec)
	if h != nil {
		hj, _ := json.MarshalIndent(h, "", "  ")
		fmt.Fprintf(&b, "== handles\n%s\n", hj)
		if h.Tap != "" {
			fmt.Fprintf(&b, "== tap %s\n%s\n", h.Tap, tapState(h.Tap))
		}
	} else {
		b.WriteString("== handles\n(none)\n")
	}
	fmt.Fprintf(&b, "== sockets\n%s\n", socketState(v.Runtime.APISocket, v.Runtime.AgentSocket))
	fmt.Fprintf(&b, "== serial console (last 40 lines of %s)\n%s\n", v.Runtime.SerialLogPath, tail(v.Runtime.SerialLogPath, 40))
	fmt.Fprintf(&b, "== engine log (last 20 lines of %s)\n%s\n", v.Runtime.EngineLogPath, tail(v.Runtime.EngineLogPath, 20))
	return b.String()
}

// bootFailure saves diagnostics, streams them to the operation's output and
// returns cause wrapped with where the dump was saved.
func (m *Manager) bootFailure(v api.VM, h *Handles, cause error, rep progress.Reporter) error {
	if errCanceled(cause) {
		return cause
	}
	d := m.Diagnostics(v, h)
	for _, line := range strings.Split(strings.TrimRight(d, "\n"), "\n") {
		rep.Output(line)
	}
	dir := filepath.Join(m.cfg.StateDir, "diagnostics")
	path := filepath.Join(dir, fmt.Sprintf("%s-%s.txt", v.Name, time.Now().UTC().Format("20060102T150405")))
	if err := os.MkdirAll(dir, 0o700); err == nil {
		if err := os.WriteFile(path, []byte(d), 0o600); err == nil {
			return fmt.Errorf("vm %s: %w (diagnostics saved to %s)", v.Name, cause, path)
		}
	}
	m.log.Error("boot failed", "vm", v.Name, "err", cause, "diagnostics", d)
	return fmt.Errorf("vm %s: %w", v.Name, cause)
}

// tail is the last n lines of a log, read from its last 256 KiB.
func tail(path string, n int) string { return logcap.Tail(path, n, 256<<10) }

func tapState(name string) string {
	base := filepath.Join("/sys/class/net", name)
	read := func(f string) string {
		d, err := os.ReadFile(filepath.Join(base, f))
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(d))
	}
	master := "none"
	if l, err := os.Readlink(filepath.Join(base, "master")); err == nil {
		master = filepath.Base(l)
	}
	return fmt.Sprintf("operstate=%s flags=%s master=%s rx_packets=%s tx_packets=%s",
		read("operstate"), read("flags"), master, read("statistics/rx_packets"), read("statistics/tx_packets"))
}

func socketState(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s: %s\n", p, fi.Mode())
		} else {
			fmt.Fprintf(&b, "%s: missing\n", p)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
