package qemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/vmm"
)

// Guest memory as files: the shared RAM file a guest with Spec.MemoryFile
// runs on, its copy in a snapshot, and the sealed in-memory template
// restored children map.
//
// Trust: the RAM file is owned by the VM's uid (QEMU must open it), so an
// escaped guest can rewrite, truncate or grow it at any time: it is opened
// without following links, must be a regular file of exactly the guest's
// size, and is read within that size only. Snapshot files are root's
// (0400) in the orchestrator's directory; still, they are checked against
// the sizes and SHA-256 sums Save recorded before a child sees them.

// sealTemplates is whether templates are sealed; only the attack test
// turns it off, to show the attack succeeding without the seals.
var sealTemplates = true

// templateSeals make a memfd immutable for good: no write(2), no shared
// writable mapping, no size change, no seal removal. Private mappings
// (children's share=off RAM) stay possible.
const templateSeals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL

// chunk is the copy unit; zero chunks are not written (the copy stays
// sparse) but are hashed.
const chunk = 1 << 20

var zeros = make([]byte, chunk)

// createMemoryFile creates spec's RAM file: new (never an existing file or
// a link), 0600, owned by the VM's uid, sized (sparse) to its memory.
func createMemoryFile(spec vmm.Spec) (*os.File, error) {
	f, err := os.OpenFile(spec.MemoryFile, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, api.AlreadyExists("vm %s: memory file %s already exists", spec.Name, spec.MemoryFile).
			WithFix("remove " + spec.MemoryFile + " once no engine uses it (it belongs to a VM that is gone)")
	}
	if err != nil {
		return nil, api.Unavailable("vm %s: creating memory file: %w", spec.Name, err)
	}
	if err := f.Chown(spec.UID, spec.GID); err == nil {
		err = f.Truncate(int64(spec.MemoryMiB) << 20)
	}
	if err != nil {
		f.Close()
		_ = os.Remove(spec.MemoryFile)
		return nil, api.Unavailable("vm %s: preparing memory file %s: %w", spec.Name, spec.MemoryFile, err)
	}
	return f, nil
}

// Fixes for the errors of openSized.
const (
	fixSnapshot = "delete the snapshot and take it again"
	fixGuestRAM = "the guest's memory file was changed from outside (an escaped guest?): stop the VM"
)

// openSized opens path read-only (no link followed) and checks it is a
// regular file of size bytes; errors are FailedPrecondition with fix.
func openSized(path, what string, size int64, fix string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	// O_NONBLOCK: a FIFO put in the file's place (the VM's uid owns a RAM
	// file and may rename it in a sticky directory) must not hang us.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, st, api.FailedPrecondition("%s %s: %w", what, path, err).
			WithFix(fix)
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, st, fmt.Errorf("%s %s: %w", what, path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		f.Close()
		return nil, st, api.FailedPrecondition("%s %s is not a regular file", what, path).
			WithFix(fix)
	case st.Size != size:
		f.Close()
		return nil, st, api.FailedPrecondition("%s %s is %d bytes, expected %d: truncated or replaced", what, path, st.Size, size).
			WithFix(fix)
	}
	return f, st, nil
}

// sparseCopy reads src's first size bytes, data ranges only (SEEK_DATA,
// SEEK_HOLE), feeding every byte (holes as zeros) to h and handing each
// chunk that is not all zeros to write. Hashing runs beside the copy (it
// is most of the work: 512 MiB of SHA-256 is ~300 ms here, and Save runs
// while the guest is paused); h is complete when sparseCopy returns.
func sparseCopy(src *os.File, size int64, h hash.Hash, write func(b []byte, off int64) error) error {
	a := newAsyncHash(h)
	defer a.finish()
	fd := int(src.Fd())
	hashZeros := func(n int64) {
		for n > 0 {
			k := min(n, chunk)
			a.ch <- zeros[:k]
			n -= k
		}
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && data >= size) {
			hashZeros(size - off)
			return nil
		}
		if err != nil {
			return fmt.Errorf("seeking data in %s: %w", src.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seeking a hole in %s: %w", src.Name(), err)
		}
		hole = min(hole, size)
		hashZeros(data - off)
		for p := data; p < hole; {
			buf := <-a.free
			n, err := src.ReadAt(buf[:min(hole-p, chunk)], p)
			if n == 0 && err != nil {
				a.free <- buf
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("%s shrank while being read", src.Name())
				}
				return fmt.Errorf("reading %s: %w", src.Name(), err)
			}
			if !bytes.Equal(buf[:n], zeros[:n]) {
				if err := write(buf[:n], p); err != nil {
					a.free <- buf
					return err
				}
			}
			a.ch <- buf[:n]
			p += int64(n)
		}
		off = hole
	}
	return nil
}

// asyncHash writes the chunks sent on ch into h from its own goroutine and
// hands copy buffers back on free.
type asyncHash struct {
	ch   chan []byte
	free chan []byte
	done chan struct{}
}

