package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TreeLimits bound what CopyTree takes out of a scratch dir.
type TreeLimits struct {
	Bytes   int64 // total bytes of regular files
	Entries int   // files, directories and links
}

// CopyTree copies the directory rel of the scratch dir (beneath it, no
// symlink on the way) into the host directory dst, merging with what dst
// holds: directories are made root's 0755, regular files root's with their
// permission bits but never setuid, setgid or sticky (0755 or 0644),
// symlinks are recreated as they are (never followed, here or on the host
// side: an existing symlink on the host side is an error), and anything
// else (devices, fifos, sockets) is skipped. It stops with an error past
// the limits.
func (sc *Scratch) CopyTree(rel, dst string, lim TreeLimits) error {
	root, err := unix.Open(sc.dir, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	t := &treeCopy{root: root, lim: lim}
	return t.dir(rel, dst)
}

type treeCopy struct {
	root    int
	lim     TreeLimits
	bytes   int64
	entries int
}

// beneath opens rel beneath the scratch dir, no symlink anywhere.
func (t *treeCopy) beneath(rel string, flags uint64) (int, error) {
	return unix.Openat2(t.root, rel, &unix.OpenHow{
		Flags:   flags | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
}

func (t *treeCopy) count() error {
	t.entries++
	if t.entries > t.lim.Entries {
		return fmt.Errorf("more than %d entries: %w", t.lim.Entries, ErrTooLarge)
	}
	return nil
}

// dir copies the directory rel into dst.
func (t *treeCopy) dir(rel, dst string) error {
	if err := hostDir(dst); err != nil {
		return err
	}
	fd, err := t.beneath(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening %s the sandbox left: %w", rel, err)
	}
	d := os.NewFile(uintptr(fd), rel)
	defer d.Close()
	ents, err := d.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := t.count(); err != nil {
			return err
		}
		r, h := path.Join(rel, e.Name()), filepath.Join(dst, e.Name())
		var st unix.Stat_t
		if err := unix.Fstatat(fd, e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			err = t.dir(r, h)
		case unix.S_IFREG:
			err = t.file(r, h, os.FileMode(st.Mode))
		case unix.S_IFLNK:
			err = t.link(fd, e.Name(), h)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// hostDir makes dst a directory (root's, 0755) unless it is one; a
// symlink or another file there is an error.
func hostDir(dst string) error {
	fi, err := os.Lstat(dst)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.Mkdir(dst, 0o755)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s exists and is not a directory (%s)", dst, fi.Mode().Type())
	}
	return nil
}

// file copies the regular file rel to dst.
func (t *treeCopy) file(rel, dst string, mode os.FileMode) error {
	fd, err := t.beneath(rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return fmt.Errorf("opening %s the sandbox left: %w", rel, err)
	}
	src := os.NewFile(uintptr(fd), rel)
	defer src.Close()
	perm := os.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, io.LimitReader(src, t.lim.Bytes-t.bytes+1))
	t.bytes += n
	if err == nil && t.bytes > t.lim.Bytes {
		err = fmt.Errorf("more than %d bytes: %w", t.lim.Bytes, ErrTooLarge)
	}
	if err == nil {
		err = out.Chown(0, 0)
	}
	if err == nil {
		err = out.Chmod(perm)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// link recreates the symlink name of directory fd at dst.
func (t *treeCopy) link(fd int, name, dst string) error {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, name, buf)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(dst); err == nil {
		if fi.Mode()&os.ModeSymlink == 0 {
			return fmt.Errorf("%s exists and is not a symlink", dst)
		}
		if err := os.Remove(dst); err != nil {
			return err
		}
	}
	return os.Symlink(string(buf[:n]), dst)
}
