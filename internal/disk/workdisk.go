package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"banger/internal/api"
	"banger/internal/ext4"
	"banger/internal/revert"
)

// CloneAndGrow makes a VM's work disk: it clones the image's work-seed (an
// ext4 image) to dst with clone (Clone when nil: reflink when possible,
// else a sparse copy) and grows the file and its filesystem to size. size
// below the seed's size is Invalid (shrinking is not supported); size equal
// to it only clones. dst must not exist; on any failure dst is removed.
func CloneAndGrow(ctx context.Context, seed, dst string, size int64, clone func(src, dst string) error) error {
	st, err := os.Stat(seed)
	if errors.Is(err, os.ErrNotExist) {
		return api.NotFound("work seed %s does not exist", seed).WithFix("pull or build the image again")
	}
	if err != nil {
		return fmt.Errorf("checking work seed %s: %w", seed, err)
	}
	if size < st.Size() {
		return api.Invalid("work disk size %d bytes is smaller than the image's work seed (%d bytes)",
			size, st.Size()).WithFix("ask for at least " + strconv.FormatInt(st.Size(), 10) + " bytes")
	}
	if clone == nil {
		clone = Clone
	}
	r := revert.New()
	defer r.Fail()
	if _, err := os.Lstat(dst); err == nil {
		return api.AlreadyExists("work disk %s already exists", dst)
	}
	if err := clone(seed, dst); err != nil {
		if !api.IsAlreadyExists(err) {
			os.Remove(dst) // a clone func that left a partial file
		}
		return fmt.Errorf("cloning work seed %s to %s: %w", seed, dst, err)
	}
	r.Add(func() { os.Remove(dst) })
	if size > st.Size() {
		if err := growFresh(ctx, dst, st.Size(), size); err != nil {
			return err
		}
	}
	r.Success()
	return nil
}

// growFresh grows a fresh clone of a seed: resize2fs alone, which accepts a
// clean filesystem that was never mounted after its last check (a seed as
// built) and refuses any other before changing anything; then it falls back
// to growFS's e2fsck + resize2fs. Skipping the needless e2fsck saves an exec
// and a full read of the metadata on every create.
func growFresh(ctx context.Context, path string, old, size int64) error {
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("growing %s to %d bytes: %w", path, size, err)
	}
	if err := ext4.Grow(ctx, path); err == nil {
		return nil
	}
	return growFS(ctx, path, old, size)
}

// Grow grows the ext4 image at path (not in use by a VM) to size: the file,
// then the filesystem. A smaller size is Invalid; the same size does
// nothing.
func Grow(ctx context.Context, path string, size int64) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return api.NotFound("disk %s does not exist", path)
	}
	if err != nil {
		return fmt.Errorf("checking disk %s: %w", path, err)
	}
	if size < st.Size() {
		return api.Invalid("disk %s is %d bytes; shrinking it to %d bytes is not supported",
			path, st.Size(), size).WithFix("ask for a size of at least " + strconv.FormatInt(st.Size(), 10) + " bytes")
	}
	if size == st.Size() {
		return nil
	}
	return growFS(ctx, path, st.Size(), size)
}

// growFS extends the file from old to size bytes, checks the filesystem
// (e2fsck -f -p; exit 0 or 1 are fine, resize2fs insists on a fresh check)
// and grows it with resize2fs. When the check fails the file is truncated
// back; once resize2fs has started the larger file is kept (it is harmless
// and cutting it could cut a half-grown filesystem).
func growFS(ctx context.Context, path string, old, size int64) error {
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("growing %s to %d bytes: %w", path, size, err)
	}
	if err := ext4.Preen(ctx, path); err != nil {
		os.Truncate(path, old)
		return fmt.Errorf("checking filesystem on %s before growing: %w", path, err)
	}
	return ext4.Grow(ctx, path)
}

// GrowFile extends the raw image at path to size bytes (sparse); a size at
// or below the file's does nothing. It does not touch the filesystem on it:
// the raw drivers' Grow.
func GrowFile(path string, size int64) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return api.NotFound("disk %s does not exist", path)
	}
	if err != nil {
		return fmt.Errorf("checking disk %s: %w", path, err)
	}
	if size <= st.Size() {
		return nil
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("growing %s to %d bytes: %w", path, size, err)
	}
	return nil
}
