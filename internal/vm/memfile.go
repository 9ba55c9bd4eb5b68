package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// A running guest's RAM is a file on tmpfs (vmm.Spec.MemoryFile), shared
// with its engine, so a snapshot saves device state only and copies the RAM
// out. The files live in one dir per state dir under /dev/shm (tmpfs, sized
// half the host's RAM by default): never on a disk, where the kernel would
// write guest memory back. /dev/shm is world-writable: the dir is made by
// root, 0700, and refused when it is a link or someone else's.

// MemoryDir is the memory dir for the state dir stateDir.
func MemoryDir(stateDir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(stateDir)))
	return filepath.Join("/dev/shm", "banger-"+hex.EncodeToString(sum[:4]))
}

// ensureMemoryDir makes dir root's 0700, or checks the one that exists is.
func ensureMemoryDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating memory dir %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("memory dir %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return api.FailedPrecondition("memory dir %s is not a directory of uid %d with mode 0700 (mode %o, uid %d): someone else made it",
			dir, os.Geteuid(), st.Mode&0o7777, st.Uid).
			WithFix("remove it (rm -rf " + dir + ") and restart bangerd")
	}
	return nil
}

// memoryFile is v's RAM file ("" when the manager keeps guest RAM
// anonymous).
func (m *Manager) memoryFile(v api.VM) string {
	if m.memDir == "" {
		return ""
	}
	return filepath.Join(m.memDir, v.ID+".ram")
}

// prepareMemoryFile readies v's RAM file's place before its engine starts:
// the dir made (on the first start; checked every time) and a file a crash
// left removed (the engine makes it anew).
func (m *Manager) prepareMemoryFile(v api.VM) error {
	if m.memDir == "" {
		return nil
	}
	if err := ensureMemoryDir(m.memDir); err != nil {
		return err
	}
	m.removeMemoryFile(v)
	return nil
}

// removeMemoryFile removes v's RAM file; its engine must be gone.
func (m *Manager) removeMemoryFile(v api.VM) {
	if p := m.memoryFile(v); p != "" {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.log.Warn("removing guest memory file", "vm", v.Name, "err", err)
		}
	}
}

// cleanMemoryDir removes RAM files of VMs that are not alive (keep: VM ids
// with a live engine), after a crash.
func (m *Manager) cleanMemoryDir(keep map[string]bool) {
	if m.memDir == "" {
		return
	}
	ents, err := os.ReadDir(m.memDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".ram")
		if ok && keep[id] {
			continue
		}
		m.log.Info("removing a leaked guest memory file", "file", e.Name())
		_ = os.Remove(filepath.Join(m.memDir, e.Name()))
	}
}
