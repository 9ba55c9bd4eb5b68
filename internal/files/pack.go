package files

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
)

// Pack writes the host file or tree src as a tar whose top-level name is
// name: directories, regular files and symlinks (kept as links, never
// followed), with their permission bits, owned by root in the guest.
// Devices, FIFOs and sockets are skipped and counted.
func Pack(w io.Writer, src, name string) (Stats, error) {
	var st Stats
	if err := checkBase(name); err != nil {
		return st, err
	}
	if _, err := os.Lstat(src); err != nil {
		return st, api.NotFound("%s: %w", src, err).WithFix("check the host path")
	}
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		tname := name
		if rel != "." {
			tname = name + "/" + filepath.ToSlash(rel)
		}
		return packOne(tw, p, tname, &st)
	})
	if err != nil {
		return st, fmt.Errorf("packing %s: %w", src, err)
	}
	return st, tw.Close()
}

func packOne(tw *tar.Writer, p, tname string, st *Stats) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: tname, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime(), Uname: "root", Gname: "root"}
	switch {
	case fi.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, tname+"/"
		st.Dirs++
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		st.Symlinks++
	case fi.Mode().IsRegular():
		hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
	default:
		st.Skipped++
		return nil
	}
	if strings.ContainsRune(tname, 0) {
		return fmt.Errorf("name %q has a NUL byte", tname)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyN(tw, f, hdr.Size)
	st.Bytes += n
	if err != nil {
		return fmt.Errorf("%s changed while being copied: %w", p, err)
	}
	st.Files++
	return nil
}
