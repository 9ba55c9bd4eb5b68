package ext4

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxCopyOut is the largest file CopyOut takes out of an image (a kernel
// or an initramfs).
const MaxCopyOut = 1 << 30

// debugfs runs debugfs commands on an ext4 image (write opens it
// read-write) in the sandbox and returns the output. Nothing is mounted.
func debugfs(ctx context.Context, path string, write bool, cmds ...string) (out string, err error) {
	s, err := newSession()
	if err != nil {
		return "", err
	}
	defer s.close(&err)
	b, err := s.debugfs(ctx, path, write, cmds...)
	return string(b), err
}

// debugfs runs debugfs commands (a command file in the scratch dir) on the
// image at img in the session's sandbox.
func (s *session) debugfs(ctx context.Context, img string, write bool, cmds ...string) ([]byte, error) {
	s.n++
	name := "cmds-" + strconv.Itoa(s.n)
	if err := s.sc.WriteFile(name, []byte(strings.Join(cmds, "\n")+"\n")); err != nil {
		return nil, err
	}
	p, err := s.sc.Pass(img, write)
	if err != nil {
		return nil, err
	}
	args := []string{"debugfs", "-f", "/scratch/" + name, p}
	if write {
		args = []string{"debugfs", "-w", "-f", "/scratch/" + name, p}
	}
	c := toolCmd(args)
	c.MaxFileSize = s.maxFile
	out, err := s.sb.Run(ctx, s.sc, c)
	if err != nil {
		return out, fmt.Errorf("debugfs on %s: %w (sandboxed)", filepath.Base(img), err)
	}
	return out, nil
}

// ReadDir lists the names in dir of an ext4 image, without . and ..
func ReadDir(ctx context.Context, img, dir string) ([]string, error) {
	out, err := debugfs(ctx, img, false, "ls -p "+dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(strings.TrimSpace(line), "/")
		if len(f) >= 7 && f[5] != "." && f[5] != ".." && f[5] != "" {
			names = append(names, f[5])
		}
	}
	return names, nil
}

// Exists reports whether an ext4 image holds path.
func Exists(ctx context.Context, img, path string) bool {
	out, err := debugfs(ctx, img, false, "stat "+path)
	return err == nil && strings.Contains(out, "Inode:") && !strings.Contains(out, "File not found")
}

// CopyOut copies files out of an ext4 image: each pair is {path in the
// image, new host file}. The files are dumped inside the sandbox; the host
// takes each only if it came out a regular file of at most MaxCopyOut
// bytes, and writes it owned by root with mode 0644 whatever the image
// said (no guest uid, no setuid).
func CopyOut(ctx context.Context, img string, pairs ...[2]string) (err error) {
	s, err := newSession()
	if err != nil {
		return err
	}
	defer s.close(&err)
	if err := s.sc.Mkdir("out"); err != nil {
		return err
	}
	var cmds []string
	for i, p := range pairs {
		cmds = append(cmds, "dump "+p[0]+" /scratch/out/"+strconv.Itoa(i))
	}
	// Each dumped file is capped: a guest's 100 GiB "kernel" must not fill
	// the host's disk.
	s.maxFile = MaxCopyOut + 1
	if _, err := s.debugfs(ctx, img, false, cmds...); err != nil {
		return err
	}
	for i, p := range pairs {
		if err := s.sc.CopyOut("out/"+strconv.Itoa(i), p[1], 0o644, MaxCopyOut); err != nil {
			return fmt.Errorf("copying %s out of %s: %w", p[0], filepath.Base(img), err)
		}
	}
	return nil
}

// MakeFromTree makes a fresh ext4 image at out (size bytes, label, 4 KiB
// blocks, root-owned root directory; out must not exist) holding directory
// dir of the image img — or empty when img has no such directory, which it
// reports as false. Both steps run in one sandbox: debugfs rdumps dir into
// the sandbox's own /tmp (a tmpfs of at most size bytes: nothing reaches
// the host's disk) and mke2fs -d builds out from there, so nothing the
// guest's filesystem holds (symlinks, duplicate names, devices) is ever
// resolved on the host. Files come out owned by root: the sandbox maps one
// uid only.
func MakeFromTree(ctx context.Context, out string, size int64, label, img, dir string) (found bool, err error) {
	if err := create(out, size); err != nil {
		return false, err
	}
	defer func() {
		if err != nil {
			os.Remove(out)
		}
	}()
	s, err := newSession()
	if err != nil {
		return false, err
	}
	defer s.close(&err)
	pimg, err := s.sc.Pass(img, false)
	if err != nil {
		return false, err
	}
	pout, err := s.sc.Pass(out, true)
	if err != nil {
		return false, err
	}
	// A tree rdump cannot read makes an empty filesystem; one that does
	// not fit the size is an error.
	script := `mkdir /tmp/tree && err=$(debugfs -R "rdump $DIR /tmp/tree" "$IMG" 2>&1 >/dev/null)
case "$err" in *"No space left"*|*"File too large"*) echo "$DIR holds more than fits in $SIZE bytes" >&2; exit 3;; esac
src=/tmp/tree/$(basename "$DIR")
if [ -d "$src" ] && [ ! -L "$src" ]; then echo banger-tree-found; exec mkfs.ext4 "$@" -d "$src" "$OUT"; fi
exec mkfs.ext4 "$@" "$OUT"`
	c := toolCmd([]string{"sh", "-c", script, "sh", "-q", "-F", "-L", label, "-b", "4096", "-E", "root_owner=0:0"})
	c.Env = []string{"DIR=" + dir, "IMG=" + pimg, "OUT=" + pout, "SIZE=" + strconv.FormatInt(size, 10)}
	c.TmpSize = size
	o, err := s.sb.Run(ctx, s.sc, c)
	if err != nil {
		return false, fmt.Errorf("making the %s filesystem from %s of %s: %w (sandboxed)", label, dir, filepath.Base(img), err)
	}
	return strings.Contains(string(o), "banger-tree-found"), nil
}

// create makes the sparse file of size bytes a filesystem is made in.
func create(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Base(path), err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("sizing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Remove removes files from an ext4 image; missing ones are skipped.
func Remove(ctx context.Context, img string, paths ...string) error {
	cmds := make([]string, 0, len(paths))
	for _, p := range paths {
		cmds = append(cmds, "rm "+p)
	}
	_, err := debugfs(ctx, img, true, cmds...)
	return err
}

// PutEmpty replaces path in an ext4 image with an empty root-owned file of
// the given permissions (e.g. 0o444).
func PutEmpty(ctx context.Context, img, path string, perm os.FileMode) (err error) {
	s, err := newSession()
	if err != nil {
		return err
	}
	defer s.close(&err)
	if err := s.sc.WriteFile("empty", nil); err != nil {
		return err
	}
	_, err = s.debugfs(ctx, img, true, "rm "+path, "write /scratch/empty "+path,
		fmt.Sprintf("sif %s mode 0100%o", path, perm.Perm()), "sif "+path+" uid 0", "sif "+path+" gid 0")
	return err
}
