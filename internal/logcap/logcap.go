// Package logcap keeps the host's logs of guest output within byte caps and
// reads their ends without reading them whole: a guest's serial console
// and its engine's log (files an engine process writes), and an image
// build's log (a file the daemon writes).
//
// What it trusts: nothing in the files. They hold whatever a guest printed,
// as fast as it can print it; the only things relied on are the file sizes
// the kernel reports.
//
// Files an engine writes (Cap): QEMU's serial chardev (`-chardev
// file,append=on`) and the engines' stdout/stderr (internal/vmm/proc) are
// opened by the engine process with O_APPEND and outlive the daemon. The
// daemon cannot own those writers without tying a detached VM to a daemon
// process (a pipe dies with the daemon; QEMU's socket chardev drops or
// stalls output while no daemon reads, and Firecracker's stdout has no such
// option), so instead the daemon polls them: a file over its cap has its
// last cap bytes copied to "<file>.1" (replacing the older one) and is then
// truncated to zero — logrotate's copytruncate. O_APPEND makes the engine's
// next write land at the new end, so the file never has a hole. A file
// therefore stays under cap plus what the guest writes in one poll interval
// (a serial port is slow: a PIO exit per byte, a few MiB/s at most under
// KVM, far less under TCG), and a restarted daemon picks the files up again
// from the VM records. Bytes written between the last copy and the
// truncation (microseconds) are lost, and while no daemon runs nothing caps
// the files: both are the price of keeping VMs independent of the daemon.
//
// Files the daemon writes (Writer): it counts what it writes and rotates
// to "<file>.1" before a write would pass the cap.
//
// Reading ends (Tail): seek back from the end and read at most a bounded
// number of bytes, whatever the file's size.
package logcap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// Rotated is the suffix of the one older copy each capped file keeps.
const Rotated = ".1"

// Cap rotates the file at path when it is larger than max: its last max
// bytes (plus what was appended while copying) go to path+".1", replacing
// the older copy, and the file is truncated to zero. The file's writers
// must append (O_APPEND). A missing file or max <= 0 does nothing. It
// reports whether it rotated.
func Cap(path string, max int64) (bool, error) {
	if max <= 0 {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() <= max {
		return false, err
	}
	tmp := path + Rotated + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	from, end := st.Size()-max, st.Size()
	for range 2 { // a second round takes what was appended during the first
		if _, err := io.Copy(out, io.NewSectionReader(f, from, end-from)); err != nil {
			out.Close()
			return false, fmt.Errorf("capping %s: %w", path, err)
		}
		if st, err = f.Stat(); err != nil || st.Size() <= end {
			break
		}
		from, end = end, min(st.Size(), end+max)
	}
	if err := out.Close(); err != nil {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	if err := os.Rename(tmp, path+Rotated); err != nil {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	return true, nil
}

// Tail returns the last n lines of the file at path, reading at most
// maxBytes from its end; when the window starts mid-line, that partial line
// is left out. A read error is returned as the text "(error)".
func Tail(path string, n int, maxBytes int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "(" + err.Error() + ")"
	}
	off := max(st.Size()-maxBytes, 0)
	data, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if off > 0 {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// TailStart returns the offset in r (size bytes long) where its last n
// lines begin, reading backwards from the end in 32 KiB blocks and never
// more than maxBytes: when the last n lines are longer than that, it is
// the first line start inside the window (or the window's start, mid-line,
// when the window holds no line break). A final line break ends the last
// line; it does not start an empty one. n <= 0 is the end (no lines).
func TailStart(r io.ReaderAt, size int64, n int, maxBytes int64) (int64, error) {
	if n <= 0 || size <= 0 {
		return max(size, 0), nil
	}
	floor := max(size-maxBytes, 0)
	end := size
	var last [1]byte
	if _, err := r.ReadAt(last[:], size-1); err != nil && err != io.EOF {
		return 0, err
	}
	if last[0] == '\n' {
		end--
	}
	const block = 32 << 10
	buf := make([]byte, block)
	found, earliest := 0, int64(-1)
	for pos := end; pos > floor; {
		start := max(pos-block, floor)
		b := buf[:pos-start]
		if _, err := r.ReadAt(b, start); err != nil && err != io.EOF {
			return 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != '\n' {
				continue
			}
			found++
			earliest = start + int64(i) + 1
			if found == n {
				return earliest, nil
			}
		}
		pos = start
	}
	if floor == 0 {
		return 0, nil
	}
	if earliest >= 0 {
		return earliest, nil
	}
	return floor, nil
}

// Writer appends to a file the daemon owns, keeping it under a byte cap:
// before a write would take it past the cap, the file is renamed to
// path+".1" (replacing the older copy) and started afresh. It is safe for
// concurrent use.
type Writer struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File // guarded by mu
	size int64    // guarded by mu
}

// OpenWriter opens path for appending (0644, created when missing) with a
// cap of max bytes; max <= 0 means no cap.
func OpenWriter(path string, max int64) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Writer{path: path, max: max, f: f, size: st.Size()}, nil
}

// Write appends p, rotating first when p would take the file past the cap.
// A single write larger than the cap is cut to the cap.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	if w.max > 0 {
		if int64(len(p)) > w.max {
			p = p[:w.max]
		}
		if w.size > 0 && w.size+int64(len(p)) > w.max {
			if err := w.rotateLocked(); err != nil {
				return 0, err
			}
		}
	}
	m, err := w.f.Write(p)
	w.size += int64(m)
	if err != nil {
		return m, err
	}
	return n, nil
}

func (w *Writer) rotateLocked() error {
	if err := os.Rename(w.path, w.path+Rotated); err != nil {
		return fmt.Errorf("rotating %s: %w", w.path, err)
	}
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("rotating %s: %w", w.path, err)
	}
	w.f.Close()
	w.f, w.size = f, 0
	return nil
}

// Close closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}
