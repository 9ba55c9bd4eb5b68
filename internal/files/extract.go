// Package files moves files and directory trees between the host and a
// guest as tar streams (`banger vm cp`, the MCP server's copy tools): Pack
// turns a host tree into a tar, Extract writes a tar that came from a guest
// beneath a host directory, and CopyIn/CopyOut run tar in the guest through
// the agent's exec protocol.
//
// What Extract trusts: nothing in the tar. Names are cleaned and must lie
// under the one top-level name asked for (no absolute names, no ".."); every
// write is resolved beneath the destination with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so a symlink in the tar (kept as a symlink, never
// followed) cannot redirect a later entry out of it; only directories,
// regular files and symlinks are made (hard links become copies of a file
// already extracted, devices and FIFOs are skipped and counted), modes keep
// their permission bits only (no setuid, setgid or sticky), nothing is
// chowned, and the bytes and entries written are bounded (Limits). The tree
// is built in a staging directory beside the destination and renamed into
// place at the end: a failure leaves nothing behind.
package files

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// Limits bound what one Extract writes.
type Limits struct {
	MaxBytes   int64 // file contents, hard-link copies included
	MaxEntries int   // tar headers
}

// DefaultLimits: 16 GiB and a million entries.
var DefaultLimits = Limits{MaxBytes: 16 << 30, MaxEntries: 1 << 20}

// Stats says what an Extract or a Pack moved.
type Stats struct {
	Files    int   `json:"files"`
	Dirs     int   `json:"dirs"`
	Symlinks int   `json:"symlinks"`
	Bytes    int64 `json:"bytes"`
	// Skipped counts entries that were not made: devices, FIFOs, sockets.
	Skipped int `json:"skipped,omitempty"`
}

// Extract reads a tar whose entries all lie under the top-level name top and
// makes that tree as dstDir/as (as = top when empty). dstDir must be an
// existing directory; dstDir/as must not be an existing directory, and an
// existing file there is replaced only when the tar's top is a file.
func Extract(r io.Reader, dstDir, top, as string, lim Limits) (Stats, error) {
	if as == "" {
		as = top
	}
	if err := checkBase(top); err != nil {
		return Stats{}, err
	}
	if err := checkBase(as); err != nil {
		return Stats{}, err
	}
	dst, err := unix.Open(dstDir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return Stats{}, api.Invalid("destination %s is a file, not a directory", dstDir).
				WithFix("give a directory, or a new name inside an existing directory")
		}
		return Stats{}, api.Invalid("destination directory %s: %w", dstDir, err)
	}
	defer unix.Close(dst)
	staging, err := os.MkdirTemp(dstDir, ".banger-cp-")
	if err != nil {
		return Stats{}, fmt.Errorf("making a staging directory in %s: %w", dstDir, err)
	}
	defer os.RemoveAll(staging) // RemoveAll never follows symlinks
	root, err := unix.Open(staging, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, fmt.Errorf("opening staging directory: %w", err)
	}
	defer unix.Close(root)
	x := &extractor{root: root, top: top, as: as, lim: lim, dirModes: map[string]uint32{}}
	if err := x.run(r); err != nil {
		return x.st, err
	}
	if err := x.finishDirs(); err != nil {
		return x.st, err
	}
	if !x.sawTop {
		return x.st, api.Invalid("the guest sent no %q", top)
	}
	return x.st, place(root, dst, as, dstDir)
}

// place renames staging/as to dst/as.
func place(root, dst int, as, dstDir string) error {
	var have, want unix.Stat_t
	if err := unix.Fstatat(root, as, &want, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat staged %s: %w", as, err)
	}
	err := unix.Fstatat(dst, as, &have, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && (have.Mode&unix.S_IFMT == unix.S_IFDIR || want.Mode&unix.S_IFMT == unix.S_IFDIR) {
		return api.AlreadyExists("%s already exists in %s", as, dstDir).
			WithFix("remove it first, or copy to a new name")
	}
	if err := unix.Renameat(root, as, dst, as); err != nil {
		return fmt.Errorf("moving %s into %s: %w", as, dstDir, err)
	}
	return nil
}

// checkBase accepts one path component.
func checkBase(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return api.Invalid("%q is not a file name", name)
	}
	return nil
}

type extractor struct {
	root     int
	top, as  string
	lim      Limits
	st       Stats
	entries  int
	sawTop   bool
	dirModes map[string]uint32 // applied after the tree is written
	dirOrder []string
}

// run extracts every entry of r.
func (x *extractor) run(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return api.Invalid("reading the tar from the guest: %w", err)
		}
		x.entries++
		if x.lim.MaxEntries > 0 && x.entries > x.lim.MaxEntries {
			return api.Invalid("the guest sent more than %d entries", x.lim.MaxEntries).
				WithFix("copy a smaller tree, or raise the limit")
		}
		name, err := x.rename(hdr.Name)
		if err != nil {
			return err
		}
		if err := x.entry(tr, hdr, name); err != nil {
			return err
		}
	}
}

