// Package pool keeps banger's loop-backed XFS pool: a sparse image file,
// formatted once with reflink=1 and loop-mounted at a directory, so that
// the reflink disk driver works on hosts whose state directory is on a
// filesystem that cannot reflink (ext4), as Incus does with loop-backed
// storage pools.
//
// Lifecycle: Ensure creates (first time only), formats and mounts the
// pool; it is idempotent. Unmount releases the mount and the loop device
// but keeps the image (and every disk inside it). Destroy also deletes the
// image.
package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/disk/internal/blk"
	"banger/internal/revert"
)

// Pool is one loop-backed XFS filesystem.
type Pool struct {
	Image      string // the sparse image file
	MountPoint string // where the pool is mounted
	Size       int64  // image size in bytes when it is created
}

// MinSize is the smallest pool mkfs.xfs accepts.
const MinSize = 300 << 20

// Ensure makes the pool usable: when MountPoint is already a mount of
// Image it does nothing; otherwise it creates and formats the image if it
// is missing (mkfs.xfs -m reflink=1, only for a new image) and mounts it
// through a loop device. Every step is undone when a later one fails: a
// failed mkfs leaves no file, a failed mount no loop device.
func (p *Pool) Ensure(ctx context.Context) error {
	if err := p.check(); err != nil {
		return err
	}
	mounted, err := p.Mounted()
	if err != nil || mounted {
		return err
	}
	if m, ok, err := blk.MountAt(p.MountPoint); err != nil {
		return err
	} else if ok {
		return api.FailedPrecondition("pool mount point %s already has %s (%s) mounted", p.MountPoint, m.Source, m.FSType).
			WithFix("umount " + p.MountPoint)
	}
	r := revert.New()
	defer r.Fail()
	if err := p.createImage(ctx, r); err != nil {
		return err
	}
	if _, err := os.Stat(p.MountPoint); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(p.MountPoint, 0o700); err != nil {
			return fmt.Errorf("creating pool mount point: %w", err)
		}
		r.Add(func() { os.Remove(p.MountPoint) })
	}
	// mount -o loop sets up an autoclear loop device: the kernel frees it
	// when the pool is unmounted, also when a mount namespace holding the
	// mount goes away, so the pool can never leave a loop device behind.
	if _, err := blk.Run(ctx, "mount", "-t", "xfs", "-o", "loop", p.Image, p.MountPoint); err != nil {
		return fmt.Errorf("mounting pool %s at %s: %w", p.Image, p.MountPoint, err)
	}
	// The filesystem's root (which now covers the mount point) is made 0755
	// by mkfs; VM disks live under it, so only root may enter.
	if err := os.Chmod(p.MountPoint, 0o700); err != nil {
		return fmt.Errorf("restricting pool %s: %w", p.MountPoint, err)
	}
	r.Success()
	return nil
}

func (p *Pool) check() error {
	if p.Image == "" || p.MountPoint == "" {
		return api.Invalid("pool needs an image path and a mount point")
	}
	if !filepath.IsAbs(p.Image) || !filepath.IsAbs(p.MountPoint) {
		return api.Invalid("pool paths must be absolute (image %q, mount point %q)", p.Image, p.MountPoint)
	}
	return nil
}

// createImage creates and formats the image when it does not exist yet,
// registering its removal with r.
func (p *Pool) createImage(ctx context.Context, r *revert.Reverter) error {
	if _, err := os.Stat(p.Image); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("checking pool image %s: %w", p.Image, err)
	}
	if p.Size < MinSize {
		return api.Invalid("pool size %d bytes is below the XFS minimum of %d bytes", p.Size, int64(MinSize))
	}
	f, err := os.OpenFile(p.Image, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		return api.NotFound("pool directory %s does not exist", filepath.Dir(p.Image))
	}
	if err != nil {
		return fmt.Errorf("creating pool image %s: %w", p.Image, err)
	}
	r.Add(func() { os.Remove(p.Image) })
	terr := f.Truncate(p.Size)
	if cerr := f.Close(); terr == nil {
		terr = cerr
	}
	if terr != nil {
		return fmt.Errorf("sizing pool image %s: %w", p.Image, terr)
	}
	if _, err := blk.Run(ctx, "mkfs.xfs", "-q", "-m", "reflink=1", p.Image); err != nil {
		return fmt.Errorf("formatting pool image %s: %w", p.Image, err)
	}
	return nil
}

// Mounted reports whether MountPoint is a mount of this pool's image.
func (p *Pool) Mounted() (bool, error) {
	m, ok, err := blk.MountAt(p.MountPoint)
	if err != nil || !ok {
		return false, err
	}
	if !strings.HasPrefix(m.Source, "/dev/loop") {
		return false, nil
	}
	back, err := blk.LoopBacking(m.Source)
	if err != nil {
		return false, err
	}
	return back != "" && blk.SameFile(back, p.Image), nil
}

// Unmount unmounts the pool and detaches its loop devices, keeping the
// image. An unmounted pool is fine.
func (p *Pool) Unmount(ctx context.Context) error {
	if err := p.check(); err != nil {
		return err
	}
	mounted, err := p.Mounted()
	if err != nil {
		return err
	}
	if mounted {
		if _, err := blk.Run(ctx, "umount", p.MountPoint); err != nil {
			return fmt.Errorf("unmounting pool at %s: %w", p.MountPoint, err)
		}
	}
	loops, err := blk.LoopsFor(p.Image)
	if err != nil {
		return err
	}
	for _, l := range loops {
		if err := blk.LoopDetach(ctx, l, p.Image); err != nil {
			return fmt.Errorf("releasing pool %s: %w", p.Image, err)
		}
	}
	return nil
}

// Destroy unmounts the pool and deletes its image (and so every disk in it).
func (p *Pool) Destroy(ctx context.Context) error {
	if err := p.Unmount(ctx); err != nil {
		return err
	}
	if err := os.Remove(p.Image); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deleting pool image %s: %w", p.Image, err)
	}
	return nil
}
