package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"banger/internal/logcap"
	"banger/internal/mountinfo"
	"banger/internal/progress"
	"banger/internal/revert"
)

// BuildLog tees a build's command output (guest- or chroot-written, so
// untrusted) to the build.log file, capped with one rotated copy
// (logcap.Writer), the reporter (line by line; internal/ops bounds it) and
// keeps the last lines, each cut to tailLineBytes, for error messages.
type BuildLog struct {
	mu   sync.Mutex
	f    *logcap.Writer    // guarded by mu
	rep  progress.Reporter // guarded by mu
	tail []string          // guarded by mu
}

const (
	tailLines     = 15
	tailLineBytes = 512
)

// NewBuildLog opens the build log at path, kept under max bytes (the
// build_log_max key; <= 0: no cap) with one older copy at path+".1".
func NewBuildLog(path string, rep progress.Reporter, max int64) (*BuildLog, error) {
	f, err := logcap.OpenWriter(path, max)
	if err != nil {
		return nil, fmt.Errorf("opening build log: %w", err)
	}
	return &BuildLog{f: f, rep: rep}, nil
}

// Line records one line of output.
func (l *BuildLog) Line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.f, s)
	l.rep.Output(s)
	if len(s) > tailLineBytes {
		s = strings.ToValidUTF8(s[:tailLineBytes], "") + " …"
	}
	l.tail = append(l.tail, s)
	if len(l.tail) > tailLines {
		l.tail = l.tail[len(l.tail)-tailLines:]
	}
}

// Tail returns the last lines of output, for an error message.
func (l *BuildLog) Tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := strings.Join(l.tail, "\n")
	l.tail = nil
	return t
}

func (l *BuildLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// Writer returns a writer whose lines go to Line (a trailing "\r"
// dropped; a line longer than 64 KiB is cut into pieces) for a command's
// stdout and stderr; Close emits a last line without a newline.
func (l *BuildLog) Writer() io.WriteCloser { return &lineWriter{log: l} }

// lineWriter turns written bytes into lines for a BuildLog.
type lineWriter struct {
	log *BuildLog
	mu  sync.Mutex
	buf []byte // guarded by mu
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.log.Line(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a very long line without a newline
		w.flushLocked()
	}
	return len(p), nil
}

func (w *lineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return nil
}

func (w *lineWriter) flushLocked() {
	if len(w.buf) > 0 {
		w.log.Line(strings.TrimRight(string(w.buf), "\r"))
		w.buf = nil
	}
}

// UnmountBelow unmounts everything at or below dir, deepest first, falling
// back to a lazy unmount for busy mounts. It fails only when something is
// still mounted afterwards: removing the tree then would reach into the
// host's /dev.
func UnmountBelow(dir string) error {
	for attempt := 0; attempt < 3; attempt++ {
		mps, err := mountinfo.Under(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil {
				_ = unix.Unmount(mp, unix.MNT_DETACH)
			}
		}
	}
	mps, err := mountinfo.Under(dir)
	if err != nil {
		return err
	}
	if len(mps) > 0 {
		return fmt.Errorf("still mounted after unmounting: %s", strings.Join(mps, ", "))
	}
	return nil
}

// NewStaging makes a staging dir for image name under StagingDir (""
// = ImagesDir/../staging: on the images' filesystem, cleaned at daemon
// start) for the makers of images from images; see MakeStaging.
func (s *Service) NewStaging(name string, r *revert.Reverter) (string, error) {
	dir := filepath.Join(s.ImagesDir, "..", "staging")
	if s.StagingDir != "" {
		dir = s.StagingDir
	}
	return MakeStaging(dir, name, r, s.logger())
}

// MakeStaging makes a fresh staging dir <dir>/<name>-<random> and adds its
// removal (RemoveStaging: what is mounted below it unmounted first) to r,
// so that it goes unless the caller reaches r.Success; a failed removal is
// logged to log.
func MakeStaging(dir, name string, r *revert.Reverter, log *slog.Logger) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating staging dir: %w", err)
	}
	st, err := os.MkdirTemp(dir, name+"-")
	if err != nil {
		return "", fmt.Errorf("creating staging dir: %w", err)
	}
	r.Add(func() {
		if err := RemoveStaging(st); err != nil {
			log.Error("removing an aborted image build", "dir", st, "err", err)
		}
	})
	return st, nil
}

// RemoveStaging unmounts everything below dir and removes it. It refuses to
// remove a tree that still has mounts in it.
func RemoveStaging(dir string) error {
	if err := UnmountBelow(dir); err != nil {
		return fmt.Errorf("cleaning up %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

// CleanStaging removes every build left in a staging directory by a crashed
// or killed process, unmounting what it left mounted first. Call it only
// when no build is running there (at daemon start, or under a lock).
func CleanStaging(stagingDir string) error {
	ents, err := os.ReadDir(stagingDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading staging dir: %w", err)
	}
	for _, e := range ents {
		if err := RemoveStaging(filepath.Join(stagingDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
