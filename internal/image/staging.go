package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"banger/internal/logcap"
	"banger/internal/progress"
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

// Pipe returns a writer whose lines go to Line, and a wait function that
// returns when every line has been consumed.
func (l *BuildLog) Pipe() (io.WriteCloser, func()) {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.Line(strings.TrimRight(sc.Text(), "\r"))
		}
		io.Copy(io.Discard, pr)
	}()
	return pw, func() { <-done }
}

// MountsBelow lists the mount points at or below dir from
// /proc/self/mountinfo, deepest first.
func MountsBelow(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for a space) in a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountBelow unmounts everything at or below dir, deepest first, falling
// back to a lazy unmount for busy mounts. It fails only when something is
// still mounted afterwards: removing the tree then would reach into the
// host's /dev.
func UnmountBelow(dir string) error {
	for attempt := 0; attempt < 3; attempt++ {
		mps, err := MountsBelow(dir)
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
	mps, err := MountsBelow(dir)
	if err != nil {
		return err
	}
	if len(mps) > 0 {
		return fmt.Errorf("still mounted after unmounting: %s", strings.Join(mps, ", "))
	}
	return nil
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
