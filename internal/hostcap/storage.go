package hostcap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// FSTypeName names a statfs magic number ("ext4", "xfs", …).
func FSTypeName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case 0x2fc12fc1:
		return "zfs"
	case 0xca451a4e:
		return "bcachefs"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	}
	return fmt.Sprintf("unknown (0x%x)", magic)
}

// nearestExisting returns path or its nearest existing ancestor.
func nearestExisting(path string) (string, error) {
	p := filepath.Clean(path)
	for {
		st, err := os.Stat(p)
		if err == nil {
			if !st.IsDir() {
				return p, fmt.Errorf("%s is not a directory", p)
			}
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return p, err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p, err
		}
		p = parent
	}
}

// probeStateDir checks the state dir (or the nearest existing parent when
// it does not exist yet): writable, filesystem type, FICLONE and free space.
// The only side effects are two temporary files it removes.
func probeStateDir(dir string) (StateDirCap, Cap, FreeDiskCap) {
	sd := StateDirCap{Path: dir}
	if dir == "" {
		sd.Detail, sd.Fix = "no state dir configured", "set state_dir in the config"
		return sd, Cap{Detail: "no state dir"}, FreeDiskCap{Cap: Cap{Detail: "no state dir"}}
	}
	probed, err := nearestExisting(dir)
	sd.Probed = probed
	sd.Exists = err == nil && probed == filepath.Clean(dir)
	if err != nil {
		sd.Detail = fmt.Sprintf("state dir %s: %v", dir, err)
		sd.Fix = "set state_dir in the config to a directory root can write"
		return sd, Cap{Detail: sd.Detail}, FreeDiskCap{Cap: Cap{Detail: sd.Detail}}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(probed, &st); err == nil {
		sd.FSType = FSTypeName(int64(st.Type))
	}
	where := dir
	if !sd.Exists {
		where = fmt.Sprintf("%s (not created yet; probed %s)", dir, probed)
	}
	if err := writable(probed); err != nil {
		sd.Detail = fmt.Sprintf("state dir %s is not writable: %v", where, err)
		sd.Fix = "run bangerd as root, or set state_dir in the config to a writable directory"
	} else {
		sd.OK = true
		sd.Detail = fmt.Sprintf("%s is writable (%s)", where, sd.FSType)
	}
	return sd, probeReflink(probed, sd.FSType), freeDisk(probed, &st)
}

func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".banger-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// probeReflink clones one temporary file into another with FICLONE.
func probeReflink(dir, fsType string) Cap {
	err := tryClone(dir)
	if err == nil {
		return Cap{OK: true, Detail: fmt.Sprintf("%s (%s) supports reflink clones", dir, fsType)}
	}
	c := Cap{Detail: fmt.Sprintf("%s (%s) cannot reflink: %v", dir, fsType, err)}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EXDEV) {
		c.Detail = fmt.Sprintf("%s is %s (no reflink)", dir, fsType)
	}
	c.Fix = "put state_dir on XFS (mkfs.xfs -m reflink=1) or btrfs, or let banger use its loop-backed XFS pool (storage_pool = \"auto\")"
	return c
}

func tryClone(dir string) (err error) {
	src, err := os.CreateTemp(dir, ".banger-reflink-src-*")
	if err != nil {
		return err
	}
	defer func() { src.Close(); os.Remove(src.Name()) }()
	dst, err := os.CreateTemp(dir, ".banger-reflink-dst-*")
	if err != nil {
		return err
	}
	defer func() { dst.Close(); os.Remove(dst.Name()) }()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		return err
	}
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		return fmt.Errorf("FICLONE: %w", err)
	}
	return nil
}

func freeDisk(dir string, st *unix.Statfs_t) FreeDiskCap {
	if st.Bsize == 0 {
		if err := unix.Statfs(dir, st); err != nil {
			return FreeDiskCap{Cap: Cap{Detail: fmt.Sprintf("statfs %s: %v", dir, err)}}
		}
	}
	free := st.Bavail * uint64(st.Bsize)
	return judgeFree(dir, free)
}

// judgeFree applies the free-space thresholds.
func judgeFree(dir string, free uint64) FreeDiskCap {
	f := FreeDiskCap{Bytes: free}
	f.Detail = fmt.Sprintf("%s free on %s", HumanBytes(free), dir)
	f.OK = free >= FailFreeBytes
	f.Low = free < WarnFreeBytes
	switch {
	case !f.OK:
		f.Detail += fmt.Sprintf(" (under %s: VMs and images will not fit)", HumanBytes(FailFreeBytes))
		f.Fix = "free space on that filesystem (banger image rm, banger vm rm) or move state_dir to a larger one"
	case f.Low:
		f.Detail += fmt.Sprintf(" (under %s)", HumanBytes(WarnFreeBytes))
		f.Fix = "free space on that filesystem or move state_dir to a larger one"
	}
	return f
}

// HumanBytes formats a byte count with binary units ("12.3 GiB").
func HumanBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
