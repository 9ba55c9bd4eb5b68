package vmmtest

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
)

// leakCheck fails t when a process naming the case's directory still runs,
// a socket is left in it, or a path the handles name (sockets, files in
// Extra) still exists; it kills and removes what leaked.
func (e *env) leakCheck(t *testing.T) {
	for _, pid := range processesNaming(e.dir) {
		t.Errorf("leak: pid %d (%s) still runs", pid, cmdline(pid))
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	_ = filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSocket != 0 {
			t.Errorf("leak: socket %s left", p)
			_ = os.Remove(p)
		}
		return nil
	})
	for _, h := range e.started {
		for _, p := range ownedPaths(h) {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("leak: %s left", p)
				_ = os.RemoveAll(p)
			}
		}
	}
}

// ownedPaths are the files an ended engine must not leave: its sockets and
// the absolute paths in its opaque Extra (a pidfile, a jail).
func ownedPaths(h vmm.Handles) []string {
	var ps []string
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if p != "" {
			ps = append(ps, p)
		}
	}
	for _, v := range h.Extra {
		if filepath.IsAbs(v) {
			ps = append(ps, v)
		}
	}
	return ps
}

// processesNaming returns the pids of live (not zombie) processes whose
// command line contains s.
func processesNaming(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() || !strings.Contains(cmdline(pid), s) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); err == nil && !zombie(string(st)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// zombie reports whether a /proc/<pid>/stat line is of a zombie or dead
// process (the state follows the last ')').
func zombie(stat string) bool {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] == 'Z' || stat[i+2] == 'X'
}

// entries lists the names in dir, sorted.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(ents))
	for i, d := range ents {
		names[i] = d.Name()
	}
	return names
}
