package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// ReflinkFix is the fix given when a directory's filesystem cannot reflink.
const ReflinkFix = "keep disks on XFS made with 'mkfs.xfs -m reflink=1' or on btrfs " +
	"(banger's loop-backed XFS pool does this for you), or use the copy driver"

// CheckPaths validates the paths of a Create: base must be an existing
// regular file (NotFound / Invalid), dst's directory must exist (NotFound)
// and dst must not (AlreadyExists). Drivers call it before any side effect.
func CheckPaths(base, dst string) error {
	st, err := os.Stat(base)
	if errors.Is(err, os.ErrNotExist) {
		return api.NotFound("base image %s does not exist", base).
			WithFix("pull or build the image again")
	}
	if err != nil {
		return fmt.Errorf("checking base image %s: %w", base, err)
	}
	if !st.Mode().IsRegular() {
		return api.Invalid("base image %s is not a regular file", base)
	}
	dir := filepath.Dir(dst)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return api.NotFound("disk directory %s does not exist", dir).
			WithFix("create the directory first")
	}
	if _, err := os.Lstat(dst); err == nil {
		return api.AlreadyExists("disk %s already exists", dst).
			WithFix("remove the old disk first")
	}
	return nil
}

// RemoveFiles deletes every file in d.Files (and d.Path when it is a
// file), ignoring files that are already gone.
func RemoveFiles(d Disk) error {
	var errs []error
	for _, f := range d.Files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing %s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// Clone copies src to a new file dst (which must not exist): a reflink
// (FICLONE) when the filesystem shares extents, else a sparse copy. It is
// the one way images and work disks are duplicated. On failure dst is gone.
func Clone(src, dst string) error {
	err := CloneFile(src, dst)
	if err == nil || !IsNoReflink(err) {
		return err
	}
	return SparseCopy(src, dst)
}

// IsNoReflink reports whether err from CloneFile means "this filesystem
// (or this pair of files) cannot share extents", as opposed to a real
// failure such as a missing source.
func IsNoReflink(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS, unix.EBADF} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// CloneFile makes dst a reflink of src with the FICLONE ioctl: O(1), the
// two files share extents until one is written. dst must not exist. When
// the filesystem cannot reflink the error is FailedPrecondition carrying
// the errno (see IsNoReflink) and ReflinkFix. On failure dst is gone.
func CloneFile(src, dst string) (err error) {
	in, out, err := openPair(src, dst, false)
	if err != nil {
		return err
	}
	defer in.Close()
	defer func() { err = finishPair(out, dst, err) }()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if IsNoReflink(err) {
			return api.FailedPrecondition("reflinking %s to %s: the filesystem cannot share extents: %w",
				src, dst, err).WithFix(ReflinkFix)
		}
		return fmt.Errorf("reflinking %s to %s: %w", src, dst, err)
	}
	return nil
}

// SparseCopy copies src (a regular file, or a block device such as an
// attached dm-snapshot) to a new file dst keeping holes: it walks src's
// data extents (SEEK_DATA/SEEK_HOLE) and within them skips all-zero
// blocks, so the copy never uses more blocks than the source. dst is
// fsynced. On failure dst is gone.
func SparseCopy(src, dst string) (err error) {
	in, out, err := openPair(src, dst, true)
	if err != nil {
		return err
	}
	defer in.Close()
	defer func() { err = finishPair(out, dst, err) }()
	size, err := in.Seek(0, io.SeekEnd) // a block device's Stat size is 0
	if err != nil {
		return fmt.Errorf("sizing %s: %w", src, err)
	}
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("sizing %s: %w", dst, err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			data = off // no SEEK_DATA here: treat the rest as data
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if err := copyRange(in, out, buf, data, hole); err != nil {
			return fmt.Errorf("copying %s to %s: %w", src, dst, err)
		}
		off = hole
	}
	return nil
}

// sparseBlock is the granularity at which zero runs are skipped.
const sparseBlock = 4096

// copyRange copies [from, to) from in to out, skipping all-zero blocks.
func copyRange(in, out *os.File, buf []byte, from, to int64) error {
	zero := make([]byte, sparseBlock)
	for off := from; off < to; {
		n := int64(len(buf))
		if to-off < n {
			n = to - off
		}
		got, err := in.ReadAt(buf[:n], off)
		if err != nil && !(errors.Is(err, io.EOF) && got > 0) {
			return err
		}
		chunk := buf[:got]
		for i := 0; i < len(chunk); {
			j := min(i+sparseBlock, len(chunk))
			if bytes.Equal(chunk[i:j], zero[:j-i]) {
				i = j
				continue
			}
			// extend the non-zero run
			for j < len(chunk) {
				k := min(j+sparseBlock, len(chunk))
				if bytes.Equal(chunk[j:k], zero[:k-j]) {
					break
				}
				j = k
			}
			if _, err := out.WriteAt(chunk[i:j], off+int64(i)); err != nil {
				return err
			}
			i = j
		}
		off += int64(got)
	}
	return nil
}

// openPair opens src for reading and creates dst exclusively with src's
// permission bits (0600 for a device), translating the usual failures into
// error kinds. src must be a regular file, or a block device when devices
// is set.
func openPair(src, dst string, devices bool) (*os.File, *os.File, error) {
	in, err := os.Open(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, api.NotFound("source %s does not exist", src)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", src, err)
	}
	st, err := in.Stat()
	if err != nil {
		in.Close()
		return nil, nil, fmt.Errorf("opening %s: %w", src, err)
	}
	perm := st.Mode().Perm()
	switch {
	case st.Mode().IsRegular():
	case devices && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		perm = 0o600
	default:
		in.Close()
		return nil, nil, api.Invalid("source %s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		in.Close()
		switch {
		case errors.Is(err, os.ErrExist):
			return nil, nil, api.AlreadyExists("%s already exists", dst)
		case errors.Is(err, os.ErrNotExist):
			return nil, nil, api.NotFound("directory %s does not exist", filepath.Dir(dst))
		}
		return nil, nil, fmt.Errorf("creating %s: %w", dst, err)
	}
	return in, out, nil
}

// finishPair syncs and closes out; when anything failed it removes dst.
// It returns the first error.
func finishPair(out *os.File, dst string, err error) error {
	if err == nil {
		if serr := out.Sync(); serr != nil {
			err = fmt.Errorf("syncing %s: %w", dst, serr)
		}
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing %s: %w", dst, cerr)
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}
