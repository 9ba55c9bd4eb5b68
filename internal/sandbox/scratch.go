package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// Scratch is a sandbox's one writable directory: a fresh directory owned
// by the sandbox uid (mode 0700) under the sandbox's scratch root, bound at
// /scratch. Host files the tool works on are passed as open file
// descriptors (Pass: the tool names them /proc/self/fd/N), so the sandbox
// never resolves a host path; results come out of the scratch dir only
// through CopyOut, which follows nothing the tool left. Close gives passed
// files back their owners and modes and removes the directory.
type Scratch struct {
	dir    string
	uid    uint32
	gid    uint32
	passed []passedFile
	extra  []string // host dirs made for a run (mount points), removed by Close
}

// passedFile is a host file handed to the sandbox.
type passedFile struct {
	f   *os.File
	key fileKey
}

// fileKey names an inode.
type fileKey struct{ dev, ino uint64 }

// lent is an inode given to the sandbox uid, with the owner and mode to
// give back once the last scratch holding it closes: two sandboxes may
// hold one file (a rootfs read twice at once) and the second must not
// record the sandbox uid as its owner.
type lent struct {
	uid, gid int
	mode     os.FileMode
	refs     int
}

var (
	lentMu sync.Mutex
	// lentFiles are the inodes given to the sandbox uid now (lentMu).
	lentFiles = map[fileKey]*lent{}
)

// NewScratch makes a scratch dir for s under its scratch root.
func NewScratch(s *Sandbox) (*Scratch, error) {
	dir, err := os.MkdirTemp(s.root, ".sandbox-")
	if err != nil {
		return nil, fmt.Errorf("making a sandbox scratch dir: %w", err)
	}
	if err := os.Chown(dir, int(s.uid), int(s.gid)); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("making a sandbox scratch dir: %w", err)
	}
	return &Scratch{dir: dir, uid: s.uid, gid: s.gid}, nil
}

// Dir is the scratch dir's host path (for tests and error messages; never
// resolve names the tool made through it).
func (sc *Scratch) Dir() string { return sc.dir }

