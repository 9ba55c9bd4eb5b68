// Package mountinfo reads the host's mount table, /proc/self/mountinfo
// (proc(5)): the mount points, filesystem types and sources, with the
// kernel's octal escapes (\040 for a space) undone. It trusts the kernel's
// table and nothing else; it only reads (unmounting is its callers'
// business: image staging, the disk drivers' pool).
package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Point  string // mount point
	FSType string
	Source string // e.g. /dev/loop3
}

// Read parses /proc/self/mountinfo, in the table's order (a later line is
// mounted on top of an earlier one at the same point).
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := ParseLine(sc.Text()); ok {
			out = append(out, m)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	return out, nil
}

// ParseLine parses one mountinfo line (see proc(5)):
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw".
func ParseLine(line string) (Mount, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return Mount{}, false
	}
	pf := strings.Fields(pre)
	sf := strings.Fields(post)
	if len(pf) < 5 || len(sf) < 2 {
		return Mount{}, false
	}
	return Mount{Point: Unescape(pf[4]), FSType: sf[0], Source: Unescape(sf[1])}, true
}

// Under returns the mount points at or below dir (made absolute), deepest
// first: the order to unmount them in.
func Under(dir string) ([]string, error) {
	ms, err := Read()
	if err != nil {
		return nil, err
	}
	d := abs(dir)
	var out []string
	for _, m := range ms {
		if m.Point == d || strings.HasPrefix(m.Point, d+string(filepath.Separator)) {
			out = append(out, m.Point)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// abs is path made absolute and clean, as mount points are written.
func abs(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return filepath.Clean(path)
}

// Unescape undoes mountinfo's octal escapes (\040 for a space and so on);
// a backslash not followed by three octal digits stays as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