// rename cleans a tar name, checks it lies under top and swaps top for as.
func (x *extractor) rename(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 || path.IsAbs(name) {
		return "", api.Invalid("the guest sent an entry with an absolute or invalid name %q", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", api.Invalid("the guest sent an entry with \"..\" in its name %q", name)
		}
	}
	clean := path.Clean(strings.TrimPrefix(name, "./"))
	first, rest, _ := strings.Cut(clean, "/")
	if first != x.top {
		return "", api.Invalid("the guest sent %q, which is not under %q", name, x.top)
	}
	if rest == "" {
		x.sawTop = true
		return x.as, nil
	}
	return x.as + "/" + rest, nil
}

// resolveFlags: beneath the staging root, through no symlink at all.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openParent opens the directory holding name beneath the root.
func (x *extractor) openParent(name string) (int, string, error) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Openat2(x.root, dir, &unix.OpenHow{
		Flags: unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC, Resolve: resolveFlags,
	})
	if err != nil {
		return -1, "", api.Invalid("the guest sent %q, whose directory %q cannot be used (%v): a symlink or a file on the way, or a missing directory", name, dir, err)
	}
	return fd, base, nil
}

func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header, name string) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.mkdir(name, uint32(hdr.Mode)&0o777)
	case tar.TypeReg, tar.TypeRegA:
		return x.file(name, uint32(hdr.Mode)&0o777, tr)
	case tar.TypeSymlink:
		return x.symlink(name, hdr.Linkname)
	case tar.TypeLink:
		return x.hardlink(name, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		x.st.Skipped++
		return nil
	default:
		return api.Invalid("the guest sent %q of tar type %q, which banger does not copy", name, hdr.Typeflag)
	}
}

func (x *extractor) mkdir(name string, mode uint32) error {
	pfd, base, err := x.openParent(name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	err = unix.Mkdirat(pfd, base, 0o700)
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if e := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); e != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return api.Invalid("the guest sent directory %q over a non-directory", name)
		}
		err = nil
	} else if err == nil {
		x.st.Dirs++
		x.dirOrder = append(x.dirOrder, name)
	}
	x.dirModes[name] = mode
	return err
}

// create makes name as a new regular file (replacing a file or symlink
// already there, never a directory) and returns it open for writing.
func (x *extractor) create(name string) (*os.File, error) {
	pfd, base, err := x.openParent(name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	if err := x.unlinkOld(pfd, base, name); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// unlinkOld removes a non-directory already at base.
func (x *extractor) unlinkOld(pfd int, base, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return api.Invalid("the guest sent %q over a directory", name)
	}
	return unix.Unlinkat(pfd, base, 0)
}

func (x *extractor) file(name string, mode uint32, r io.Reader) error {
	f, err := x.create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := x.copyBounded(f, r, name); err != nil {
		return err
	}
	if err := f.Chmod(os.FileMode(mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	x.st.Files++
	return f.Close()
}

// copyBounded copies r into f, failing past the byte budget.
func (x *extractor) copyBounded(f *os.File, r io.Reader, name string) error {
	left := x.lim.MaxBytes - x.st.Bytes
	if x.lim.MaxBytes <= 0 {
		left = 1<<63 - 1
	}
	n, err := io.Copy(f, io.LimitReader(r, left+1))
	x.st.Bytes += n
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if n > left {
		return api.Invalid("the guest sent more than %d bytes (at %q)", x.lim.MaxBytes, name).
			WithFix("copy a smaller tree, or raise the limit")
	}
	return nil
}

func (x *extractor) symlink(name, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 || len(target) > 4096 {
		return api.Invalid("the guest sent symlink %q with an invalid target", name)
	}
	pfd, base, err := x.openParent(name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := x.unlinkOld(pfd, base, name); err != nil {
		return err
	}
	if err := unix.Symlinkat(target, pfd, base); err != nil {
		return fmt.Errorf("symlink %s: %w", name, err)
	}
	x.st.Symlinks++
	return nil
}

// hardlink copies a regular file extracted earlier (resolved beneath the
// root like any write) instead of linking: no link can reach outside.
func (x *extractor) hardlink(name string, hdr *tar.Header) error {
	src, err := x.rename(hdr.Linkname)
	if err != nil {
		return err
	}
	fd, err := unix.Openat2(x.root, src, &unix.OpenHow{
		Flags: unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolveFlags,
	})
	if err != nil {
		return api.Invalid("the guest sent hard link %q to %q, which is not a file it sent before", name, hdr.Linkname)
	}
	in := os.NewFile(uintptr(fd), src)
	defer in.Close()
	fi, err := in.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return api.Invalid("the guest sent hard link %q to %q, which is not a regular file", name, hdr.Linkname)
	}
	return x.file(name, uint32(fi.Mode().Perm()), in)
}

// finishDirs sets directory modes, deepest first (a read-only directory
// made early would refuse its children).
func (x *extractor) finishDirs() error {
	for i := len(x.dirOrder) - 1; i >= 0; i-- {
		name := x.dirOrder[i]
		fd, err := unix.Openat2(x.root, name, &unix.OpenHow{
			Flags: unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC, Resolve: resolveFlags,
		})
		if err != nil {
			return fmt.Errorf("opening %s: %w", name, err)
		}
		err = unix.Fchmod(fd, x.dirModes[name])
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("chmod %s: %w", name, err)
		}
	}
	return nil
}