// Pass hands the regular host file at host to the sandbox for its next
// runs: it is opened here (read-write when write is set; never following
// a symlink), given to the sandbox uid until Close, and its descriptor is
// inherited by the tool, which names it by the returned path
// (/proc/self/fd/N). The sandbox cannot reach the file's directory.
func (sc *Scratch) Pass(host string, write bool) (string, error) {
	flags := os.O_RDONLY
	if write {
		flags = os.O_RDWR
	}
	f, err := os.OpenFile(host, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("handing %s to the sandbox: %w", filepath.Base(host), err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return "", fmt.Errorf("handing %s to the sandbox: %w", filepath.Base(host), err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	key := fileKey{dev: st.Dev, ino: st.Ino}
	lentMu.Lock()
	l := lentFiles[key]
	if l == nil {
		if err := f.Chown(int(sc.uid), int(sc.gid)); err != nil {
			lentMu.Unlock()
			f.Close()
			return "", fmt.Errorf("handing %s to the sandbox: %w", filepath.Base(host), err)
		}
		l = &lent{uid: int(st.Uid), gid: int(st.Gid), mode: fi.Mode().Perm()}
		lentFiles[key] = l
	}
	l.refs++
	lentMu.Unlock()
	sc.passed = append(sc.passed, passedFile{f: f, key: key})
	return fmt.Sprintf("/proc/self/fd/%d", 2+len(sc.passed)), nil
}

// files are the descriptors the tool inherits, as fds 3, 4, …
func (sc *Scratch) files() []*os.File {
	fs := make([]*os.File, len(sc.passed))
	for i, p := range sc.passed {
		fs[i] = p.f
	}
	return fs
}

// Mkdir makes directory name in the scratch dir, owned by the sandbox uid.
func (sc *Scratch) Mkdir(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	p := filepath.Join(sc.dir, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	return os.Lchown(p, int(sc.uid), int(sc.gid))
}

// WriteFile writes a new file name into the scratch dir (a command file
// for the tool), before the tool runs.
func (sc *Scratch) WriteFile(name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(sc.dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkName accepts a plain file name, no separators or dots.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("sandbox: bad scratch name %q", name)
	}
	return nil
}

// open opens rel (slash-separated, beneath the scratch dir) as a regular
// file, refusing every symlink on the way and any escape.
func (sc *Scratch) open(rel string) (*os.File, os.FileInfo, error) {
	root, err := unix.Open(sc.dir, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_RDONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s the sandbox left: %w", rel, err)
	}
	f := os.NewFile(uintptr(fd), rel)
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s the sandbox left is not a regular file (%s)", rel, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// ErrTooLarge is returned by CopyOut for a file over its limit.
var ErrTooLarge = errors.New("file too large")

// CopyOut copies the regular file rel (beneath the scratch dir, no symlink
// on the way) to the new host file dst, owned by root with mode perm (no
// setuid, no device: only the contents cross). A file over max bytes is
// refused with ErrTooLarge.
func (sc *Scratch) CopyOut(rel, dst string, perm os.FileMode, max int64) error {
	src, fi, err := sc.open(rel)
	if err != nil {
		return err
	}
	defer src.Close()
	if fi.Size() > max {
		return fmt.Errorf("%s: %d bytes: %w (limit %d)", rel, fi.Size(), ErrTooLarge, max)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, perm.Perm()&0o777)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, io.LimitReader(src, max+1))
	if err == nil && n > max {
		err = fmt.Errorf("%s: %w (limit %d)", rel, ErrTooLarge, max)
	}
	if err == nil {
		err = out.Chown(0, 0)
	}
	if err == nil {
		err = out.Chmod(perm.Perm() & 0o777)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// Close gives passed files back their owner and mode (no setuid) and
// removes the scratch dir and everything the tool left in it (nothing is
// followed). It returns the first error.
func (sc *Scratch) Close() error {
	var first error
	for _, p := range sc.passed {
		if err := giveBack(p); err != nil && first == nil {
			first = fmt.Errorf("giving %s back its owner: %w", p.f.Name(), err)
		}
	}
	sc.passed = nil
	for _, d := range sc.extra {
		if err := os.RemoveAll(d); err != nil && first == nil {
			first = err
		}
	}
	if err := os.RemoveAll(sc.dir); err != nil && first == nil {
		first = fmt.Errorf("removing the sandbox scratch dir: %w", err)
	}
	return first
}

// Clean removes the scratch dirs an interrupted daemon left under root
// (at daemon start, before any sandbox runs).
func Clean(root string) error {
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var first error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".sandbox-") {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// checkRoot makes the scratch root (0711) unless it is there, and checks
// it: an absolute path whose parents others may search (bwrap resolves the
// scratch dir as the sandbox uid), itself a directory owned by root that
// nobody else may write (nobody can swap a scratch dir for a link).
func checkRoot(root string) error {
	if !filepath.IsAbs(root) {
		return fmt.Errorf("sandbox scratch root %q is not an absolute path", root)
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return fmt.Errorf("making the sandbox scratch root: %w", err)
	}
	fi, err := os.Lstat(root)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return api.FailedPrecondition("sandbox scratch root %s must be a directory owned by root that only root may write (it is %s, uid %d)",
			root, fi.Mode(), st.Uid).WithFix("remove it (bangerd makes it), or set sandbox_dir to another path")
	}
	for d := filepath.Dir(root); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return api.FailedPrecondition("sandbox scratch root %s is below %s, which other users cannot search (%s): the sandbox uid cannot reach it",
				root, d, fi.Mode().Perm()).WithFix("set sandbox_dir to a path whose parents are searchable (default " + DefaultRoot + "), or chmod o+x " + d)
		}
		if d == "/" {
			return nil
		}
	}
}

// giveBack closes a passed file; the last holder of its inode gives it
// back its owner and mode (chown clears setuid and setgid; the mode is set
// again all the same).
func giveBack(p passedFile) error {
	lentMu.Lock()
	defer lentMu.Unlock()
	var err error
	if l := lentFiles[p.key]; l != nil {
		if l.refs--; l.refs == 0 {
			delete(lentFiles, p.key)
			err = p.f.Chown(l.uid, l.gid)
			if err == nil {
				err = p.f.Chmod(l.mode)
			}
		}
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	return err
}
