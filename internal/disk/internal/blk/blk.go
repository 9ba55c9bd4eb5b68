// Package blk holds the small host helpers the disk drivers share: running
// a tool with its output in the error, loop devices (through losetup and
// /sys/block), and reading /proc/self/mountinfo.
package blk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Run runs name with args and returns its stdout. A failure carries the
// command and its trimmed stderr (or stdout) so that the caller's error says
// what the tool said.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if msg != "" {
			return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return stdout.String(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

// ExitCode returns the exit status inside err from Run, or -1.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// LoopAttach attaches file to a free loop device and returns the device
// path (/dev/loopN).
func LoopAttach(ctx context.Context, file string, readOnly bool) (string, error) {
	args := []string{"--find", "--show"}
	if readOnly {
		args = append(args, "--read-only")
	}
	out, err := Run(ctx, "losetup", append(args, file)...)
	if err != nil {
		return "", fmt.Errorf("attaching loop device for %s: %w", file, err)
	}
	dev := strings.TrimSpace(out)
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("attaching loop device for %s: losetup printed %q", file, dev)
	}
	return dev, nil
}

// LoopDetach detaches dev if it is still backed by backing (any backing
// when backing is ""). A device that is gone or now backs another file is
// left alone, so a stale handle after a reboot never detaches someone
// else's loop.
func LoopDetach(ctx context.Context, dev, backing string) error {
	got, err := LoopBacking(dev)
	if err != nil {
		return err
	}
	if got == "" || (backing != "" && !SameFile(got, backing)) {
		return nil
	}
	// A just-unmounted filesystem or a probe by another process can hold
	// the device for a moment: the kernel then only marks it autoclear and
	// releases it when the last opener closes. Retry and wait briefly so
	// that callers usually see the device gone when this returns.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err = Run(ctx, "losetup", "--detach", dev); err == nil {
			waitReleased(dev, backing, deadline.Add(time.Second))
			return nil
		}
		if again, _ := LoopBacking(dev); again == "" {
			return nil // raced with another detach
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("detaching %s: %w", dev, err)
		}
	}
}

// waitReleased polls until dev no longer backs backing (any file when
// backing is "") or until the deadline.
func waitReleased(dev, backing string, deadline time.Time) {
	for time.Now().Before(deadline) {
		got, err := LoopBacking(dev)
		if err != nil || got == "" || (backing != "" && !SameFile(got, backing)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LoopBacking returns the file behind loop device dev, or "" when dev is
// not attached (or does not exist).
func LoopBacking(dev string) (string, error) {
	name := filepath.Base(dev)
	b, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading backing file of %s: %w", dev, err)
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"), nil
}

// Loops returns every attached loop device mapped to its backing file.
func Loops() (map[string]string, error) {
	ms, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range ms {
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(m)))
		b, err := LoopBacking(dev)
		if err != nil {
			continue // detached between glob and read
		}
		if b != "" {
			out[dev] = b
		}
	}
	return out, nil
}

// LoopsFor returns the loop devices whose backing file is file.
func LoopsFor(file string) ([]string, error) {
	all, err := Loops()
	if err != nil {
		return nil, err
	}
	var out []string
	for dev, b := range all {
		if SameFile(b, file) {
			out = append(out, dev)
		}
	}
	return out, nil
}

// SameFile reports whether two paths name the same file: equal cleaned
// absolute paths, or the same inode when both exist.
func SameFile(a, b string) bool {
	if abs(a) == abs(b) {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}
