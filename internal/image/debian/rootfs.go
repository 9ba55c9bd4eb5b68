package debian

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"banger/internal/api"
	"banger/internal/ext4"
	"banger/internal/image"
	"banger/internal/mountinfo"
)

// rootfs moves root's home out of the tree (it becomes the work-seed; /root
// stays as an empty mount point) and makes rootfs.ext4 from the tree with
// mkfs.ext4 -d, without mounting anything.
func (bd *makeRun) rootfs(ctx context.Context) error {
	if mps, err := mountinfo.Under(bd.root); err != nil || len(mps) > 0 {
		return fmt.Errorf("the tree still has mounts (%v, %v): refusing to copy them", mps, err)
	}
	if err := moveContents(filepath.Join(bd.root, "root"), bd.home); err != nil {
		return err
	}
	used, err := diskUsage(bd.root)
	if err != nil {
		return err
	}
	size, err := rootfsSize(used, bd.req.Size)
	if err != nil {
		return err
	}
	bd.rep.Detail(fmt.Sprintf("%d MiB of files in a %d MiB filesystem", used>>20, size>>20))
	return mkfsFromDir(ctx, bd.log, "rootfs", bd.root, filepath.Join(bd.staging, image.RootfsFile), size)
}

// rootfsSize picks the filesystem size for used bytes of files: requested
// when it fits, else used plus headroom (at least image.MinAutoSize).
func rootfsSize(used, requested int64) (int64, error) {
	need := used + used/10 + image.FSOverhead
	if requested > 0 {
		if requested < need {
			return 0, api.Invalid("--size %d MiB is too small: the root filesystem holds %d MiB of files",
				requested>>20, used>>20).WithFix(fmt.Sprintf("--size %dMiB or more, or leave --size out", image.RoundUp(need, 1<<20)>>20))
		}
		return image.RoundUp(requested, 1<<20), nil
	}
	size := used + used*image.HeadroomPct/100 + image.FSOverhead
	return max(image.MinAutoSize, image.RoundUp(size, image.SizeAlignment)), nil
}

// workSeed makes work-seed.ext4 from root's home (dotfiles, .ssh).
func (bd *makeRun) workSeed(ctx context.Context) error {
	if err := os.Chmod(bd.home, 0o700); err != nil {
		return err
	}
	return mkfsFromDir(ctx, bd.log, "work", bd.home, filepath.Join(bd.staging, image.WorkSeedFile), image.WorkSeedSize)
}

// mkfsFromDir creates a sparse file of size bytes holding an ext4
// filesystem labelled label with dir's contents (dir "" = empty).
func mkfsFromDir(ctx context.Context, log *image.BuildLog, label, dir, out string, size int64) error {
	log.Line(fmt.Sprintf("+ mkfs.ext4 %s (%s, %d MiB)", out, label, size>>20))
	return ext4.Make(ctx, out, size, label, dir)
}

// moveContents renames every entry of src into dst (created 0700), leaving
// src empty.
func moveContents(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	for _, e := range ents {
		if err := os.Rename(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return fmt.Errorf("moving /root/%s to the work seed: %w", e.Name(), err)
		}
	}
	return nil
}

// diskUsage sums the allocated size of everything under dir, plus an inode's
// worth per entry.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += 256
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measuring %s: %w", dir, err)
	}
	return total, nil
}

// outputOf runs a command and returns its stdout.
func outputOf(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = baseEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}
