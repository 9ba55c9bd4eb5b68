package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"banger/internal/api"
)

// SocketGroup is the group that may use the daemon's socket when it exists
// (socket mode 0660); without it the socket is 0600.
const SocketGroup = "banger"

// acquireLock takes the exclusive lock on path and writes our pid into it.
// When another process holds it, the error names that pid and nothing is
// changed.
func acquireLock(path string) (*flock.Flock, error) {
	l := flock.New(path, flock.SetPermissions(0o600))
	ok, err := l.TryLock()
	if err != nil {
		return nil, api.FailedPrecondition("locking %s: %w", path, err).
			WithFix("check the permissions of " + filepath.Dir(path))
	}
	if !ok {
		holder := "another process"
		if b, err := os.ReadFile(path); err == nil {
			if pid := strings.TrimSpace(string(b)); pid != "" {
				holder = "pid " + pid
			}
		}
		return nil, api.FailedPrecondition("another bangerd (%s) already owns state dir %s (lock %s)",
			holder, filepath.Dir(path), path).
			WithFix("stop it, or give this one another state_dir").WithAction("daemon stop")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		_ = l.Unlock()
		return nil, fmt.Errorf("writing pid to %s: %w", path, err)
	}
	return l, nil
}

// listen opens the Unix socket at path: it creates the directory, refuses a
// path owned by another user or a socket something still answers on,
// removes a stale socket, and sets the mode (0660 + group banger when that
// group exists, else 0600).
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, api.FailedPrecondition("creating socket dir %s: %w", filepath.Dir(path), err).
			WithFix("set socket_path to a writable place")
	}
	if err := clearStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, api.FailedPrecondition("listening on %s: %w", path, err).
			WithFix("set socket_path to a writable place")
	}
	if err := setSocketMode(path); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

func clearStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking socket %s: %w", path, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return api.FailedPrecondition("socket %s belongs to uid %d, not to us (uid %d)", path, st.Uid, os.Getuid()).
			WithFix("stop the other user's bangerd, or remove " + path + " if it is stale")
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return api.FailedPrecondition("%s exists and is not a socket", path).
			WithFix("remove it or set socket_path elsewhere")
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return api.FailedPrecondition("another daemon is answering on %s", path).
			WithFix("stop it, or set socket_path elsewhere").WithAction("daemon stop")
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

func setSocketMode(path string) error {
	g, err := user.LookupGroup(SocketGroup)
	if err != nil {
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("chmod socket %s: %w", path, err)
		}
		return nil
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("group %s has gid %q: %w", SocketGroup, g.Gid, err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("chown socket %s to group %s: %w", path, SocketGroup, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return nil
}
