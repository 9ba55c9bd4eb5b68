package ext4

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// debugfs runs debugfs commands on an ext4 image (write opens it
// read-write) and returns the output. Nothing is mounted.
func debugfs(ctx context.Context, path string, write bool, cmds ...string) (string, error) {
	f, err := os.CreateTemp("", "banger-debugfs-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(strings.Join(cmds, "\n") + "\n"); err != nil {
		f.Close()
		return "", err
	}
	f.Close()
	args := []string{"-f", f.Name(), path}
	if write {
		args = append([]string{"-w"}, args...)
	}
	out, err := run(ctx, "debugfs", args...)
	if err != nil {
		return string(out), fmt.Errorf("debugfs on %s: %w", filepath.Base(path), err)
	}
	return string(out), nil
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
// image, host destination}, permissions kept.
func CopyOut(ctx context.Context, img string, pairs ...[2]string) error {
	var cmds []string
	for _, p := range pairs {
		cmds = append(cmds, "dump -p "+p[0]+" "+p[1])
	}
	_, err := debugfs(ctx, img, false, cmds...)
	return err
}

// CopyTreeOut copies directory dir of an ext4 image, recursively, into
// hostDir (as hostDir/<base of dir>). It reports false when dir is not
// there or could not be read.
func CopyTreeOut(ctx context.Context, img, dir, hostDir string) bool {
	out, err := run(ctx, "debugfs", "-R", "rdump "+dir+" "+hostDir, img)
	if err != nil || bytes.Contains(out, []byte("File not found")) {
		return false
	}
	fi, err := os.Stat(filepath.Join(hostDir, filepath.Base(dir)))
	return err == nil && fi.IsDir()
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
func PutEmpty(ctx context.Context, img, path string, perm os.FileMode) error {
	empty, err := os.CreateTemp("", "banger-empty-")
	if err != nil {
		return err
	}
	empty.Close()
	defer os.Remove(empty.Name())
	_, err = debugfs(ctx, img, true, "rm "+path, "write "+empty.Name()+" "+path,
		fmt.Sprintf("sif %s mode 0100%o", path, perm.Perm()), "sif "+path+" uid 0", "sif "+path+" gid 0")
	return err
}