const hashBuffers = 4

func newAsyncHash(h hash.Hash) *asyncHash {
	a := &asyncHash{ch: make(chan []byte, hashBuffers), free: make(chan []byte, hashBuffers), done: make(chan struct{})}
	for range hashBuffers {
		a.free <- make([]byte, chunk)
	}
	go func() {
		defer close(a.done)
		for b := range a.ch {
			h.Write(b)
			if len(b) > 0 && &b[0] != &zeros[0] {
				a.free <- b[:chunk]
			}
		}
	}()
	return a
}

// finish waits until every chunk sent is hashed.
func (a *asyncHash) finish() {
	if a.ch != nil {
		close(a.ch)
		<-a.done
		a.ch = nil
	}
}

// copyMemory copies the guest RAM file src (size bytes) to dst, a new file
// root's 0400, sparse, and returns its SHA-256.
func copyMemory(src, dst string, size int64) (string, error) {
	in, _, err := openSized(src, "guest memory file", size, fixGuestRAM)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", dst, err)
	}
	defer out.Close()
	h := sha256.New()
	if err := sparseCopy(in, size, h, func(b []byte, off int64) error {
		_, err := out.WriteAt(b, off)
		return err
	}); err != nil {
		return "", err
	}
	if err := out.Truncate(size); err != nil {
		return "", fmt.Errorf("sizing %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		return "", fmt.Errorf("syncing %s: %w", dst, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashFile returns the size and SHA-256 of the file at path.
func hashFile(path string) (int64, string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("reading %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// openVerified opens a snapshot's file, checks its size and SHA-256 and
// returns it positioned at its start.
func openVerified(path, what string, size int64, sum string) (*os.File, error) {
	f, _, err := openSized(path, what, size, fixSnapshot)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		f.Close()
		return nil, api.FailedPrecondition("%s %s has SHA-256 %s, the snapshot says %s: it changed after it was saved", what, path, got, sum).
			WithFix(fixSnapshot)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// template is a snapshot's memory loaded into a sealed memfd, and the
// identity of the file it was loaded from.
type template struct {
	f     *os.File
	ino   uint64
	size  int64
	mtime unix.Timespec
	sum   string
}

// loadTemplate reads the snapshot memory file in (already opened and
// sized) into a new memfd, verifying its SHA-256 on the way, and seals it.
func loadTemplate(in *os.File, size int64, sum string) (*os.File, error) {
	fd, err := unix.MemfdCreate("banger-snapshot-memory", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	mf := os.NewFile(uintptr(fd), "memfd:banger-snapshot-memory")
	ok := false
	defer func() {
		if !ok {
			mf.Close()
		}
	}()
	if err := mf.Truncate(size); err != nil {
		return nil, fmt.Errorf("sizing the memory template: %w", err)
	}
	h := sha256.New()
	if err := sparseCopy(in, size, h, func(b []byte, off int64) error {
		_, err := mf.WriteAt(b, off)
		return err
	}); err != nil {
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return nil, api.FailedPrecondition("snapshot memory %s has SHA-256 %s, the snapshot says %s: it changed after it was saved", in.Name(), got, sum).
			WithFix(fixSnapshot)
	}
	if sealTemplates {
		if _, err := unix.FcntlInt(mf.Fd(), unix.F_ADD_SEALS, templateSeals); err != nil {
			return nil, fmt.Errorf("sealing the memory template: %w", err)
		}
	}
	ok = true
	return mf, nil
}

// templateFor returns a dup of snap's memory template (the caller closes
// it), loading and verifying it when it is not cached or its file changed
// (another inode, size or mtime, or another recorded SHA-256).
func (e *Engine) templateFor(snap vmm.Snapshot) (*os.File, error) {
	in, st, err := openSized(snap.Memory, "snapshot memory", snap.MemorySize, fixSnapshot)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.templates[snap.Memory]
	if t == nil || t.ino != st.Ino || t.size != st.Size || t.mtime != st.Mtim || t.sum != snap.MemorySHA256 {
		f, err := loadTemplate(in, snap.MemorySize, snap.MemorySHA256)
		if err != nil {
			return nil, err
		}
		if t != nil {
			t.f.Close() // children hold their own dups
		}
		t = &template{f: f, ino: st.Ino, size: st.Size, mtime: st.Mtim, sum: snap.MemorySHA256}
		if e.templates == nil {
			e.templates = map[string]*template{}
		}
		e.templates[snap.Memory] = t
	}
	fd, err := unix.FcntlInt(t.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating the memory template: %w", err)
	}
	return os.NewFile(uintptr(fd), t.f.Name()), nil
}

// Forget closes snap's cached memory template; running children keep
// their own descriptors (and so the pages they share).
func (e *Engine) Forget(snap vmm.Snapshot) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t := e.templates[snap.Memory]; t != nil {
		t.f.Close()
		delete(e.templates, snap.Memory)
	}
}
