package blk

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Point  string // mount point
	FSType string
	Source string // e.g. /dev/loop3
}

// Mounts parses /proc/self/mountinfo.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := ParseMountInfoLine(sc.Text()); ok {
			out = append(out, m)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	return out, nil
}

// ParseMountInfoLine parses one mountinfo line (see proc(5)):
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw".
func ParseMountInfoLine(line string) (Mount, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return Mount{}, false
	}
	pf := strings.Fields(pre)
	sf := strings.Fields(post)
	if len(pf) < 5 || len(sf) < 2 {
		return Mount{}, false
	}
	return Mount{Point: unescape(pf[4]), FSType: sf[0], Source: unescape(sf[1])}, true
}

// MountAt returns the topmost mount whose mount point is path.
func MountAt(path string) (Mount, bool, error) {
	ms, err := Mounts()
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
func MountsUnder(dir string) ([]string, error) {
	ms, err := Mounts()
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
	return out, nil
}

// unescape undoes mountinfo's octal escapes (\040 for space and so on).
func unescape(s string) string {
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
