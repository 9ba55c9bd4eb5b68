package blk

import "banger/internal/mountinfo"

// Mount is one line of /proc/self/mountinfo (read by internal/mountinfo).
type Mount = mountinfo.Mount

// MountAt returns the topmost mount whose mount point is path.
func MountAt(path string) (Mount, bool, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return Mount{}, false, err
	}
	p := abs(path)
	var found Mount
	ok := false
	for _, m := range ms {
		if m.Point == p {
			found, ok = m, true // later lines are mounted on top
		}
	}
	return found, ok, nil
}

// MountsUnder returns the mount points at or below dir.
func MountsUnder(dir string) ([]string, error) { return mountinfo.Under(dir) }
