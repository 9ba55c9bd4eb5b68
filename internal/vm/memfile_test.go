package vm

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

// /dev/shm is world-writable: another local user can make the memory dir
// first (their own dir, or a link to one) and then read, swap or delete
// guests' RAM files in it. The daemon refuses such a dir.
func TestAttackMemoryDirPlantedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	base := t.TempDir()
	theirs := filepath.Join(base, "theirs")
	if err := os.Mkdir(theirs, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(theirs, link); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{theirs, link, open} {
		m := &Manager{memDir: dir, log: discardLog()}
		err := m.prepareMemoryFile(api.VM{ID: "x", Name: "x"})
		if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "someone else made it") {
			t.Errorf("memory dir %s: %v, want refused", dir, err)
		}
	}
	mine := filepath.Join(base, "mine")
	m := &Manager{memDir: mine, log: discardLog()}
	if err := m.prepareMemoryFile(api.VM{ID: "x", Name: "x"}); err != nil {
		t.Fatalf("a fresh dir: %v", err)
	}
	if fi, err := os.Lstat(mine); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made %v %v, want 0700", fi.Mode(), err)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
